/* Unit tests of the daemon's configuration (daemon/config.c) and log
 * (daemon/log.c): defaults, every key, every kind of bad line, and the
 * format of log lines captured from stderr. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dash/status.h"
#include "log.h"

#define TEST_TIMEOUT_S 30
#define GIB ((uint64_t)1 << 30)
#define MIB ((uint64_t)1 << 20)

/* ---- helpers ------------------------------------------------------------ */

/* Writes len bytes to a new temporary file; its path goes to path. */
static void write_file_n(char *path, size_t size, const char *text,
                         size_t len) {
  snprintf(path, size, "/tmp/test_config_XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
  ck_assert_int_eq(close(fd), 0);
}

static void write_file(char *path, size_t size, const char *text) {
  write_file_n(path, size, text, strlen(text));
}

/* A config that differs from the defaults in every key, so that a failed
 * load that touched anything shows. */
static void changed_config(struct dashd_config *c) {
  char err[256];
  static const char *const kv[][2] = {
      {"socket", "/run/test/x.sock"},
      {"backend", "cpu"},
      {"device", "GPU-00112233"},
      {"stream_priority", "high"},
      {"metrics_listen", "127.0.0.1:9"},
      {"threads", "3"},
      {"log_level", "debug"},
      {"allowed_uids", "7, 8"},
      {"allowed_gids", "9"},
      {"max_clients", "5"},
      {"max_stacks_per_client", "6"},
      {"max_bytes_per_client", "3G"},
      {"max_frame", "64K"},
  };
  memset(c, 0xa5, sizeof(*c));
  dashd__config_defaults(c);
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(
        dashd__config_set(c, kv[i][0], kv[i][1], err, sizeof(err)) == 0,
        "%s: %s", kv[i][0], err);
}

static void assert_configs_equal(const struct dashd_config *a,
                                 const struct dashd_config *b) {
  ck_assert_str_eq(a->socket_path, b->socket_path);
  ck_assert_int_eq(a->backend, b->backend);
  ck_assert_str_eq(a->device, b->device);
  ck_assert_int_eq(a->stream_priority, b->stream_priority);
  ck_assert_str_eq(a->metrics_listen, b->metrics_listen);
  ck_assert_int_eq(a->threads, b->threads);
  ck_assert_int_eq(a->log_level, b->log_level);
  ck_assert_int_eq(a->allow_all_uids, b->allow_all_uids);
  ck_assert_int_eq(a->n_allowed_uids, b->n_allowed_uids);
  for (int i = 0; i < a->n_allowed_uids; i++)
    ck_assert_uint_eq(a->allowed_uids[i], b->allowed_uids[i]);
  ck_assert_int_eq(a->n_allowed_gids, b->n_allowed_gids);
  for (int i = 0; i < a->n_allowed_gids; i++)
    ck_assert_uint_eq(a->allowed_gids[i], b->allowed_gids[i]);
  ck_assert_uint_eq(a->max_clients, b->max_clients);
  ck_assert_uint_eq(a->max_stacks_per_client, b->max_stacks_per_client);
  ck_assert_uint_eq(a->max_bytes_per_client, b->max_bytes_per_client);
  ck_assert_uint_eq(a->max_frame, b->max_frame);
}

/* Redirects stderr into a pipe until capture_end(), which returns what
 * was written (NUL-terminated, at most size - 1 bytes). */
struct capture {
  int saved;
  int pipe[2];
};

static void capture_begin(struct capture *cap) {
  ck_assert_int_eq(pipe(cap->pipe), 0);
  cap->saved = dup(STDERR_FILENO);
  ck_assert_int_ge(cap->saved, 0);
  ck_assert_int_ge(dup2(cap->pipe[1], STDERR_FILENO), 0);
  ck_assert_int_eq(close(cap->pipe[1]), 0);
}

static size_t capture_end(struct capture *cap, char *buf, size_t size) {
  size_t n = 0;
  ssize_t r;
  /* Putting stderr back closes the pipe's last write end: EOF below. */
  ck_assert_int_ge(dup2(cap->saved, STDERR_FILENO), 0);
  ck_assert_int_eq(close(cap->saved), 0);
  while (n + 1 < size && (r = read(cap->pipe[0], buf + n, size - 1 - n)) > 0)
    n += (size_t)r;
  buf[n] = '\0';
  ck_assert_int_eq(close(cap->pipe[0]), 0);
  return n;
}

static int matches(const char *pattern, const char *text) {
  regex_t re;
  ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
  int ok = regexec(&re, text, 0, NULL, 0) == 0;
  regfree(&re);
  return ok;
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s != '\0'; s++)
    n += *s == '\n';
  return n;
}

