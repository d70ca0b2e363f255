/* Unit tests of libdash (client/) against a scripted fake daemon that
 * speaks the wire protocol: option checks, requests and pushes
 * interleaved, the hand-over of result slots, the sealed shared memory,
 * and every way a connection can die. The real daemon has its own
 * end-to-end tests. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../kernels/internal.h"
#include "dash/dash.h"
#include "internal.h"
#include "paths.h"

#define TEST_TIMEOUT_S 30
#define MAX_STACKS 4
#define BODIES 32

/* When the fake daemon pushes the RefreshDone of a refresh. */
enum push_policy {
  PUSH_NOW,        /* right after the RefreshReply */
  PUSH_WITH_REPLY, /* just before the next reply it sends */
  PUSH_WHEN_IDLE,  /* before the next reply, or after 5 ms of quiet */
  PUSH_NEVER       /* the refresh never finishes */
};

struct fake_stack {
  uint64_t id;
  float *stats, *results;
  size_t stats_bytes, result_bytes;
  int held, ready;     /* slots, -1 for none */
  uint64_t generation; /* of the newest result */
  uint64_t slot_gen[2], slot_step[2];
  int push; /* 0 none, 1 success, -1 failure pending */
  uint64_t push_step;
};

struct fake {
  char dir[32], path[64];
  int listen_fd, conn;
  pthread_t thread;
  int joined;
  /* The script. */
  int hello_status; /* refuse Hello with this status */
  uint32_t hello_version;
  int close_on;               /* drop the connection on this request */
  int close_after_hello;      /* drop it right after answering Hello */
  int silent_on;              /* never answer this request */
  int close_after_refresh_ms; /* drop the connection this long after one */
  int oversized_ping;         /* answer Ping with an impossible frame length */
  int fail_status;            /* every refresh fails with this status */
  enum push_policy push;
  /* What happened. */
  _Atomic int requests[BODIES];
  char error[256];
  Dashpb__StackOptions opts; /* of the last RegisterStack */
  uint64_t seals[2];
  struct fake_stack stacks[MAX_STACKS];
  int nstacks;
};

