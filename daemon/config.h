/* The daemon's configuration: a file of "key = value" lines, one table of
 * keys in config.c. Internal to dashd. */
#ifndef DASHD_CONFIG_H
#define DASHD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "dash/roots.h"

/* Most entries of allowed_uids and of allowed_gids. */
#define DASHD_MAX_IDS 64

struct dashd_config {
  char socket_path[108]; /* "" = the default, resolved by the caller */
  dash_backend backend;  /* "auto" | "cpu" | "cuda"; default auto */
  /* The GPU of backend cuda: "" (CUDA's first visible device), an
   * ordinal, or GPU-UUID as nvidia-smi prints it. */
  char device[64];
  /* The CUDA streams' priority on the GPU: 0 "low" (default) or 1
   * "high". Priorities order the streams of one CUDA context (or of the
   * clients of one MPS server); "low" is CUDA's lowest, which is also
   * what streams made without a priority get, so a trainer's kernels go
   * first where it makes its streams at a higher priority. Processes
   * without MPS take turns on the GPU whatever their priorities. */
  int stream_priority;
  /* "" (off, the default) or HOST:PORT of the HTTP /metrics endpoint. */
  char metrics_listen[64];
  int threads;        /* 0 = every core; 0..4096 */
  int log_level;      /* enum dashd_log_level; default info */
  int allow_all_uids; /* allowed_uids = "*" (the default) */
  unsigned allowed_uids[DASHD_MAX_IDS];
  int n_allowed_uids;
  /* A peer is served when its uid is allowed OR its primary gid is in
   * this list. Default empty. */
  unsigned allowed_gids[DASHD_MAX_IDS];
  int n_allowed_gids;
  unsigned max_clients;           /* default 64, 1..65536 */
  unsigned max_stacks_per_client; /* default 64, 1..65536 */
  uint64_t max_bytes_per_client;  /* default 16 GiB, 1 MiB..1 PiB */
  unsigned max_frame;             /* default 1 MiB, 4096..16 MiB */
};

/* Parses "HOST:PORT" or "[V6]:PORT" (metrics_listen); 0 or
 * DASH_E_INVALID. */
int dashd__config_parse_addr(const char *text, struct sockaddr_storage *out);

/* Every key at its default. */
void dashd__config_defaults(struct dashd_config *c);

/* Applies one key = value; value is taken as is (no trimming, no quotes).
 * Returns 0, or DASH_E_INVALID with *c untouched and err (when not NULL)
 * filled, e.g. "key 'max_clients': '0' is out of range [1, 65536]" or
 * "unknown key 'foo'".
 *
 * Numbers are decimal, consumed whole, checked against the key's range
 * (a negative value is out of range, never wrapped). max_bytes_per_client
 * and max_frame take one binary suffix K, M, G, T or P ("16G"). socket is
 * "" or an absolute path of at most 107 bytes. allowed_uids is "*" or a
 * comma list of uids and user names; allowed_gids a comma list of gids and
 * group names; "" is the empty list; an all-digit entry is a number. */
int dashd__config_set(struct dashd_config *c, const char *key,
                      const char *value, char *err, size_t err_size);

/* Loads a file of "key = value" lines: '#' starts a comment line; blank
 * lines are skipped; whitespace around key and value is dropped; a value
 * may be wrapped in double quotes (kept verbatim inside, no escapes). A key
 * given twice takes its last value. Lines are at most 1024 bytes.
 *
 * The lines are applied to a copy of *c, which is committed only when the
 * whole file is valid. Returns 0; DASH_E_IO when the file cannot be read
 * ("PATH: No such file or directory"); DASH_E_INVALID naming file, line and
 * key ("/etc/dashd/dashd.conf:12: key 'threads': '-3' is out of range
 * [0, 4096]"). On failure *c is untouched. */
int dashd__config_load(struct dashd_config *c, const char *path, char *err,
                       size_t err_size);

/* 1 if SIGHUP may change key at run time (log_level, allowed_uids,
 * allowed_gids, max_clients, max_stacks_per_client, max_bytes_per_client);
 * 0 for the others and for unknown keys. */
int dashd__config_key_reloadable(const char *key);

/* Writes every key with its current value, one "key = value" line each,
 * in a form dashd__config_load() reads back. */
void dashd__config_dump(const struct dashd_config *c, FILE *f);

#endif