/* ---- config: core ------------------------------------------------------- */

START_TEST(test_config_defaults_match_the_spec) {
  struct dashd_config c;
  memset(&c, 0xa5, sizeof(c));
  dashd__config_defaults(&c);
  ck_assert_str_eq(c.socket_path, "");
  ck_assert_int_eq(c.backend, DASH_BACKEND_AUTO);
  ck_assert_int_eq(c.threads, 0);
  ck_assert_int_eq(c.log_level, DASHD_LOG_INFO);
  ck_assert_int_eq(c.allow_all_uids, 1);
  ck_assert_int_eq(c.n_allowed_uids, 0);
  ck_assert_int_eq(c.n_allowed_gids, 0);
  ck_assert_uint_eq(c.max_clients, 64);
  ck_assert_uint_eq(c.max_stacks_per_client, 64);
  ck_assert_uint_eq(c.max_bytes_per_client, 16 * GIB);
  ck_assert_uint_eq(c.max_frame, 1u << 20);
}
END_TEST

START_TEST(test_config_set_accepts_every_key) {
  struct dashd_config c;
  char err[256] = "";
  dashd__config_defaults(&c);

#define SET_OK(k, v)                                                \
  ck_assert_msg(dashd__config_set(&c, k, v, err, sizeof(err)) == 0, \
                "%s = %s: %s", k, v, err)
  SET_OK("socket", "/run/dash/dashd.sock");
  ck_assert_str_eq(c.socket_path, "/run/dash/dashd.sock");
  SET_OK("socket", "");
  ck_assert_str_eq(c.socket_path, "");
  SET_OK("backend", "cuda");
  ck_assert_int_eq(c.backend, DASH_BACKEND_CUDA);
  SET_OK("backend", "cpu");
  ck_assert_int_eq(c.backend, DASH_BACKEND_CPU);
  SET_OK("backend", "auto");
  ck_assert_int_eq(c.backend, DASH_BACKEND_AUTO);
  SET_OK("device", "1");
  ck_assert_str_eq(c.device, "1");
  SET_OK("device", "GPU-5e3c8a1b-0f2d-4c1e-9a7b-1234567890ab");
  ck_assert_str_eq(c.device, "GPU-5e3c8a1b-0f2d-4c1e-9a7b-1234567890ab");
  SET_OK("device", "GPU-5E3C8A1B");
  SET_OK("device", "");
  ck_assert_str_eq(c.device, "");
  SET_OK("stream_priority", "high");
  ck_assert_int_eq(c.stream_priority, 1);
  SET_OK("stream_priority", "low");
  ck_assert_int_eq(c.stream_priority, 0);
  SET_OK("metrics_listen", "127.0.0.1:9464");
  ck_assert_str_eq(c.metrics_listen, "127.0.0.1:9464");
  SET_OK("metrics_listen", "[::1]:0");
  SET_OK("metrics_listen", "");
  SET_OK("threads", "4096");
  ck_assert_int_eq(c.threads, 4096);
  SET_OK("threads", "0");
  ck_assert_int_eq(c.threads, 0);
  SET_OK("log_level", "warning");
  ck_assert_int_eq(c.log_level, DASHD_LOG_WARN);
  SET_OK("log_level", "debug");
  ck_assert_int_eq(c.log_level, DASHD_LOG_DEBUG);
  SET_OK("allowed_uids", "1000,1001, 1002 ,1000");
  ck_assert_int_eq(c.allow_all_uids, 0);
  ck_assert_int_eq(c.n_allowed_uids, 3); /* the repeated 1000 is dropped */
  ck_assert_uint_eq(c.allowed_uids[0], 1000);
  ck_assert_uint_eq(c.allowed_uids[2], 1002);
  SET_OK("allowed_uids", "root");
  ck_assert_int_eq(c.n_allowed_uids, 1);
  ck_assert_uint_eq(c.allowed_uids[0], 0);
  SET_OK("allowed_uids", "4294967294");
  ck_assert_uint_eq(c.allowed_uids[0], 4294967294u);
  SET_OK("allowed_uids", "");
  ck_assert_int_eq(c.allow_all_uids, 0);
  ck_assert_int_eq(c.n_allowed_uids, 0);
  SET_OK("allowed_uids", "*");
  ck_assert_int_eq(c.allow_all_uids, 1);
  ck_assert_int_eq(c.n_allowed_uids, 0);
  SET_OK("allowed_gids", "root, 100");
  ck_assert_int_eq(c.n_allowed_gids, 2);
  ck_assert_uint_eq(c.allowed_gids[0], 0);
  ck_assert_uint_eq(c.allowed_gids[1], 100);
  SET_OK("allowed_gids", "");
  ck_assert_int_eq(c.n_allowed_gids, 0);
  SET_OK("max_clients", "1");
  ck_assert_uint_eq(c.max_clients, 1);
  SET_OK("max_clients", "65536");
  ck_assert_uint_eq(c.max_clients, 65536);
  SET_OK("max_stacks_per_client", "1000");
  ck_assert_uint_eq(c.max_stacks_per_client, 1000);
  SET_OK("max_bytes_per_client", "1048576");
  ck_assert_uint_eq(c.max_bytes_per_client, MIB);
  SET_OK("max_bytes_per_client", "1024K");
  ck_assert_uint_eq(c.max_bytes_per_client, MIB);
  SET_OK("max_bytes_per_client", "16g");
  ck_assert_uint_eq(c.max_bytes_per_client, 16 * GIB);
  SET_OK("max_bytes_per_client", "2T");
  ck_assert_uint_eq(c.max_bytes_per_client, (uint64_t)2 << 40);
  SET_OK("max_bytes_per_client", "1P");
  ck_assert_uint_eq(c.max_bytes_per_client, (uint64_t)1 << 50);
  SET_OK("max_frame", "4096");
  ck_assert_uint_eq(c.max_frame, 4096);
  SET_OK("max_frame", "16M");
  ck_assert_uint_eq(c.max_frame, 16u << 20);
#undef SET_OK
}
END_TEST