#define FAKE_CHECK(f, cond)                                           \
  do {                                                                \
    if (!(cond) && (f)->error[0] == '\0')                             \
      snprintf((f)->error, sizeof((f)->error), "%s:%d: %s", __FILE__, \
               __LINE__, #cond);                                      \
  } while (0)

static int fake_send(struct fake *f, Dashpb__Envelope *env) {
  env->version = DASH_WIRE_VERSION;
  return dash__wire_send(f->conn, env, NULL, 0);
}

static void fake_result(const struct fake_stack *st, int slot,
                        Dashpb__ResultInfo *r, uint64_t *counts) {
  dashpb__result_info__init(r);
  r->generation = st->slot_gen[slot];
  r->step = st->slot_step[slot];
  r->slot = (uint32_t)slot;
  r->compute_ms = 1.5;
  r->method = DASH_METHOD_EVD;
  r->max_iterations = 7;
  for (int i = 0; i < DASH_BLOCK_STATUS_COUNT; i++)
    counts[i] = (uint64_t)i;
  r->n_blocks_by_status = DASH_BLOCK_STATUS_COUNT;
  r->blocks_by_status = counts;
}

static void fake_flush_pushes(struct fake *f) {
  for (int i = 0; i < f->nstacks; i++) {
    struct fake_stack *st = &f->stacks[i];
    Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
    Dashpb__RefreshDone done = DASHPB__REFRESH_DONE__INIT;
    Dashpb__ResultInfo r;
    uint64_t counts[DASH_BLOCK_STATUS_COUNT];
    if (st->push == 0)
      continue;
    if (st->push > 0) {
      fake_result(st, st->ready, &r, counts);
    } else {
      dashpb__result_info__init(&r);
      r.step = st->push_step;
      r.status = f->fail_status;
      r.message = (char *)"the fake backend broke";
    }
    st->push = 0;
    done.stack_id = st->id;
    done.result = &r;
    env.body_case = DASHPB__ENVELOPE__BODY_REFRESH_DONE;
    env.refresh_done = &done;
    fake_send(f, &env);
  }
}

static int fake_pushes_pending(const struct fake *f) {
  for (int i = 0; i < f->nstacks; i++)
    if (f->stacks[i].push != 0)
      return 1;
  return 0;
}

static struct fake_stack *fake_find(struct fake *f, uint64_t id) {
  for (int i = 0; i < f->nstacks; i++)
    if (f->stacks[i].id == id)
      return &f->stacks[i];
  return NULL;
}

static void fake_register(struct fake *f, const Dashpb__RegisterStack *rs,
                          int *fds, int nfds, Dashpb__Envelope *out,
                          Dashpb__RegisterStackReply *rr) {
  struct stat sb;
  FAKE_CHECK(f, nfds == 2);
  FAKE_CHECK(f, f->nstacks < MAX_STACKS);
  if (nfds != 2 || f->nstacks == MAX_STACKS || rs->options == NULL) {
    out->status = DASH_E_INVALID;
    out->message = (char *)"bad RegisterStack";
    return;
  }
  struct fake_stack *st = &f->stacks[f->nstacks];
  memset(st, 0, sizeof(*st));
  FAKE_CHECK(f, rs->options != NULL);
  if (rs->options != NULL)
    f->opts = *rs->options;
  st->stats_bytes = rs->stats_bytes;
  st->result_bytes = rs->result_bytes;
  FAKE_CHECK(f,
             fstat(fds[0], &sb) == 0 && (size_t)sb.st_size == st->stats_bytes);
  FAKE_CHECK(f,
             fstat(fds[1], &sb) == 0 && (size_t)sb.st_size == st->result_bytes);
  FAKE_CHECK(f, st->result_bytes == 2 * st->stats_bytes);
  for (int i = 0; i < 2; i++)
    f->seals[i] = (uint64_t)fcntl(fds[i], F_GET_SEALS);
  st->stats = mmap(NULL, st->stats_bytes, PROT_READ, MAP_SHARED, fds[0], 0);
  st->results = mmap(NULL, st->result_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                     fds[1], 0);
  FAKE_CHECK(f, st->stats != MAP_FAILED && st->results != MAP_FAILED);
  st->id = 100 + (uint64_t)f->nstacks;
  st->held = st->ready = -1;
  f->nstacks++;
  rr->stack_id = st->id;
  out->body_case = DASHPB__ENVELOPE__BODY_REGISTER_STACK_REPLY;
  out->register_stack_reply = rr;
}

/* A refresh "computes" instantly: the slot the client does not hold gets
 * the step number in every float. */
static void fake_refresh(struct fake *f, const Dashpb__Refresh *r) {
  struct fake_stack *st = fake_find(f, r->stack_id);
  FAKE_CHECK(f, st != NULL);
  if (st == NULL || f->push == PUSH_NEVER)
    return;
  if (f->fail_status < 0) {
    st->push = -1;
    st->push_step = r->step;
    return;
  }
  int slot = st->held == 0 ? 1 : 0;
  size_t n = st->stats_bytes / sizeof(float);
  for (size_t i = 0; i < n; i++)
    st->results[slot * n + i] = (float)r->step;
  st->slot_gen[slot] = ++st->generation;
  st->slot_step[slot] = r->step;
  st->ready = slot;
  st->push = 1;
  st->push_step = r->step;
}

/* Answers one request; 0 when the connection is to be dropped. */
static int fake_serve(struct fake *f, const Dashpb__Envelope *req, int *fds,
                      int nfds) {
  Dashpb__Envelope out = DASHPB__ENVELOPE__INIT;
  Dashpb__HelloReply hr = DASHPB__HELLO_REPLY__INIT;
  Dashpb__RegisterStackReply rr = DASHPB__REGISTER_STACK_REPLY__INIT;
  Dashpb__RefreshReply fr = DASHPB__REFRESH_REPLY__INIT;
  Dashpb__SyncReply sr = DASHPB__SYNC_REPLY__INIT;
  Dashpb__Ping ping = DASHPB__PING__INIT;
  Dashpb__ResultInfo held;
  uint64_t counts[DASH_BLOCK_STATUS_COUNT];
  int bc = (int)req->body_case;

  if (bc >= 0 && bc < BODIES)
    f->requests[bc]++;
  FAKE_CHECK(f, req->version == DASH_WIRE_VERSION);
  FAKE_CHECK(f, req->request_id > 0);
  if (bc != DASHPB__ENVELOPE__BODY_REGISTER_STACK)
    for (int i = 0; i < nfds; i++)
      close(fds[i]);
  if (bc == f->close_on)
    return 0;
  if (bc == f->silent_on)
    return 1;
  if (f->push == PUSH_WITH_REPLY || f->push == PUSH_WHEN_IDLE)
    fake_flush_pushes(f);
  out.request_id = req->request_id;
  switch (req->body_case) {
    case DASHPB__ENVELOPE__BODY_HELLO:
      FAKE_CHECK(f, req->hello->protocol_version == DASH_WIRE_VERSION);
      FAKE_CHECK(f, strstr(req->hello->client_name, "test_client_unit"));
      if (f->hello_status < 0) {
        out.status = f->hello_status;
        out.message = (char *)"uid 4242 is not allowed";
        fake_send(f, &out);
        return 0;
      }
      hr.protocol_version =
          f->hello_version ? f->hello_version : DASH_WIRE_VERSION;
      hr.daemon_version = (char *)"9.8.7";
      hr.backend = (char *)"fake";
      hr.device = (char *)"none";
      out.body_case = DASHPB__ENVELOPE__BODY_HELLO_REPLY;
      out.hello_reply = &hr;
      fake_send(f, &out);
      if (!f->close_after_hello)
        return 1;
      /* Late enough that the client has stopped reading: it learns of
       * the close only by writing. */
      usleep(50000);
      return 0;
    case DASHPB__ENVELOPE__BODY_REGISTER_STACK:
      fake_register(f, req->register_stack, fds, nfds, &out, &rr);
      for (int i = 0; i < nfds; i++)
        close(fds[i]);
      break;
    case DASHPB__ENVELOPE__BODY_REFRESH:
      fake_refresh(f, req->refresh);
      out.body_case = DASHPB__ENVELOPE__BODY_REFRESH_REPLY;
      out.refresh_reply = &fr;
      fake_send(f, &out);
      if (f->push == PUSH_NOW)
        fake_flush_pushes(f);
      if (f->close_after_refresh_ms > 0) {
        usleep((useconds_t)f->close_after_refresh_ms * 1000);
        return 0;
      }
      return 1;
    case DASHPB__ENVELOPE__BODY_SYNC: {
      struct fake_stack *st = fake_find(f, req->sync->stack_id);
      FAKE_CHECK(f, st != NULL);
      if (st == NULL)
        break;
      if (st->ready >= 0 && st->ready != st->held) {
        st->held = st->ready;
        st->ready = -1;
        sr.adopted = 1;
      }
      if (st->held >= 0) {
        fake_result(st, st->held, &held, counts);
        sr.held = &held;
      }
      sr.in_flight = st->push != 0;
      out.body_case = DASHPB__ENVELOPE__BODY_SYNC_REPLY;
      out.sync_reply = &sr;
      break;
    }
    case DASHPB__ENVELOPE__BODY_UNREGISTER:
      FAKE_CHECK(f, fake_find(f, req->unregister->stack_id) != NULL);
      break;
    case DASHPB__ENVELOPE__BODY_PING:
      if (f->oversized_ping) {
        /* A length prefix of 64 MiB: no reader may take it. */
        static const uint8_t huge[4] = {0, 0, 0, 4};
        FAKE_CHECK(f, write(f->conn, huge, 4) == 4);
        return 1;
      }
      out.body_case = DASHPB__ENVELOPE__BODY_PING;
      out.ping = &ping;
      break;
    default:
      out.status = DASH_E_PROTOCOL;
      out.message = (char *)"the fake daemon does not know that";
      break;
  }
  fake_send(f, &out);
  return 1;
}

static void *fake_main(void *arg) {
  struct fake *f = arg;
  dash__wire_reader rd;
  dash__wire_reader_init(&rd, DASH_WIRE_MAX_FRAME);
  f->conn = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  FAKE_CHECK(f, f->conn >= 0);
  while (f->conn >= 0) {
    struct pollfd p = {.fd = f->conn, .events = POLLIN};
    int idle = f->push == PUSH_WHEN_IDLE && fake_pushes_pending(f);
    int r = poll(&p, 1, idle ? 5 : 60000);
    if (r == 0 && idle)
      fake_flush_pushes(f);
    if (r == 0 || (r < 0 && errno == EINTR))
      continue;
    if (r < 0 || dash__wire_reader_fill(&rd, f->conn) < 0)
      break;
    for (;;) {
      Dashpb__Envelope *env = NULL;
      int fds[DASH_WIRE_MAX_FDS], nfds = 0;
      int rc = dash__wire_reader_next(&rd, &env, fds, &nfds);
      FAKE_CHECK(f, rc >= 0);
      if (rc <= 0)
        break;
      int keep = fake_serve(f, env, fds, nfds);
      dashpb__envelope__free_unpacked(env, NULL);
      if (!keep)
        goto out;
    }
  }
out:
  dash__wire_reader_free(&rd);
  if (f->conn >= 0)
    close(f->conn);
  for (int i = 0; i < f->nstacks; i++) {
    munmap(f->stacks[i].stats, f->stacks[i].stats_bytes);
    munmap(f->stacks[i].results, f->stacks[i].result_bytes);
  }
  return NULL;
}

/* A fake daemon listening in a fresh directory; serves one client. */
static struct fake *fake_new(void) {
  struct fake *f = calloc(1, sizeof(*f));
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  ck_assert_ptr_nonnull(f);
  f->close_on = f->silent_on = -1;
  snprintf(f->dir, sizeof(f->dir), "/tmp/dash_client_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/dashd.sock", f->dir);
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
  f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(f->listen_fd, 0);
  ck_assert_int_eq(bind(f->listen_fd, (struct sockaddr *)&addr, sizeof(addr)),
                   0);
  ck_assert_int_eq(listen(f->listen_fd, 4), 0);
  return f;
}

static void fake_start(struct fake *f) {
  ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

/* Waits for the fake daemon to see the client go, then checks that it
 * saw nothing wrong. */
static void fake_join(struct fake *f) {
  if (!f->joined)
    ck_assert_int_eq(pthread_join(f->thread, NULL), 0);
  f->joined = 1;
}

static void fake_finish(struct fake *f) {
  fake_join(f);
  close(f->listen_fd);
  unlink(f->path);
  rmdir(f->dir);
  ck_assert_msg(f->error[0] == '\0', "fake daemon: %s", f->error);
  free(f);
}

static dash_client *connect_to(struct fake *f) {
  dash_client *c = NULL;
  fake_start(f);
  int rc = dash_connect(f->path, &c);
  ck_assert_msg(rc == 0, "dash_connect: %s", dash_last_error());
  return c;
}

static dash_stack *new_stack(dash_client *c, size_t n, size_t b) {
  dash_stack_options o = DASH_STACK_OPTIONS_INIT;
  dash_stack *s = NULL;
  o.num_blocks = n;
  o.block_size = b;
  int rc = dash_stack_create(c, &o, &s);
  ck_assert_msg(rc == 0, "dash_stack_create: %s", dash_last_error());
  return s;
}

/* The library must never leave SIGPIPE to kill its caller. */
static void sigpipe_kills(void) {
  signal(SIGPIPE, SIG_DFL);
}

/* ---- core --------------------------------------------------------------- */

START_TEST(test_client_default_socket_path_follows_environment) {
  char path[108];
  setenv("DASHD_SOCKET", "/somewhere/d.sock", 1);
  ck_assert_int_eq(dash__default_socket_path(path, sizeof(path)), 0);
  ck_assert_str_eq(path, "/somewhere/d.sock");
  unsetenv("DASHD_SOCKET");
  setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  ck_assert_int_eq(dash__default_socket_path(path, sizeof(path)), 0);
  ck_assert_str_eq(path, geteuid() == 0 ? "/run/dashd/dashd.sock"
                                        : "/run/user/4242/dashd.sock");
  unsetenv("XDG_RUNTIME_DIR");
  if (geteuid() != 0) {
    ck_assert_int_eq(dash__default_socket_path(path, sizeof(path)),
                     DASH_E_INVALID);
    ck_assert_ptr_nonnull(strstr(dash_last_error(), "XDG_RUNTIME_DIR"));
  }
}
END_TEST

START_TEST(test_client_connect_without_daemon_is_disconnected) {
  char dir[] = "/tmp/dash_client_XXXXXX", path[64];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  dash_client *c = (dash_client *)&c;
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/dashd.sock", dir);

  /* Nothing there. */
  ck_assert_int_eq(dash_connect(path, &c), DASH_E_DISCONNECTED);
  ck_assert_ptr_null(c);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), path));

  /* A socket file nobody listens on (a daemon that died). */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  ck_assert_int_eq(dash_connect(path, &c), DASH_E_DISCONNECTED);
  close(fd);
  unlink(path);
  rmdir(dir);
}
END_TEST

