/* Names shared between the files of libdash and with dashctl and the
 * client's tests; not installed. */
#ifndef DASH_CLIENT_INTERNAL_H
#define DASH_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dash/dash.h"
#include "wire.h"

/* How long a request waits for its reply before the connection is
 * declared dead (the waits of dash_sync() have their own timeout). */
#define DASH__REPLY_TIMEOUT_MS 30000

/* A request waiting for its reply; lives on the requester's stack. */
struct dash__waiter {
  uint64_t request_id;
  Dashpb__Envelope *reply; /* set by whoever reads it off the socket */
  struct dash__waiter *next;
};

struct dash_client {
  /* Guards every field below and of the client's stacks. */
  pthread_mutex_t mu;
  /* Signalled whenever frames were read or the connection died. */
  pthread_cond_t cv;
  int sock;
  /* Non-zero while one thread polls the socket with mu released: only
   * that thread reads, and it hands frames to the others. */
  int reading;
  /* Once set, every call fails with DASH_E_DISCONNECTED. */
  int dead;
  /* The daemon's process (SO_PEERCRED), 0 when unknown. */
  pid_t daemon_pid;
  char dead_why[160];
  uint64_t next_request_id;
  int reply_timeout_ms;
  dash__wire_reader rd;
  struct dash__waiter *waiters;
  struct dash_stack *stacks;
  char *socket_path;
  /* From HelloReply. */
  char *daemon_version;
  char *backend;
  char *device;
};

/* A CUDA stack's side of the hand-over on the trainer's GPU (DESIGN.md,
 * "On GPU the hand-over is stream-ordered"). */
struct dash__stack_cuda {
  const struct dash__cuda_ipc *ipc;
  int device;
  float *stats; /* the trainer's buffers */
  float *results;
  void *stream; /* of the last dash_step(): dash_sync() orders on it */
  void *step_event, *release_event;       /* ours, recorded by us */
  void *snapshot_event, *result_event[2]; /* the daemon's, opened */
  /* Pinned SHM, for a daemon that computes on the CPU and so cannot open
   * GPU memory: the stack's shared memfd mappings, page-locked, stand
   * between the trainer's buffers and the daemon. dash_step() copies the
   * statistics into them and waits for step_event after the copy;
   * dash_sync() copies an adopted slot out, copy_event after it. Neither
   * release_event nor the daemon's events exist then. */
  int pinned;
  void *locked[2]; /* the mappings page-locked so far */
  void *copy_event;
  /* A call on the stack is under way (stack.c, stack_acquire). */
  int busy;
};

struct dash_stack {
  dash_client *c;
  /* Non-NULL for a CUDA stack: stats and results are NULL for a CUDA_IPC
   * one, and a pinned one's shared mappings. */
  struct dash__stack_cuda *cuda;
  struct dash_stack *next; /* in c->stacks */
  uint64_t id;
  size_t n, b;
  size_t stats_bytes, result_bytes;
  float *stats;   /* mapping of the statistics memfd */
  float *results; /* mapping of the two result slots */
  const float *held;
  dash_refresh_info held_info; /* in_flight unused */
  /* A refresh asked for and not yet answered by a RefreshDone with a
   * step at least want_step. */
  int in_flight;
  uint64_t want_step;
  /* The newest successful RefreshDone seen (0: none), and the newest
   * one a Sync was sent for. */
  uint64_t pushed_generation;
  uint64_t synced_generation;
  /* A failed computation not yet reported by dash_sync(). */
  int failed_status;
  uint64_t failed_step;
  char failed_message[200];
};

/* Sends req (version and request_id are set here) with nfds fds and
 * waits at most c->reply_timeout_ms for its reply. Takes c->mu.
 * 0 with *reply (free it with dashpb__envelope__free_unpacked(*reply,
 * NULL)) when the daemon answered with status 0; the daemon's status
 * (< 0, with its message in dash_last_error()) when it refused;
 * DASH_E_DISCONNECTED; DASH_E_TIMEOUT; DASH_E_PROTOCOL. */
int dash__client_request(dash_client *c, Dashpb__Envelope *req, const int *fds,
                         int nfds, Dashpb__Envelope **reply);

/* The same with c->mu held: the stacks' calls use it. */
int dash__client_request_locked(dash_client *c, Dashpb__Envelope *req,
                                const int *fds, int nfds,
                                Dashpb__Envelope **reply);

/* With c->mu held: waits until done(arg) is true, the connection dies
 * (DASH_E_DISCONNECTED) or timeout_ms (-1: none) passes
 * (DASH_E_TIMEOUT), reading and dispatching frames meanwhile. mu is
 * released while the thread sleeps. */
int dash__client_wait(dash_client *c, int (*done)(void *arg), void *arg,
                      int timeout_ms);

/* With c->mu held: reads and dispatches what the socket holds now,
 * without blocking. 0 or DASH_E_DISCONNECTED. */
int dash__client_drain(dash_client *c);

/* With c->mu held: DASH_E_DISCONNECTED with the reason when the
 * connection is dead, else 0. */
int dash__client_check_alive(dash_client *c);

/* With c->mu held: records a RefreshDone push for the stack it names
 * (stack.c). Pushes for stacks this client no longer has are dropped. */
void dash__stack_on_refresh_done(dash_client *c, const Dashpb__RefreshDone *d);

/* With c->mu held: unregisters (when still connected), unmaps and frees
 * s, which is unlinked from its client. 0, or the daemon's error other
 * than a lost connection. */
int dash__stack_destroy_locked(dash_stack *s);

#endif