START_TEST(test_config_load_accepts_comments_blanks_and_quotes) {
  char path[64], err[512] = "";
  struct dashd_config c;
  const char *text =
      "# dashd.conf\n"
      "\n"
      "   # an indented comment\n"
      "socket = \"/run/dash/a b#c.sock\"\n"
      "\tbackend=cpu   \n"
      "threads =8\r\n"
      "log_level = \"warn\"\n"
      "allowed_uids = 0, 1000\n"
      "allowed_gids = \"\"\n"
      "max_clients = 2\n"
      "max_clients = 3\n" /* the last one wins */
      "max_stacks_per_client = 10\n"
      "max_bytes_per_client = 2G\n"
      "   \t  \n"
      "max_frame = 256K"; /* no final newline */
  write_file(path, sizeof(path), text);
  dashd__config_defaults(&c);
  ck_assert_msg(dashd__config_load(&c, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_str_eq(c.socket_path, "/run/dash/a b#c.sock");
  ck_assert_int_eq(c.backend, DASH_BACKEND_CPU);
  ck_assert_int_eq(c.threads, 8);
  ck_assert_int_eq(c.log_level, DASHD_LOG_WARN);
  ck_assert_int_eq(c.allow_all_uids, 0);
  ck_assert_int_eq(c.n_allowed_uids, 2);
  ck_assert_uint_eq(c.allowed_uids[1], 1000);
  ck_assert_int_eq(c.n_allowed_gids, 0);
  ck_assert_uint_eq(c.max_clients, 3);
  ck_assert_uint_eq(c.max_stacks_per_client, 10);
  ck_assert_uint_eq(c.max_bytes_per_client, 2 * GIB);
  ck_assert_uint_eq(c.max_frame, 256u << 10);
  unlink(path);
}
END_TEST

START_TEST(test_config_load_keeps_keys_the_file_does_not_name) {
  char path[64], err[512] = "";
  struct dashd_config c, want;
  changed_config(&c);
  want = c;
  write_file(path, sizeof(path), "# only one key\nthreads = 12\n");
  ck_assert_int_eq(dashd__config_load(&c, path, err, sizeof(err)), 0);
  want.threads = 12;
  assert_configs_equal(&c, &want);

  /* An empty file changes nothing. */
  unlink(path);
  write_file(path, sizeof(path), "");
  ck_assert_int_eq(dashd__config_load(&c, path, err, sizeof(err)), 0);
  assert_configs_equal(&c, &want);
  unlink(path);
}
END_TEST

START_TEST(test_config_dump_reads_back) {
  char path[64], err[512] = "";
  struct dashd_config a, b;
  char *text = NULL;
  size_t len = 0;

  for (int round = 0; round < 2; round++) {
    if (round == 0)
      dashd__config_defaults(&a);
    else
      changed_config(&a);
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    dashd__config_dump(&a, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(count_lines(text), 13); /* one line per key */
    if (round == 0) {
      ck_assert_ptr_nonnull(strstr(text, "socket = \"\"\n"));
      ck_assert_ptr_nonnull(strstr(text, "allowed_uids = \"*\"\n"));
      ck_assert_ptr_nonnull(strstr(text, "max_bytes_per_client = 16G\n"));
      ck_assert_ptr_nonnull(strstr(text, "max_frame = 1M\n"));
      ck_assert_ptr_nonnull(strstr(text, "log_level = info\n"));
    } else {
      ck_assert_ptr_nonnull(strstr(text, "allowed_uids = \"7,8\"\n"));
    }
    write_file(path, sizeof(path), text);
    /* Read into the other state, so each key must come from the file. */
    if (round == 0)
      changed_config(&b);
    else
      dashd__config_defaults(&b);
    ck_assert_msg(dashd__config_load(&b, path, err, sizeof(err)) == 0, "%s",
                  err);
    assert_configs_equal(&a, &b);
    unlink(path);
    free(text);
    text = NULL;
  }
}
END_TEST

START_TEST(test_config_reloadable_keys) {
  ck_assert_int_eq(dashd__config_key_reloadable("log_level"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("allowed_uids"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("allowed_gids"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("max_clients"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("max_stacks_per_client"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("max_bytes_per_client"), 1);
  ck_assert_int_eq(dashd__config_key_reloadable("max_frame"), 0);
  ck_assert_int_eq(dashd__config_key_reloadable("socket"), 0);
  ck_assert_int_eq(dashd__config_key_reloadable("backend"), 0);
  ck_assert_int_eq(dashd__config_key_reloadable("threads"), 0);
  ck_assert_int_eq(dashd__config_key_reloadable("foo"), 0);
  ck_assert_int_eq(dashd__config_key_reloadable(NULL), 0);
}
END_TEST

/* ---- config: bad input -------------------------------------------------- */

START_TEST(test_config_set_messages_name_key_and_value) {
  struct dashd_config c, before;
  char err[256];
  dashd__config_defaults(&c);
  memcpy(&before, &c, sizeof(c));

  ck_assert_int_eq(dashd__config_set(&c, "max_clients", "0", err, sizeof(err)),
                   DASH_E_INVALID);
  ck_assert_str_eq(err, "key 'max_clients': '0' is out of range [1, 65536]");
  ck_assert_int_eq(dashd__config_set(&c, "foo", "1", err, sizeof(err)),
                   DASH_E_INVALID);
  ck_assert_str_eq(err, "unknown key 'foo'");
  ck_assert_int_eq(dashd__config_set(&c, "threads", "abc", err, sizeof(err)),
                   DASH_E_INVALID);
  ck_assert_str_eq(err, "key 'threads': 'abc' is not a number");
  ck_assert_int_eq(
      dashd__config_set(&c, "max_bytes_per_client", "1023K", err, sizeof(err)),
      DASH_E_INVALID);
  ck_assert_str_eq(err,
                   "key 'max_bytes_per_client': '1023K' is out of range "
                   "[1M, 1P]");
  /* A value handed in directly is not trimmed. */
  ck_assert_int_eq(dashd__config_set(&c, "threads", " 4", err, sizeof(err)),
                   DASH_E_INVALID);
  /* NULL arguments and a NULL err are refused without a crash. */
  ck_assert_int_eq(dashd__config_set(&c, NULL, "1", err, sizeof(err)),
                   DASH_E_INVALID);
  ck_assert_int_eq(dashd__config_set(&c, "threads", NULL, NULL, 0),
                   DASH_E_INVALID);
  ck_assert_int_eq(dashd__config_set(&c, "threads", "x", NULL, 0),
                   DASH_E_INVALID);
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
}
END_TEST

START_TEST(test_config_set_rejects_too_many_ids) {
  struct dashd_config c, before;
  char list[1024], err[256];
  size_t n = 0;
  dashd__config_defaults(&c);
  memcpy(&before, &c, sizeof(c));
  for (int i = 0; i < DASHD_MAX_IDS; i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%d", i ? "," : "",
                          1000 + i);
  ck_assert_int_eq(
      dashd__config_set(&c, "allowed_gids", list, err, sizeof(err)), 0);
  ck_assert_int_eq(c.n_allowed_gids, DASHD_MAX_IDS);
  memcpy(&c, &before, sizeof(c));
  snprintf(list + n, sizeof(list) - n, ",5");
  ck_assert_int_eq(
      dashd__config_set(&c, "allowed_uids", list, err, sizeof(err)),
      DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(err, "more than 64"));
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
}
END_TEST

/* Each bad line comes third in its file, after a good line that must not
 * be applied; want is a piece of the message after "PATH:3: ". */
static const struct {
  const char *line;
  const char *want;
} kBadLines[] = {
    {"foo = 1", "unknown key 'foo'"},
    {"threads 4", "expected 'key = value', got 'threads 4'"},
    {"= 4", "empty key before '='"},
    {"   =", "empty key before '='"},
    {"threads = abc", "key 'threads': 'abc' is not a number"},
    {"metrics_listen = localhost:9464",
     "key 'metrics_listen': 'localhost:9464' is not HOST:PORT (an IPv4 or "
     "[IPv6] address and a port)"},
    {"metrics_listen = 127.0.0.1:70000",
     "key 'metrics_listen': '127.0.0.1:70000' is not HOST:PORT (an IPv4 or "
     "[IPv6] address and a port)"},
    {"stream_priority = medium",
     "key 'stream_priority': 'medium' is not one of low, high"},
    {"device = gpu0",
     "key 'device': 'gpu0' is neither a device ordinal nor "
     "GPU-UUID"},
    {"device = GPU-12",
     "key 'device': 'GPU-12' is neither a device ordinal "
     "nor GPU-UUID"},
    {"device = 0x1",
     "key 'device': '0x1' is neither a device ordinal nor "
     "GPU-UUID"},
    {"threads = 4 # four", "key 'threads': '4 # four' is not a number"},
    {"threads =", "key 'threads': '' is not a number"},
    {"threads = 0x10", "key 'threads': '0x10' is not a number"},
    {"threads = 1.5", "key 'threads': '1.5' is not a number"},
    {"threads = +4", "key 'threads': '+4' is not a number"},
    {"threads = -3", "key 'threads': '-3' is out of range [0, 4096]"},
    {"threads = 4097", "key 'threads': '4097' is out of range [0, 4096]"},
    {"max_clients = 0", "key 'max_clients': '0' is out of range [1, 65536]"},
    {"max_clients = 65537",
     "key 'max_clients': '65537' is out of range [1, 65536]"},
    {"max_clients = 4294967297",
     "key 'max_clients': '4294967297' is out of range"},
    {"max_stacks_per_client = -1",
     "key 'max_stacks_per_client': '-1' is out of range [1, 65536]"},
    {"max_clients = 99999999999999999999",
     "key 'max_clients': '99999999999999999999' is out of range"},
    {"max_bytes_per_client = 99999999999999999999",
     "key 'max_bytes_per_client': '99999999999999999999' is out of range"},
    {"max_bytes_per_client = 16384P",
     "key 'max_bytes_per_client': '16384P' is out of range [1M, 1P]"},
    {"max_bytes_per_client = 1025T",
     "key 'max_bytes_per_client': '1025T' is out of range [1M, 1P]"},
    {"max_bytes_per_client = 1023K",
     "key 'max_bytes_per_client': '1023K' is out of range [1M, 1P]"},
    {"max_bytes_per_client = -1G",
     "key 'max_bytes_per_client': '-1G' is out of range"},
    {"max_bytes_per_client = 16X",
     "key 'max_bytes_per_client': '16X' has an unknown suffix"},
    {"max_bytes_per_client = 16GB",
     "key 'max_bytes_per_client': '16GB' has an unknown suffix"},
    {"max_bytes_per_client = G", "'G' is not a number"},
    {"max_clients = 64K", "key 'max_clients': '64K' is not a number"},
    {"max_frame = 4095", "key 'max_frame': '4095' is out of range [4K, 16M]"},
    {"max_frame = 17M", "key 'max_frame': '17M' is out of range [4K, 16M]"},
    {"allowed_uids = no_such_user_dashd_test",
     "key 'allowed_uids': unknown user 'no_such_user_dashd_test'"},
    {"allowed_uids = 1000, no_such_user_dashd_test",
     "unknown user 'no_such_user_dashd_test'"},
    {"allowed_gids = no_such_group_dashd_test",
     "key 'allowed_gids': unknown group 'no_such_group_dashd_test'"},
    {"allowed_uids = 4294967295",
     "key 'allowed_uids': user id '4294967295' is out of range"},
    {"allowed_uids = -1", "key 'allowed_uids': user id '-1' is out of range"},
    {"allowed_uids = 1000,,1001", "key 'allowed_uids': empty entry"},
    {"allowed_uids = 1000,", "key 'allowed_uids': empty entry"},
    {"allowed_uids = *, 1000", "key 'allowed_uids': '*' must be the whole"},
    {"allowed_gids = *", "key 'allowed_gids': '*' is only for allowed_uids"},
    {"backend = tpu", "key 'backend': 'tpu' is not one of auto, cpu, cuda"},
    {"backend = CPU", "key 'backend': 'CPU' is not one of"},
    {"log_level = verbose",
     "key 'log_level': 'verbose' is not one of error, warn, info, debug"},
    {"log_level = INFO", "key 'log_level': 'INFO' is not one of"},
    {"socket = run/dashd.sock",
     "key 'socket': 'run/dashd.sock' is not an absolute path"},
    {"socket = /"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "key 'socket': path of 145 bytes is too long (at most 107)"},
    {"threads = \"4", "key 'threads': unterminated quote"},
    {"threads = \"", "key 'threads': unterminated quote"},
};
#define BAD_LINE_COUNT ((int)(sizeof(kBadLines) / sizeof(kBadLines[0])))

START_TEST(test_config_load_rejects_bad_line) {
  char path[64], text[512], want[128], err[1024] = "";
  struct dashd_config c, before;

  changed_config(&c);
  memcpy(&before, &c, sizeof(c));
  snprintf(text, sizeof(text), "threads = 17\n# comment\n%s\nthreads = 1\n",
           kBadLines[_i].line);
  write_file(path, sizeof(path), text);

  ck_assert_int_eq(dashd__config_load(&c, path, err, sizeof(err)),
                   DASH_E_INVALID);
  snprintf(want, sizeof(want), "%s:3: ", path);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0,
                "'%s' does not start with '%s'", err, want);
  ck_assert_msg(strstr(err, kBadLines[_i].want) != NULL,
                "'%s' does not hold '%s'", err, kBadLines[_i].want);
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
  unlink(path);
}
END_TEST

START_TEST(test_config_load_rejects_too_long_line) {
  char path[64], want[128], err[2048] = "";
  char text[1200];
  struct dashd_config c, before;
  size_t n;

  /* A comment of exactly 1024 bytes is fine. */
  memset(text, ' ', sizeof(text));
  text[0] = '#';
  text[1024] = '\n';
  n = 1025 +
      (size_t)snprintf(text + 1025, sizeof(text) - 1025, "threads = 2\n");
  write_file_n(path, sizeof(path), text, n);
  dashd__config_defaults(&c);
  ck_assert_msg(dashd__config_load(&c, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(c.threads, 2);
  unlink(path);

  /* A second line of 1025 bytes ("threads = " and 1015 digits) is not. */
  n = (size_t)snprintf(text, sizeof(text), "threads = 3\nthreads = ");
  memset(text + n, '1', 1015);
  n += 1015;
  text[n++] = '\n';
  write_file_n(path, sizeof(path), text, n);
  changed_config(&c);
  memcpy(&before, &c, sizeof(c));
  ck_assert_int_eq(dashd__config_load(&c, path, err, sizeof(err)),
                   DASH_E_INVALID);
  snprintf(want, sizeof(want), "%s:2: line is longer than 1024 bytes", path);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
  unlink(path);
}
END_TEST

START_TEST(test_config_load_rejects_nul_byte) {
  char path[64], want[128], err[512] = "";
  static const char text[] = "threads = 2\nthreads = 3\0\n";
  struct dashd_config c, before;
  changed_config(&c);
  memcpy(&before, &c, sizeof(c));
  write_file_n(path, sizeof(path), text, sizeof(text) - 1);
  ck_assert_int_eq(dashd__config_load(&c, path, err, sizeof(err)),
                   DASH_E_INVALID);
  snprintf(want, sizeof(want), "%s:2: ", path);
  ck_assert_ptr_nonnull(strstr(err, want));
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
  unlink(path);
}
END_TEST

START_TEST(test_config_load_missing_file_is_io_error) {
  char err[512] = "", dir[64];
  struct dashd_config c, before;
  changed_config(&c);
  memcpy(&before, &c, sizeof(c));
  ck_assert_int_eq(
      dashd__config_load(&c, "/nonexistent/dashd.conf", err, sizeof(err)),
      DASH_E_IO);
  ck_assert_str_eq(err, "/nonexistent/dashd.conf: No such file or directory");

  /* A directory opens but cannot be read. */
  snprintf(dir, sizeof(dir), "/tmp/test_config_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(dashd__config_load(&c, dir, err, sizeof(err)), DASH_E_IO);
  ck_assert_ptr_nonnull(strstr(err, dir));
  rmdir(dir);

  ck_assert_int_eq(dashd__config_load(&c, NULL, err, sizeof(err)),
                   DASH_E_INVALID);
  ck_assert_int_eq(memcmp(&c, &before, sizeof(c)), 0);
}
END_TEST

/* ---- log ---------------------------------------------------------------- */

START_TEST(test_log_level_names_round_trip) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  int level;
  for (int i = DASHD_LOG_ERROR; i <= DASHD_LOG_DEBUG; i++) {
    ck_assert_str_eq(dashd__log_level_name(i), names[i]);
    ck_assert_int_eq(dashd__log_parse_level(names[i], &level), 0);
    ck_assert_int_eq(level, i);
  }
  ck_assert_int_eq(dashd__log_parse_level("warning", &level), 0);
  ck_assert_int_eq(level, DASHD_LOG_WARN);

  level = 42;
  ck_assert_int_eq(dashd__log_parse_level("verbose", &level), DASH_E_INVALID);
  ck_assert_int_eq(dashd__log_parse_level("", &level), DASH_E_INVALID);
  ck_assert_int_eq(dashd__log_parse_level("Info", &level), DASH_E_INVALID);
  ck_assert_int_eq(dashd__log_parse_level(NULL, &level), DASH_E_INVALID);
  ck_assert_int_eq(level, 42);
  ck_assert_ptr_null(dashd__log_level_name(-1));
  ck_assert_ptr_null(dashd__log_level_name(4));

  ck_assert_int_eq(dashd__log_level(), DASHD_LOG_INFO);
  dashd__log_set_level(DASHD_LOG_DEBUG);
  ck_assert_int_eq(dashd__log_level(), DASHD_LOG_DEBUG);
  dashd__log_set_level(99);
  ck_assert_int_eq(dashd__log_level(), DASHD_LOG_DEBUG);
  dashd__log_set_level(-5);
  ck_assert_int_eq(dashd__log_level(), DASHD_LOG_ERROR);
}
END_TEST

START_TEST(test_log_line_format) {
  struct capture cap;
  char out[1024];
  capture_begin(&cap);
  errno = EAGAIN;
  dashd__log(DASHD_LOG_INFO, "hello %d %s", 42, "world");
  ck_assert_int_eq(errno, EAGAIN);
  dashd__log(DASHD_LOG_ERROR, "bad");
  capture_end(&cap, out, sizeof(out));
  ck_assert_msg(matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                        "[0-9]{2}\\.[0-9]{3}Z info: hello 42 world\n"
                        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                        "[0-9]{2}\\.[0-9]{3}Z error: bad\n$",
                        out),
                "got '%s'", out);
}
END_TEST

START_TEST(test_log_filters_by_level) {
  struct capture cap;
  char out[1024];
  dashd__log_set_level(DASHD_LOG_WARN);
  capture_begin(&cap);
  dashd__log(DASHD_LOG_DEBUG, "d");
  dashd__log(DASHD_LOG_INFO, "i");
  dashd__log(DASHD_LOG_WARN, "w");
  dashd__log(DASHD_LOG_ERROR, "e");
  dashd__log_set_level(DASHD_LOG_DEBUG);
  dashd__log(DASHD_LOG_DEBUG, "d2");
  dashd__log_set_level(DASHD_LOG_ERROR);
  dashd__log(DASHD_LOG_WARN, "w2");
  capture_end(&cap, out, sizeof(out));
  ck_assert_msg(matches("^[^\n]*Z warn: w\n[^\n]*Z error: e\n"
                        "[^\n]*Z debug: d2\n$",
                        out),
                "got '%s'", out);
}
END_TEST

START_TEST(test_log_flattens_newlines) {
  struct capture cap;
  char out[1024];
  capture_begin(&cap);
  dashd__log(DASHD_LOG_WARN, "a\nb\r\nc %s", "x\ny");
  capture_end(&cap, out, sizeof(out));
  ck_assert_int_eq(count_lines(out), 1);
  ck_assert_msg(matches("Z warn: a b  c x y\n$", out), "got '%s'", out);
}
END_TEST

START_TEST(test_log_syslog_prefix) {
  struct capture cap;
  char out[1024];
  dashd__log_set_level(DASHD_LOG_DEBUG);
  dashd__log_set_syslog_prefix(1);
  capture_begin(&cap);
  dashd__log(DASHD_LOG_ERROR, "e");
  dashd__log(DASHD_LOG_WARN, "w");
  dashd__log(DASHD_LOG_INFO, "i\nj");
  dashd__log(DASHD_LOG_DEBUG, "d");
  dashd__log_set_syslog_prefix(0);
  dashd__log(DASHD_LOG_INFO, "back");
  capture_end(&cap, out, sizeof(out));
  ck_assert_msg(matches("^<3>error: e\n<4>warn: w\n<6>info: i j\n"
                        "<7>debug: d\n[0-9]{4}-[^\n]*Z info: back\n$",
                        out),
                "got '%s'", out);
}
END_TEST

START_TEST(test_log_cuts_long_text_to_one_line) {
  struct capture cap;
  static char big[3 * PIPE_BUF], out[4 * PIPE_BUF];
  size_t n;
  memset(big, 'x', sizeof(big) - 1);
  capture_begin(&cap);
  dashd__log(DASHD_LOG_INFO, "%s", big);
  n = capture_end(&cap, out, sizeof(out));
  ck_assert_uint_eq(n, PIPE_BUF);
  ck_assert_int_eq(count_lines(out), 1);
  ck_assert_int_eq(out[n - 5], 'x');
  ck_assert_str_eq(out + n - 4, "...\n");
}
END_TEST

#define LOG_THREADS 4
#define LOG_LINES 100

static void *log_many(void *arg) {
  long id = (long)(intptr_t)arg;
  for (int i = 0; i < LOG_LINES; i++)
    dashd__log(DASHD_LOG_INFO, "thread %ld line %03d end", id, i);
  return NULL;
}

START_TEST(test_log_threads_never_interleave) {
  struct capture cap;
  pthread_t t[LOG_THREADS];
  static char out[64 * 1024];
  int seen[LOG_THREADS] = {0};
  capture_begin(&cap);
  for (long i = 0; i < LOG_THREADS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i),
                     0);
  for (int i = 0; i < LOG_THREADS; i++)
    pthread_join(t[i], NULL);
  capture_end(&cap, out, sizeof(out));
  ck_assert_int_eq(count_lines(out), LOG_THREADS * LOG_LINES);
  for (char *line = out, *nl; (nl = strchr(line, '\n')) != NULL;
       line = nl + 1) {
    long id;
    int k, end = 0;
    *nl = '\0';
    ck_assert_msg(sscanf(line, "%*s info: thread %ld line %d end%n", &id, &k,
                         &end) == 2 &&
                      end == (int)strlen(line) && id >= 0 && id < LOG_THREADS,
                  "mangled line '%s'", line);
    ck_assert_int_eq(k, seen[id]++); /* each thread's lines in order */
  }
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc;

  tc = tcase_create("core");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_config_defaults_match_the_spec);
  tcase_add_test(tc, test_config_set_accepts_every_key);
  tcase_add_test(tc, test_config_load_accepts_comments_blanks_and_quotes);
  tcase_add_test(tc, test_config_load_keeps_keys_the_file_does_not_name);
  tcase_add_test(tc, test_config_dump_reads_back);
  tcase_add_test(tc, test_config_reloadable_keys);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad input");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_config_set_messages_name_key_and_value);
  tcase_add_test(tc, test_config_set_rejects_too_many_ids);
  tcase_add_loop_test(tc, test_config_load_rejects_bad_line, 0, BAD_LINE_COUNT);
  tcase_add_test(tc, test_config_load_rejects_too_long_line);
  tcase_add_test(tc, test_config_load_rejects_nul_byte);
  tcase_add_test(tc, test_config_load_missing_file_is_io_error);
  suite_add_tcase(s, tc);

  tc = tcase_create("log");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_log_level_names_round_trip);
  tcase_add_test(tc, test_log_line_format);
  tcase_add_test(tc, test_log_filters_by_level);
  tcase_add_test(tc, test_log_flattens_newlines);
  tcase_add_test(tc, test_log_syslog_prefix);
  tcase_add_test(tc, test_log_cuts_long_text_to_one_line);
  tcase_add_test(tc, test_log_threads_never_interleave);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* Line-buffered, so a test's observations reach the log even when its
   * forked process ends at a failed assertion. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  SRunner *sr = srunner_create(config_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