START_TEST(test_client_connect_rejects_bad_paths) {
  char longpath[200];
  dash_client *c;
  memset(longpath, 'x', sizeof(longpath) - 1);
  longpath[0] = '/';
  longpath[sizeof(longpath) - 1] = '\0';
  ck_assert_int_eq(dash_connect(longpath, &c), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "too long"));
  ck_assert_int_eq(dash_connect("", &c), DASH_E_INVALID);
  ck_assert_int_eq(dash_connect("/tmp/x", NULL), DASH_E_INVALID);
}
END_TEST

START_TEST(test_client_connect_reads_the_daemon_hello) {
  struct fake *f = fake_new();
  dash_client *c = connect_to(f);
  ck_assert_str_eq(c->daemon_version, "9.8.7");
  ck_assert_str_eq(c->backend, "fake");
  ck_assert_str_eq(c->device, "none");
  double rtt = -1;
  ck_assert_int_eq(dash_ping(c, &rtt), 0);
  ck_assert(rtt >= 0 && rtt < 5000);
  ck_assert_int_eq(dash_ping(c, NULL), 0);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_bad_stack_options_are_refused_before_sending) {
  struct fake *f = fake_new();
  dash_client *c = connect_to(f);
  dash_stack_options o = DASH_STACK_OPTIONS_INIT;
  dash_stack *s = (dash_stack *)&s;

  ck_assert_int_eq(dash_stack_create(c, NULL, &s), DASH_E_INVALID);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(dash_stack_create(c, &o, NULL), DASH_E_INVALID);
  o.block_size = 8;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "N = 0"));
  o.num_blocks = 2;
  o.block_size = 0;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "B = 0"));
  o.block_size = DASH_ROOTS_MAX_BLOCK_SIZE + 1;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), DASH_E_TOO_LARGE);
  o.num_blocks = (size_t)DASH_ROOTS_MAX_BLOCKS;
  o.block_size = DASH_ROOTS_MAX_BLOCK_SIZE;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), DASH_E_TOO_LARGE);
  o.num_blocks = 2;
  o.block_size = 8;
  o.version = 0;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "DASH_STACK_OPTIONS_INIT"));

  /* Calls on a stack check their own arguments. */
  s = new_stack(c, 2, 8);
  ck_assert_int_eq(dash_step(s, 1, (void *)s), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "dash_stack_create_cuda"));
  /* A host stack has no device result. */
  ck_assert_ptr_null(dash_stack_result_cuda(s));
  ck_assert_int_eq(dash_sync(s, -2, NULL), DASH_E_INVALID);
  ck_assert_int_eq(dash_step(NULL, 1, NULL), DASH_E_INVALID);
  ck_assert_int_eq(dash_sync(NULL, 0, NULL), DASH_E_INVALID);
  ck_assert_int_eq(dash_stack_destroy(NULL), 0);
  ck_assert_int_eq(dash_ping(NULL, NULL), DASH_E_INVALID);
  ck_assert_int_eq(dash_stack_destroy(s), 0);
  dash_disconnect(NULL);
  dash_disconnect(c);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_REGISTER_STACK], 1);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_REFRESH], 0);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_SYNC], 0);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_stack_memory_is_sealed_shared_and_sized) {
  struct fake *f = fake_new();
  dash_client *c = connect_to(f);
  dash_stack_options o = DASH_STACK_OPTIONS_INIT;
  dash_stack *s = NULL;
  o.num_blocks = 3;
  o.block_size = 5;
  o.root = 2;
  o.method = DASH_METHOD_CHEBYSHEV;
  o.scaling = DASH_SCALING_FROBENIUS;
  o.max_steps = 17;
  o.tol = 0.25;
  o.eps = 1e-4;
  o.precision = DASH_PRECISION_BF16;
  o.fallback = DASH_FALLBACK_NONE;
  ck_assert_int_eq(dash_stack_create(c, &o, &s), 0);
  ck_assert_uint_eq(dash_stack_num_blocks(s), 3);
  ck_assert_uint_eq(dash_stack_block_size(s), 5);
  ck_assert_ptr_null(dash_stack_result(s));

  /* Every option reaches the daemon as it was given. */
  ck_assert_uint_eq(f->opts.num_blocks, 3);
  ck_assert_uint_eq(f->opts.block_size, 5);
  ck_assert_int_eq(f->opts.root, 2);
  ck_assert_int_eq(f->opts.method, DASH_METHOD_CHEBYSHEV);
  ck_assert_int_eq(f->opts.scaling, DASH_SCALING_FROBENIUS);
  ck_assert_int_eq(f->opts.max_steps, 17);
  ck_assert_double_eq(f->opts.tol, 0.25);
  ck_assert_double_eq(f->opts.eps, 1e-4);
  ck_assert_int_eq(f->opts.precision, DASH_PRECISION_BF16);
  ck_assert_int_eq(f->opts.fallback, DASH_FALLBACK_NONE);

  /* Sealed against resizing, and zeroed. */
  const uint64_t want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  ck_assert_uint_eq(f->seals[0] & want, want);
  ck_assert_uint_eq(f->seals[1] & want, want);
  ck_assert_uint_eq(f->stacks[0].stats_bytes, 3 * 5 * 5 * sizeof(float));
  float *stats = dash_stack_stats(s);
  for (size_t i = 0; i < 3 * 5 * 5; i++)
    ck_assert(stats[i] == 0.0f);

  /* What the trainer writes, the daemon reads. */
  stats[74] = 42.0f;
  ck_assert(f->stacks[0].stats[74] == 42.0f);
  ck_assert_int_eq(dash_stack_destroy(s), 0);
  dash_disconnect(c);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_UNREGISTER], 1);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_sync_adopts_the_pushed_slot) {
  struct fake *f = fake_new();
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 2, 4);
  dash_refresh_info info;
  const size_t slot = 2 * 4 * 4;

  /* Nothing asked yet: no wait and no round trip, even with -1. */
  ck_assert_int_eq(dash_sync(s, -1, &info), 0);
  ck_assert_uint_eq(info.generation, 0);
  ck_assert_int_eq(info.in_flight, 0);

  ck_assert_int_eq(dash_step(s, 10, NULL), 0);
  ck_assert_int_eq(dash_sync(s, -1, &info), 1);
  const float *r1 = dash_stack_result(s);
  ck_assert_ptr_eq(r1, s->results + f->stacks[0].held * slot);
  ck_assert(r1[0] == 10.0f && r1[slot - 1] == 10.0f);
  ck_assert_uint_eq(info.generation, 1);
  ck_assert_uint_eq(info.step, 10);
  ck_assert_double_eq(info.compute_ms, 1.5);
  ck_assert_int_eq(info.method, DASH_METHOD_EVD);
  ck_assert_int_eq(info.max_iterations, 7);
  ck_assert_uint_eq(info.blocks_by_status[3], 3);
  ck_assert_int_eq(info.in_flight, 0);

  /* Nothing newer: polling costs no round trip. */
  int syncs = f->requests[DASHPB__ENVELOPE__BODY_SYNC];
  ck_assert_int_eq(dash_sync(s, 0, &info), 0);
  ck_assert_int_eq(dash_sync(s, 100, &info), 0);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_SYNC], syncs);
  ck_assert_ptr_eq(dash_stack_result(s), r1);

  /* The next result comes in the other slot. */
  ck_assert_int_eq(dash_step(s, 20, NULL), 0);
  int got = 0;
  for (int i = 0; i < 2000 && got == 0; i++) {
    got = dash_sync(s, 0, &info);
    if (got == 0)
      usleep(1000);
  }
  ck_assert_int_eq(got, 1);
  ck_assert_ptr_ne(dash_stack_result(s), r1);
  ck_assert(dash_stack_result(s)[0] == 20.0f);
  ck_assert_uint_eq(info.generation, 2);
  ck_assert_uint_eq(info.step, 20);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_SYNC], syncs + 1);
  dash_disconnect(c); /* destroys the stack */
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_UNREGISTER], 1);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_sync_times_out_while_refresh_computes) {
  struct fake *f = fake_new();
  f->push = PUSH_NEVER;
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 1, 2);
  dash_refresh_info info;
  ck_assert_int_eq(dash_step(s, 5, NULL), 0);
  double t0 = dash__now_ms();
  ck_assert_int_eq(dash_sync(s, 150, &info), 0);
  double ms = dash__now_ms() - t0;
  ck_assert_msg(ms >= 140 && ms < 5000, "waited %.1f ms", ms);
  ck_assert_int_eq(info.in_flight, 1);
  ck_assert_uint_eq(info.generation, 0);
  ck_assert_ptr_null(dash_stack_result(s));
  t0 = dash__now_ms();
  ck_assert_int_eq(dash_sync(s, 0, &info), 0);
  ck_assert(dash__now_ms() - t0 < 100);
  ck_assert_int_eq(f->requests[DASHPB__ENVELOPE__BODY_SYNC], 0);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_failed_refresh_is_reported_once) {
  struct fake *f = fake_new();
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 1, 2);
  dash_refresh_info info;
  ck_assert_int_eq(dash_step(s, 1, NULL), 0);
  ck_assert_int_eq(dash_sync(s, -1, &info), 1);
  const float *held = dash_stack_result(s);

  f->fail_status = DASH_E_LAPACK;
  ck_assert_int_eq(dash_step(s, 2, NULL), 0);
  ck_assert_int_eq(dash_sync(s, -1, &info), DASH_E_LAPACK);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "the fake backend broke"));
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "step 2"));
  ck_assert_ptr_eq(dash_stack_result(s), held);
  ck_assert_uint_eq(info.step, 1);
  ck_assert_int_eq(dash_sync(s, 0, &info), 0);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_push_between_request_and_reply_is_kept) {
  struct fake *f = fake_new();
  f->push = PUSH_WITH_REPLY;
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 1, 3);
  dash_refresh_info info;
  ck_assert_int_eq(dash_step(s, 7, NULL), 0);
  /* The RefreshDone arrives ahead of the Ping's reply. */
  ck_assert_int_eq(dash_ping(c, NULL), 0);
  ck_assert_int_eq(dash_sync(s, 0, &info), 1);
  ck_assert_uint_eq(info.step, 7);
  ck_assert(dash_stack_result(s)[8] == 7.0f);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

struct worker {
  dash_stack *s;
  int failures;
  char why[160];
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  dash_refresh_info info = {0};
  for (uint64_t step = 1; step <= 100; step++) {
    int rc = dash_step(w->s, step, NULL);
    if (rc == 0)
      rc = dash_sync(w->s, -1, &info);
    if (rc != 1 || info.step != step ||
        dash_stack_result(w->s)[0] != (float)step) {
      if (w->failures++ == 0)
        snprintf(w->why, sizeof(w->why), "step %llu: rc %d, step %llu: %s",
                 (unsigned long long)step, rc, (unsigned long long)info.step,
                 dash_last_error());
    }
  }
  return NULL;
}

START_TEST(test_client_threads_share_one_connection) {
  struct fake *f = fake_new();
  /* Pushes come late, often read by the other thread's wait. */
  f->push = PUSH_WHEN_IDLE;
  dash_client *c = connect_to(f);
  struct worker w[3] = {{0}};
  pthread_t t[3];
  for (int i = 0; i < 3; i++)
    w[i].s = new_stack(c, 2, 2);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_msg(w[i].failures == 0, "thread %d: %d failures, first %s", i,
                  w[i].failures, w[i].why);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

/* ---- the daemon goes away ----------------------------------------------- */

START_TEST(test_client_daemon_closing_mid_request_gives_disconnected) {
  struct fake *f = fake_new();
  f->close_on = DASHPB__ENVELOPE__BODY_REFRESH;
  sigpipe_kills();
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 2, 2);
  dash_stack *s2 = new_stack(c, 2, 2);
  ck_assert_int_eq(dash_step(s, 1, NULL), DASH_E_DISCONNECTED);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "closed"));
  /* Every later call says the same, without a signal or a wait. */
  ck_assert_int_eq(dash_step(s, 2, NULL), DASH_E_DISCONNECTED);
  ck_assert_int_eq(dash_sync(s, -1, NULL), DASH_E_DISCONNECTED);
  ck_assert_int_eq(dash_sync(s, 0, NULL), DASH_E_DISCONNECTED);
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  dash_stack *s3 = NULL;
  dash_stack_options o = DASH_STACK_OPTIONS_INIT;
  o.num_blocks = o.block_size = 2;
  ck_assert_int_eq(dash_stack_create(c, &o, &s3), DASH_E_DISCONNECTED);
  ck_assert_ptr_null(s3);
  ck_assert_int_eq(dash_stack_destroy(s), 0);
  (void)s2; /* freed by dash_disconnect */
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_writes_to_a_closed_socket_raise_no_sigpipe) {
  struct fake *f = fake_new();
  f->close_after_hello = 1;
  sigpipe_kills();
  dash_client *c = connect_to(f);
  /* The daemon is gone before the client writes again: the write fails
   * with EPIPE, which must not become a signal. */
  fake_join(f);
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_daemon_closing_during_hello_gives_disconnected) {
  struct fake *f = fake_new();
  dash_client *c = (dash_client *)&c;
  f->close_on = DASHPB__ENVELOPE__BODY_HELLO;
  fake_start(f);
  ck_assert_int_eq(dash_connect(f->path, &c), DASH_E_DISCONNECTED);
  ck_assert_ptr_null(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_refused_hello_returns_the_daemon_status) {
  struct fake *f = fake_new();
  dash_client *c = NULL;
  f->hello_status = DASH_E_PERMISSION;
  fake_start(f);
  ck_assert_int_eq(dash_connect(f->path, &c), DASH_E_PERMISSION);
  ck_assert_ptr_null(c);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "uid 4242"));
  ck_assert_ptr_nonnull(strstr(dash_last_error(), f->path));
  fake_finish(f);

  f = fake_new();
  f->hello_version = 2;
  fake_start(f);
  ck_assert_int_eq(dash_connect(f->path, &c), DASH_E_VERSION);
  ck_assert_ptr_null(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_silent_daemon_times_out_then_disconnected) {
  struct fake *f = fake_new();
  f->silent_on = DASHPB__ENVELOPE__BODY_PING;
  dash_client *c = connect_to(f);
  c->reply_timeout_ms = 200;
  double t0 = dash__now_ms();
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_TIMEOUT);
  double ms = dash__now_ms() - t0;
  ck_assert_msg(ms >= 190 && ms < 5000, "waited %.1f ms", ms);
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_sync_wait_ends_when_daemon_dies) {
  struct fake *f = fake_new();
  f->push = PUSH_NEVER;
  f->close_after_refresh_ms = 100;
  dash_client *c = connect_to(f);
  dash_stack *s = new_stack(c, 1, 2);
  ck_assert_int_eq(dash_step(s, 1, NULL), 0);
  double t0 = dash__now_ms();
  ck_assert_int_eq(dash_sync(s, -1, NULL), DASH_E_DISCONNECTED);
  ck_assert(dash__now_ms() - t0 < 5000);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

START_TEST(test_client_oversized_frame_ends_the_connection) {
  struct fake *f = fake_new();
  f->oversized_ping = 1;
  dash_client *c = connect_to(f);
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "bad frame"));
  ck_assert_int_eq(dash_ping(c, NULL), DASH_E_DISCONNECTED);
  dash_disconnect(c);
  fake_finish(f);
}
END_TEST

static Suite *client_suite(void) {
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_client_default_socket_path_follows_environment);
  tcase_add_test(tc, test_client_connect_without_daemon_is_disconnected);
  tcase_add_test(tc, test_client_connect_rejects_bad_paths);
  tcase_add_test(tc, test_client_connect_reads_the_daemon_hello);
  tcase_add_test(tc, test_client_bad_stack_options_are_refused_before_sending);
  tcase_add_test(tc, test_client_stack_memory_is_sealed_shared_and_sized);
  tcase_add_test(tc, test_client_sync_adopts_the_pushed_slot);
  tcase_add_test(tc, test_client_sync_times_out_while_refresh_computes);
  tcase_add_test(tc, test_client_failed_refresh_is_reported_once);
  tcase_add_test(tc, test_client_push_between_request_and_reply_is_kept);
  tcase_add_test(tc, test_client_threads_share_one_connection);
  suite_add_tcase(s, tc);

  tc = tcase_create("disconnect");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_client_daemon_closing_mid_request_gives_disconnected);
  tcase_add_test(tc, test_client_writes_to_a_closed_socket_raise_no_sigpipe);
  tcase_add_test(tc,
                 test_client_daemon_closing_during_hello_gives_disconnected);
  tcase_add_test(tc, test_client_refused_hello_returns_the_daemon_status);
  tcase_add_test(tc, test_client_silent_daemon_times_out_then_disconnected);
  tcase_add_test(tc, test_client_sync_wait_ends_when_daemon_dies);
  tcase_add_test(tc, test_client_oversized_frame_ends_the_connection);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(client_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
