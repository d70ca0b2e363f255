/* Unit tests of the framing of the control protocol (proto/wire.h):
 * frames and their fds over a socketpair, reassembly, and every way a
 * peer can send a bad frame. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dash/status.h"
#include "wire.h"

#define TEST_TIMEOUT_S 30

/* Not a real message: set before a call that must reset it to NULL. */
static Dashpb__Envelope g_sentinel = DASHPB__ENVELOPE__INIT;

/* ---- helpers ---- */

static void make_pair(int sv[2]) {
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* A memfd of size bytes, without close-on-exec, so that the receiver's
 * flag is its own doing. */
static int make_memfd(size_t size) {
  int fd = memfd_create("test_wire", MFD_ALLOW_SEALING);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
  return fd;
}

/* Open fds of this process (the count includes the directory's own fd,
 * the same on every call). */
static int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  ck_assert_ptr_nonnull(d);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static int same_file(int a, int b) {
  struct stat sa, sb;
  ck_assert_int_eq(fstat(a, &sa), 0);
  ck_assert_int_eq(fstat(b, &sb), 0);
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void close_all(const int *fds, int n) {
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(close(fds[i]), 0);
}

/* Writes all of buf with one sendmsg per call, fds (any number) on the
 * first one: a peer that does not go through dash__wire_send. */
static void send_raw(int sock, const void *buf, size_t len, const int *fds,
                     int nfds) {
  size_t off = 0;
  while (off < len) {
    union {
      char buf[CMSG_SPACE(253 * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {(char *)buf + off, len - off};
    struct msghdr msg;
    ssize_t n;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (off == 0 && nfds > 0) {
      struct cmsghdr *c;
      memset(&ctl, 0, sizeof(ctl));
      msg.msg_control = ctl.buf;
      msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
      c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
      memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    ck_assert_int_gt(n, 0);
    off += (size_t)n;
  }
}

/* Reads until the next frame is complete and returns it; fails the test
 * on any error. */
static Dashpb__Envelope *recv_one(dash__wire_reader *r, int sock, int *fds,
                                  int *nfds) {
  for (;;) {
    Dashpb__Envelope *env = NULL;
    int rc = dash__wire_reader_next(r, &env, fds, nfds);
    if (rc == 1) {
      ck_assert_ptr_nonnull(env);
      return env;
    }
    ck_assert_msg(rc == 0, "reader_next: %s (%s)", dash_status_name(rc),
                  dash_last_error());
    rc = dash__wire_reader_fill(r, sock);
    ck_assert_msg(rc > 0, "reader_fill: %s (%s)", dash_status_name(rc),
                  dash_last_error());
  }
}

static Dashpb__Envelope ping_envelope(uint64_t request_id) {
  static Dashpb__Ping ping = DASHPB__PING__INIT;
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  env.version = DASH_WIRE_VERSION;
  env.request_id = request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_PING;
  env.ping = &ping;
  return env;
}

static void send_ping(int sock, uint64_t request_id, const int *fds, int nfds) {
  Dashpb__Envelope env = ping_envelope(request_id);
  int rc = dash__wire_send(sock, &env, fds, nfds);
  ck_assert_msg(rc == 0, "send: %s (%s)", dash_status_name(rc),
                dash_last_error());
}

static void expect_ping(dash__wire_reader *r, int sock, uint64_t request_id,
                        int want_nfds) {
  int fds[DASH_WIRE_MAX_FDS], nfds = -1;
  Dashpb__Envelope *env = recv_one(r, sock, fds, &nfds);
  ck_assert_int_eq(env->body_case, DASHPB__ENVELOPE__BODY_PING);
  ck_assert_uint_eq(env->request_id, request_id);
  ck_assert_int_eq(nfds, want_nfds);
  close_all(fds, nfds);
  dashpb__envelope__free_unpacked(env, NULL);
}

/* Packs env into a new buffer, for comparing messages byte for byte. */
static uint8_t *pack(const Dashpb__Envelope *env, size_t *len) {
  uint8_t *buf;
  *len = dashpb__envelope__get_packed_size(env);
  buf = malloc(*len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(dashpb__envelope__pack(env, buf), *len);
  return buf;
}

/* ---- core ---- */

/* Every body of the oneof, each with fields away from their defaults. */
static Dashpb__StackOptions g_opts = DASHPB__STACK_OPTIONS__INIT;
static Dashpb__Hello g_hello = DASHPB__HELLO__INIT;
static Dashpb__HelloReply g_hello_reply = DASHPB__HELLO_REPLY__INIT;
static Dashpb__RegisterStack g_register = DASHPB__REGISTER_STACK__INIT;
static Dashpb__RegisterStackReply g_register_reply =
    DASHPB__REGISTER_STACK_REPLY__INIT;
static Dashpb__Refresh g_refresh = DASHPB__REFRESH__INIT;
static Dashpb__RefreshReply g_refresh_reply = DASHPB__REFRESH_REPLY__INIT;
static Dashpb__ResultInfo g_result = DASHPB__RESULT_INFO__INIT;
static Dashpb__RefreshDone g_refresh_done = DASHPB__REFRESH_DONE__INIT;
static Dashpb__Sync g_sync = DASHPB__SYNC__INIT;
static Dashpb__SyncReply g_sync_reply = DASHPB__SYNC_REPLY__INIT;
static Dashpb__Unregister g_unregister = DASHPB__UNREGISTER__INIT;
static Dashpb__Ping g_ping = DASHPB__PING__INIT;
static Dashpb__Status g_status = DASHPB__STATUS__INIT;
static Dashpb__Metrics g_metrics = DASHPB__METRICS__INIT;
static Dashpb__MetricsReply g_metrics_reply = {
    PROTOBUF_C_MESSAGE_INIT(&dashpb__metrics_reply__descriptor),
    "# TYPE dashd_clients gauge\ndashd_clients 3\n"};
static Dashpb__StackStatus g_stack_status = DASHPB__STACK_STATUS__INIT;
static Dashpb__StackStatus *g_stack_list[2] = {&g_stack_status,
                                               &g_stack_status};
static Dashpb__StatusReply g_status_reply = DASHPB__STATUS_REPLY__INIT;
static uint64_t g_by_status[3] = {7, 0, 1ull << 40};

static void fill_bodies(void) {
  g_opts.num_blocks = 96;
  g_opts.block_size = 1024;
  g_opts.root = 4;
  g_opts.method = 1;
  g_opts.scaling = 2;
  g_opts.max_steps = 10;
  g_opts.tol = 1e-6;
  g_opts.eps = 1e-12;
  g_opts.precision = 3;
  g_opts.fallback = 1;
  g_hello.protocol_version = DASH_WIRE_VERSION;
  g_hello.client_name = "trainer rank 3";
  g_hello_reply.protocol_version = DASH_WIRE_VERSION;
  g_hello_reply.daemon_version = "0.1.0";
  g_hello_reply.backend = "cpu";
  g_hello_reply.device = "16 cores";
  g_hello_reply.max_frame = DASH_WIRE_MAX_FRAME;
  g_register.options = &g_opts;
  g_register.transport = DASHPB__TRANSPORT__TRANSPORT_SHM;
  g_register.stats_bytes = 96ull << 22;
  g_register.result_bytes = 192ull << 22;
  g_register_reply.stack_id = 42;
  g_refresh.stack_id = 42;
  g_refresh.step = 1000;
  g_refresh_reply.coalesced = 1;
  g_refresh_reply.queued_behind = 1;
  g_result.generation = 5;
  g_result.step = 1000;
  g_result.slot = 1;
  g_result.compute_ms = 12.5;
  g_result.method = 2;
  g_result.max_iterations = 9;
  g_result.n_blocks_by_status = 3;
  g_result.blocks_by_status = g_by_status;
  g_result.status = DASH_E_LAPACK;
  g_result.message = "block 3 fell back to EVD";
  g_refresh_done.stack_id = 42;
  g_refresh_done.result = &g_result;
  g_sync.stack_id = 42;
  g_sync_reply.adopted = 1;
  g_sync_reply.held = &g_result;
  g_sync_reply.in_flight = 1;
  g_unregister.stack_id = 42;
  g_stack_status.stack_id = 42;
  g_stack_status.owner_pid = 4242;
  g_stack_status.owner_uid = 1000;
  g_stack_status.num_blocks = 96;
  g_stack_status.block_size = 1024;
  g_stack_status.method = 1;
  g_stack_status.generation = 5;
  g_stack_status.last_refresh_ms = 3.25;
  g_stack_status.last_step_requested = 1001;
  g_stack_status.last_step_done = 1000;
  g_stack_status.refreshes = 6;
  g_stack_status.coalesced = 1;
  g_stack_status.failures = 2;
  g_status_reply.version = "0.1.0";
  g_status_reply.backend = "cpu";
  g_status_reply.device = "16 cores";
  g_status_reply.uptime_s = 3600.5;
  g_status_reply.clients = 3;
  g_status_reply.n_stacks = 2;
  g_status_reply.stacks = g_stack_list;
}

/* Sets body i (0-based, in field order) of env; returns its case. */
static Dashpb__Envelope__BodyCase set_body(Dashpb__Envelope *env, int i) {
  static const Dashpb__Envelope__BodyCase kCases[] = {
      DASHPB__ENVELOPE__BODY_HELLO,
      DASHPB__ENVELOPE__BODY_HELLO_REPLY,
      DASHPB__ENVELOPE__BODY_REGISTER_STACK,
      DASHPB__ENVELOPE__BODY_REGISTER_STACK_REPLY,
      DASHPB__ENVELOPE__BODY_REFRESH,
      DASHPB__ENVELOPE__BODY_REFRESH_REPLY,
      DASHPB__ENVELOPE__BODY_REFRESH_DONE,
      DASHPB__ENVELOPE__BODY_SYNC,
      DASHPB__ENVELOPE__BODY_SYNC_REPLY,
      DASHPB__ENVELOPE__BODY_UNREGISTER,
      DASHPB__ENVELOPE__BODY_PING,
      DASHPB__ENVELOPE__BODY_STATUS_REQUEST,
      DASHPB__ENVELOPE__BODY_STATUS_REPLY,
      DASHPB__ENVELOPE__BODY_METRICS,
      DASHPB__ENVELOPE__BODY_METRICS_REPLY,
  };
  ck_assert_int_lt(i, (int)(sizeof(kCases) / sizeof(kCases[0])));
  env->body_case = kCases[i];
  switch (kCases[i]) {
    case DASHPB__ENVELOPE__BODY_HELLO:
      env->hello = &g_hello;
      break;
    case DASHPB__ENVELOPE__BODY_HELLO_REPLY:
      env->hello_reply = &g_hello_reply;
      break;
    case DASHPB__ENVELOPE__BODY_REGISTER_STACK:
      env->register_stack = &g_register;
      break;
    case DASHPB__ENVELOPE__BODY_REGISTER_STACK_REPLY:
      env->register_stack_reply = &g_register_reply;
      break;
    case DASHPB__ENVELOPE__BODY_REFRESH:
      env->refresh = &g_refresh;
      break;
    case DASHPB__ENVELOPE__BODY_REFRESH_REPLY:
      env->refresh_reply = &g_refresh_reply;
      break;
    case DASHPB__ENVELOPE__BODY_REFRESH_DONE:
      env->refresh_done = &g_refresh_done;
      break;
    case DASHPB__ENVELOPE__BODY_SYNC:
      env->sync = &g_sync;
      break;
    case DASHPB__ENVELOPE__BODY_SYNC_REPLY:
      env->sync_reply = &g_sync_reply;
      break;
    case DASHPB__ENVELOPE__BODY_UNREGISTER:
      env->unregister = &g_unregister;
      break;
    case DASHPB__ENVELOPE__BODY_PING:
      env->ping = &g_ping;
      break;
    case DASHPB__ENVELOPE__BODY_STATUS_REQUEST:
      env->status_request = &g_status;
      break;
    case DASHPB__ENVELOPE__BODY_STATUS_REPLY:
      env->status_reply = &g_status_reply;
      break;
    case DASHPB__ENVELOPE__BODY_METRICS:
      env->metrics = &g_metrics;
      break;
    case DASHPB__ENVELOPE__BODY_METRICS_REPLY:
      env->metrics_reply = &g_metrics_reply;
      break;
    default:
      ck_abort_msg("unhandled body %d", (int)kCases[i]);
  }
  return kCases[i];
}

/* The members of Envelope's oneof, read from its descriptor, so a body
 * added to dash.proto fails this test until set_body knows it. */
static int body_kinds(void) {
  int n = 0;
  for (unsigned i = 0; i < dashpb__envelope__descriptor.n_fields; i++)
    if (dashpb__envelope__descriptor.fields[i].flags &
        PROTOBUF_C_FIELD_FLAG_ONEOF)
      n++;
  return n;
}

START_TEST(test_wire_round_trips_every_body_kind) {
  int sv[2], kinds = body_kinds();
  dash__wire_reader r;
  fill_bodies();
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  ck_assert_int_eq(kinds, 15);
  /* All frames go out before any is read, so reads span frames. */
  for (int i = 0; i < kinds; i++) {
    Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
    env.version = DASH_WIRE_VERSION;
    env.request_id = 1000 + (uint64_t)i;
    env.status = i % 2 ? DASH_E_NOT_FOUND : 0;
    env.message = i % 2 ? "no stack 42" : "";
    set_body(&env, i);
    ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 0), 0);
  }
  for (int i = 0; i < kinds; i++) {
    Dashpb__Envelope want = DASHPB__ENVELOPE__INIT;
    int fds[DASH_WIRE_MAX_FDS], nfds = -1;
    size_t want_len, got_len;
    uint8_t *want_buf, *got_buf;
    Dashpb__Envelope *got = recv_one(&r, sv[1], fds, &nfds);
    want.version = DASH_WIRE_VERSION;
    want.request_id = 1000 + (uint64_t)i;
    want.status = i % 2 ? DASH_E_NOT_FOUND : 0;
    want.message = i % 2 ? "no stack 42" : "";
    ck_assert_int_eq(got->body_case, set_body(&want, i));
    ck_assert_int_eq(nfds, 0);
    ck_assert_uint_eq(got->version, DASH_WIRE_VERSION);
    ck_assert_uint_eq(got->request_id, want.request_id);
    ck_assert_int_eq(got->status, want.status);
    ck_assert_str_eq(got->message, want.message);
    /* protobuf-c packs fields in order, so equal messages pack equally. */
    want_buf = pack(&want, &want_len);
    got_buf = pack(got, &got_len);
    ck_assert_uint_gt(want_len, 0);
    ck_assert_uint_eq(got_len, want_len);
    ck_assert_mem_eq(got_buf, want_buf, want_len);
    free(want_buf);
    free(got_buf);
    dashpb__envelope__free_unpacked(got, NULL);
  }
  /* A few fields read back explicitly, nested ones included. */
  {
    Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
    Dashpb__Envelope *got;
    set_body(&env, 6); /* refresh_done */
    ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 0), 0);
    got = recv_one(&r, sv[1], NULL, NULL);
    ck_assert_int_eq(got->body_case, DASHPB__ENVELOPE__BODY_REFRESH_DONE);
    ck_assert_ptr_nonnull(got->refresh_done->result);
    ck_assert_uint_eq(got->refresh_done->result->n_blocks_by_status, 3);
    ck_assert_uint_eq(got->refresh_done->result->blocks_by_status[2],
                      1ull << 40);
    ck_assert_int_eq(got->refresh_done->result->status, DASH_E_LAPACK);
    ck_assert_str_eq(got->refresh_done->result->message,
                     "block 3 fell back to EVD");
    dashpb__envelope__free_unpacked(got, NULL);
  }
  ck_assert_int_eq(r.len, 0);
  ck_assert_int_eq(r.nfds, 0);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* Frame orders for the fd attribution test: the number of memfds each
 * frame carries, -1 ending the list. */
static const int kFdOrders[][6] = {
    {2, 0, -1}, /* the brief's case */
    {0, 2, -1}, /* Linux glues the first frame in front of the fds */
    {0, 0, 1, 0, 2, -1}, {3, 1, 0, 4, -1}, {1, 1, 1, 1, 1, -1},
};

START_TEST(test_wire_fds_arrive_with_their_frame) {
  const int *order = kFdOrders[_i];
  int sv[2], sent[8][DASH_WIRE_MAX_FDS], nframes = 0;
  int before = count_open_fds();
  dash__wire_reader r;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  /* All frames go back to back before the reader looks. */
  for (int f = 0; order[f] >= 0; f++, nframes++) {
    for (int k = 0; k < order[f]; k++)
      sent[f][k] = make_memfd(4096 * (size_t)(f * 8 + k + 1));
    send_ping(sv[0], 100 + (uint64_t)f, sent[f], order[f]);
  }
  for (int f = 0; f < nframes; f++) {
    int fds[DASH_WIRE_MAX_FDS], nfds = -1;
    Dashpb__Envelope *env = recv_one(&r, sv[1], fds, &nfds);
    ck_assert_uint_eq(env->request_id, 100 + (uint64_t)f);
    ck_assert_int_eq(nfds, order[f]);
    for (int k = 0; k < nfds; k++) {
      struct stat st;
      ck_assert_msg(same_file(fds[k], sent[f][k]),
                    "frame %d fd %d is not the one sent", f, k);
      ck_assert_int_eq(fstat(fds[k], &st), 0);
      ck_assert_int_eq(st.st_size, 4096 * (f * 8 + k + 1));
      ck_assert_int_ne(fcntl(fds[k], F_GETFD) & FD_CLOEXEC, 0);
    }
    close_all(fds, nfds);
    close_all(sent[f], order[f]);
    dashpb__envelope__free_unpacked(env, NULL);
  }
  ck_assert_int_eq(r.nfds, 0);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
  ck_assert_int_eq(count_open_fds(), before);
}
END_TEST

START_TEST(test_wire_reassembles_one_byte_writes) {
  int sv[2], memfds[2], fds[DASH_WIRE_MAX_FDS], nfds = -1;
  uint8_t *frame[2];
  size_t len[2];
  dash__wire_reader r;
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  fill_bodies();
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  set_body(&env, 12); /* status_reply, a few hundred bytes */
  env.request_id = 1;
  ck_assert_int_eq(
      dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame[0], &len[0]), 0);
  env.request_id = 2;
  ck_assert_int_eq(
      dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame[1], &len[1]), 0);
  memfds[0] = make_memfd(4096);
  memfds[1] = make_memfd(8192);
  /* Frame 1 carries no fds, frame 2 two, on its first byte. */
  for (int f = 0; f < 2; f++) {
    for (size_t i = 0; i < len[f]; i++) {
      Dashpb__Envelope *got = NULL;
      int rc;
      send_raw(sv[0], frame[f] + i, 1, memfds, f == 1 && i == 0 ? 2 : 0);
      ck_assert_int_eq(dash__wire_reader_fill(&r, sv[1]), 1);
      rc = dash__wire_reader_next(&r, &got, fds, &nfds);
      if (i + 1 < len[f]) {
        ck_assert_int_eq(rc, 0);
        ck_assert_ptr_null(got);
        continue;
      }
      ck_assert_int_eq(rc, 1);
      ck_assert_uint_eq(got->request_id, (uint64_t)f + 1);
      ck_assert_int_eq(got->body_case, DASHPB__ENVELOPE__BODY_STATUS_REPLY);
      ck_assert_uint_eq(got->status_reply->n_stacks, 2);
      ck_assert_int_eq(nfds, f == 1 ? 2 : 0);
      if (f == 1) {
        ck_assert(same_file(fds[0], memfds[0]));
        ck_assert(same_file(fds[1], memfds[1]));
      }
      close_all(fds, nfds);
      dashpb__envelope__free_unpacked(got, NULL);
    }
  }
  ck_assert_uint_eq(r.consumed, len[0] + len[1]);
  close_all(memfds, 2);
  free(frame[0]);
  free(frame[1]);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_send_some_resumes_after_would_block) {
  int sv[2], memfd = make_memfd(4096), fds[DASH_WIRE_MAX_FDS], nfds = -1;
  size_t len, off = 0, msg_len = DASH_WIRE_MAX_FRAME - 64;
  uint8_t *frame;
  char *msg = malloc(msg_len + 1);
  dash__wire_reader r;
  Dashpb__Envelope env = ping_envelope(9), *got;
  ck_assert_ptr_nonnull(msg);
  memset(msg, 'x', msg_len);
  msg[msg_len] = '\0';
  env.message = msg;
  make_pair(sv);
  ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
  /* A small send buffer, whatever the host's default. */
  ck_assert_int_eq(
      setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){65536}, sizeof(int)), 0);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  ck_assert_int_eq(dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame, &len),
                   0);
  ck_assert_uint_le(len, 4 + DASH_WIRE_MAX_FRAME);
  /* Almost 1 MiB does not fit that buffer: the send must stop. */
  ck_assert_int_eq(dash__wire_send_some(sv[0], frame, len, &off, &memfd, 1), 0);
  ck_assert_uint_gt(off, 0);
  ck_assert_uint_lt(off, len);
  while (off < len) {
    ck_assert_int_gt(dash__wire_reader_fill(&r, sv[1]), 0);
    ck_assert_int_eq(dash__wire_send_some(sv[0], frame, len, &off, &memfd, 1),
                     0);
  }
  got = recv_one(&r, sv[1], fds, &nfds);
  ck_assert_uint_eq(got->request_id, 9);
  ck_assert_uint_eq(strlen(got->message), msg_len);
  ck_assert_int_eq(nfds, 1);
  ck_assert(same_file(fds[0], memfd));
  /* The buffer never outgrew a frame and a read, and is given back. */
  ck_assert_uint_eq(r.cap, 0);
  close(fds[0]);
  dashpb__envelope__free_unpacked(got, NULL);
  /* Nothing left: a second call with everything sent is a no-op. */
  ck_assert_int_eq(dash__wire_send_some(sv[0], frame, len, &off, NULL, 0), 0);
  ck_assert_uint_eq(off, len);
  free(frame);
  free(msg);
  close(memfd);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_received_fds_are_close_on_exec) {
  int sv[2], memfds[DASH_WIRE_MAX_FDS], fds[DASH_WIRE_MAX_FDS], nfds = -1;
  dash__wire_reader r;
  Dashpb__Envelope *got;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  for (int k = 0; k < DASH_WIRE_MAX_FDS; k++) {
    memfds[k] = make_memfd(4096);
    ck_assert_int_eq(fcntl(memfds[k], F_GETFD) & FD_CLOEXEC, 0);
  }
  send_ping(sv[0], 5, memfds, DASH_WIRE_MAX_FDS);
  got = recv_one(&r, sv[1], fds, &nfds);
  ck_assert_int_eq(nfds, DASH_WIRE_MAX_FDS);
  for (int k = 0; k < nfds; k++)
    ck_assert_int_ne(fcntl(fds[k], F_GETFD) & FD_CLOEXEC, 0);
  close_all(fds, nfds);
  close_all(memfds, DASH_WIRE_MAX_FDS);
  dashpb__envelope__free_unpacked(got, NULL);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_other_version_is_still_returned) {
  int sv[2];
  dash__wire_reader r;
  Dashpb__Envelope env = ping_envelope(3), *got;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  env.version = DASH_WIRE_VERSION + 6;
  ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 0), 0);
  got = recv_one(&r, sv[1], NULL, NULL);
  ck_assert_uint_eq(got->version, DASH_WIRE_VERSION + 6);
  ck_assert_uint_eq(got->request_id, 3);
  dashpb__envelope__free_unpacked(got, NULL);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_frames_without_fds_may_omit_the_fd_array) {
  int sv[2], memfds[2], before;
  dash__wire_reader r;
  Dashpb__Envelope *got;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  before = count_open_fds();
  memfds[0] = make_memfd(4096);
  memfds[1] = make_memfd(4096);
  send_ping(sv[0], 4, memfds, 2);
  close_all(memfds, 2);
  /* A caller that takes no fds gets the frame and the fds are closed. */
  got = recv_one(&r, sv[1], NULL, NULL);
  ck_assert_uint_eq(got->request_id, 4);
  dashpb__envelope__free_unpacked(got, NULL);
  ck_assert_int_eq(count_open_fds(), before);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_wire_rejects_oversized_length_prefix) {
  static const uint32_t kPrefixes[] = {0xFFFFFFFFu, DASH_WIRE_MAX_FRAME + 1};
  uint32_t n = kPrefixes[_i];
  uint8_t head[4 + 64];
  int sv[2];
  size_t cap;
  dash__wire_reader r;
  Dashpb__Envelope *env = &g_sentinel;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  memset(head, 0xAB, sizeof(head));
  head[0] = (uint8_t)n;
  head[1] = (uint8_t)(n >> 8);
  head[2] = (uint8_t)(n >> 16);
  head[3] = (uint8_t)(n >> 24);
  send_raw(sv[0], head, sizeof(head), NULL, 0);
  ck_assert_int_gt(dash__wire_reader_fill(&r, sv[1]), 0);
  ck_assert_int_eq(dash__wire_reader_next(&r, &env, NULL, NULL),
                   DASH_E_TOO_LARGE);
  ck_assert_ptr_null(env);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "exceeds"));
  /* Nothing was allocated for the announced payload. */
  cap = r.cap;
  ck_assert_uint_le(cap, 64 * 1024);
  /* More data changes nothing: the reader neither grows nor reads. */
  send_raw(sv[0], head, sizeof(head), NULL, 0);
  ck_assert_int_eq(dash__wire_reader_fill(&r, sv[1]), DASH_E_TOO_LARGE);
  ck_assert_int_eq(dash__wire_reader_next(&r, &env, NULL, NULL),
                   DASH_E_TOO_LARGE);
  ck_assert_uint_eq(r.cap, cap);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* An Envelope that packs to exactly len bytes (4 <= len < 132): a
 * request id of one byte's varint, then a message string. */
static Dashpb__Envelope sized_envelope(size_t len, char *text) {
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  env.request_id = 1;         /* 2 bytes */
  memset(text, 'm', len - 4); /* tag, length, then the text */
  text[len - 4] = '\0';
  env.message = text;
  ck_assert_uint_eq(dashpb__envelope__get_packed_size(&env), len);
  return env;
}

START_TEST(test_wire_frame_limit_is_inclusive) {
  const uint32_t max = 64;
  char text[128];
  uint8_t *frame = NULL;
  size_t len = 0;
  int sv[2];
  dash__wire_reader r;
  Dashpb__Envelope env = sized_envelope(max, text), *got = NULL;
  make_pair(sv);
  dash__wire_reader_init(&r, max);
  /* Exactly max_frame bytes is allowed, both ways. */
  ck_assert_int_eq(dash__wire_encode(&env, max, &frame, &len), 0);
  ck_assert_uint_eq(len, 4 + max);
  send_raw(sv[0], frame, len, NULL, 0);
  free(frame);
  got = recv_one(&r, sv[1], NULL, NULL);
  ck_assert_str_eq(got->message, text);
  dashpb__envelope__free_unpacked(got, NULL);
  /* One byte more is refused by the encoder and by the reader. */
  env = sized_envelope(max + 1, text);
  ck_assert_int_eq(dash__wire_encode(&env, max, &frame, &len),
                   DASH_E_TOO_LARGE);
  ck_assert_ptr_null(frame);
  ck_assert_int_eq(dash__wire_encode(&env, max + 1, &frame, &len), 0);
  send_raw(sv[0], frame, len, NULL, 0);
  free(frame);
  ck_assert_int_gt(dash__wire_reader_fill(&r, sv[1]), 0);
  ck_assert_int_eq(dash__wire_reader_next(&r, &got, NULL, NULL),
                   DASH_E_TOO_LARGE);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_encode_rejects_envelope_over_max_frame) {
  size_t big = 2u << 20;
  char *msg = malloc(big + 1);
  uint8_t *frame = (uint8_t *)&big;
  size_t len = 1;
  int sv[2];
  uint8_t probe;
  Dashpb__Envelope env = ping_envelope(1);
  ck_assert_ptr_nonnull(msg);
  memset(msg, 'z', big);
  msg[big] = '\0';
  env.message = msg;
  ck_assert_int_eq(dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame, &len),
                   DASH_E_TOO_LARGE);
  ck_assert_ptr_null(frame);
  ck_assert_uint_eq(len, 0);
  /* dash__wire_send refuses it too, and sends nothing. */
  make_pair(sv);
  ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 0), DASH_E_TOO_LARGE);
  ck_assert_int_eq(recv(sv[1], &probe, 1, MSG_DONTWAIT), -1);
  ck_assert_int_eq(errno, EAGAIN);
  free(msg);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* Too many fds on one frame: one too many and 100 (held, then dropped by
 * reader_next), and 253 (all Linux passes at once, more than a reader
 * holds: reader_fill reports). The stream carries on and no fd stays
 * open. */
static const int kTooManyFds[] = {DASH_WIRE_MAX_FDS + 1, 100, 253};

START_TEST(test_wire_too_many_fds_on_a_frame_are_all_closed) {
  int n = kTooManyFds[_i], sv[2], before, rc;
  int *memfds = calloc((size_t)n, sizeof(int));
  uint8_t *frame;
  size_t len;
  dash__wire_reader r;
  Dashpb__Envelope env = ping_envelope(1), *got = &g_sentinel;
  int fds[DASH_WIRE_MAX_FDS], nfds = -1;
  ck_assert_ptr_nonnull(memfds);
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  before = count_open_fds();
  for (int k = 0; k < n; k++)
    memfds[k] = make_memfd(4096);
  ck_assert_int_eq(dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame, &len),
                   0);
  send_raw(sv[0], frame, len, memfds, n);
  close_all(memfds, n);
  free(frame);
  send_ping(sv[0], 2, NULL, 0);
  /* The bad frame is reported once, by whichever call sees it first. */
  rc = dash__wire_reader_fill(&r, sv[1]);
  if (rc > 0) {
    ck_assert_int_le(n, 2 * DASH_WIRE_MAX_FDS - 1);
    rc = dash__wire_reader_next(&r, &got, fds, &nfds);
    ck_assert_ptr_null(got);
    ck_assert_int_eq(nfds, 0);
  }
  ck_assert_int_eq(rc, DASH_E_PROTOCOL);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "fds"));
  /* The next frame decodes: the stream stayed in sync. */
  expect_ping(&r, sv[1], 2, 0);
  ck_assert_int_eq(r.nfds, 0);
  ck_assert_int_eq(count_open_fds(), before);
  free(memfds);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_send_rejects_bad_fd_counts) {
  int sv[2], fds[DASH_WIRE_MAX_FDS + 1] = {0};
  size_t off = 0;
  uint8_t byte = 0;
  Dashpb__Envelope env = ping_envelope(1);
  make_pair(sv);
  ck_assert_int_eq(dash__wire_send(sv[0], &env, fds, DASH_WIRE_MAX_FDS + 1),
                   DASH_E_INVALID);
  ck_assert_int_eq(dash__wire_send(sv[0], &env, fds, -1), DASH_E_INVALID);
  ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 1), DASH_E_INVALID);
  ck_assert_int_eq(
      dash__wire_send_some(sv[0], &byte, 1, &off, fds, DASH_WIRE_MAX_FDS + 1),
      DASH_E_INVALID);
  off = 2;
  ck_assert_int_eq(dash__wire_send_some(sv[0], &byte, 1, &off, NULL, 0),
                   DASH_E_INVALID);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* ---- bad input ---- */

START_TEST(test_wire_garbage_payload_is_dropped_and_stream_resyncs) {
  uint8_t frame[4 + 48];
  unsigned seed = 12345;
  int sv[2], memfd, before, fds[DASH_WIRE_MAX_FDS], nfds = -1;
  dash__wire_reader r;
  Dashpb__Envelope *got = &g_sentinel;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  before = count_open_fds();
  /* Random bytes until protobuf-c refuses them (most do at once). */
  for (;;) {
    Dashpb__Envelope *e;
    for (size_t i = 4; i < sizeof(frame); i++)
      frame[i] = (uint8_t)(rand_r(&seed) >> 7);
    e = dashpb__envelope__unpack(NULL, sizeof(frame) - 4, frame + 4);
    if (e == NULL)
      break;
    dashpb__envelope__free_unpacked(e, NULL);
  }
  frame[0] = sizeof(frame) - 4;
  frame[1] = frame[2] = frame[3] = 0;
  /* The garbage carries an fd, which must not leak. */
  memfd = make_memfd(4096);
  send_raw(sv[0], frame, sizeof(frame), &memfd, 1);
  close(memfd);
  send_ping(sv[0], 77, NULL, 0);
  ck_assert_int_gt(dash__wire_reader_fill(&r, sv[1]), 0);
  ck_assert_int_eq(dash__wire_reader_next(&r, &got, fds, &nfds),
                   DASH_E_PROTOCOL);
  ck_assert_ptr_null(got);
  ck_assert_int_eq(nfds, 0);
  expect_ping(&r, sv[1], 77, 0);
  ck_assert_int_eq(count_open_fds(), before);
  dash__wire_reader_free(&r);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_truncated_frame_then_eof_is_disconnected) {
  uint8_t part[4 + 10] = {100, 0, 0, 0};
  int sv[2];
  dash__wire_reader r;
  Dashpb__Envelope *got = NULL;
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  send_raw(sv[0], part, sizeof(part), NULL, 0);
  close(sv[0]);
  ck_assert_int_eq(dash__wire_reader_fill(&r, sv[1]), (int)sizeof(part));
  ck_assert_int_eq(dash__wire_reader_next(&r, &got, NULL, NULL), 0);
  ck_assert_int_eq(dash__wire_reader_fill(&r, sv[1]), DASH_E_DISCONNECTED);
  /* The partial frame stays, and is not a frame. */
  ck_assert_uint_eq(r.len, sizeof(part));
  ck_assert_int_eq(dash__wire_reader_next(&r, &got, NULL, NULL), 0);
  dash__wire_reader_free(&r);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_reader_free_closes_held_fds) {
  int sv[2], memfds[2], before;
  uint8_t *frame;
  size_t len;
  dash__wire_reader r;
  Dashpb__Envelope env = ping_envelope(1);
  make_pair(sv);
  dash__wire_reader_init(&r, DASH_WIRE_MAX_FRAME);
  before = count_open_fds();
  memfds[0] = make_memfd(4096);
  memfds[1] = make_memfd(4096);
  ck_assert_int_eq(dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame, &len),
                   0);
  /* Half a frame, with its fds; the rest never comes. */
  send_raw(sv[0], frame, len / 2, memfds, 2);
  close_all(memfds, 2);
  free(frame);
  ck_assert_int_gt(dash__wire_reader_fill(&r, sv[1]), 0);
  ck_assert_int_eq(r.nfds, 2);
  ck_assert_int_eq(count_open_fds(), before + 2);
  dash__wire_reader_free(&r);
  ck_assert_int_eq(count_open_fds(), before);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_wire_send_to_closed_peer_is_disconnected) {
  int sv[2];
  size_t off = 0;
  uint8_t *frame;
  size_t len;
  Dashpb__Envelope env = ping_envelope(1);
  /* With the default action a SIGPIPE would kill this test. */
  signal(SIGPIPE, SIG_DFL);
  make_pair(sv);
  close(sv[1]);
  ck_assert_int_eq(dash__wire_send(sv[0], &env, NULL, 0), DASH_E_DISCONNECTED);
  ck_assert_int_eq(dash__wire_encode(&env, DASH_WIRE_MAX_FRAME, &frame, &len),
                   0);
  ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
  ck_assert_int_eq(dash__wire_send_some(sv[0], frame, len, &off, NULL, 0),
                   DASH_E_DISCONNECTED);
  ck_assert_uint_eq(off, 0);
  free(frame);
  close(sv[0]);
}
END_TEST

static Suite *wire_suite(void) {
  Suite *s = suite_create("wire");
  TCase *tc;

  tc = tcase_create("core");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_wire_round_trips_every_body_kind);
  tcase_add_loop_test(tc, test_wire_fds_arrive_with_their_frame, 0,
                      (int)(sizeof(kFdOrders) / sizeof(kFdOrders[0])));
  tcase_add_test(tc, test_wire_reassembles_one_byte_writes);
  tcase_add_test(tc, test_wire_send_some_resumes_after_would_block);
  tcase_add_test(tc, test_wire_received_fds_are_close_on_exec);
  tcase_add_test(tc, test_wire_other_version_is_still_returned);
  tcase_add_test(tc, test_wire_frames_without_fds_may_omit_the_fd_array);
  suite_add_tcase(s, tc);

  tc = tcase_create("limits");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_wire_rejects_oversized_length_prefix, 0, 2);
  tcase_add_test(tc, test_wire_frame_limit_is_inclusive);
  tcase_add_test(tc, test_wire_encode_rejects_envelope_over_max_frame);
  tcase_add_loop_test(tc, test_wire_too_many_fds_on_a_frame_are_all_closed, 0,
                      (int)(sizeof(kTooManyFds) / sizeof(kTooManyFds[0])));
  tcase_add_test(tc, test_wire_send_rejects_bad_fd_counts);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad input");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_wire_garbage_payload_is_dropped_and_stream_resyncs);
  tcase_add_test(tc, test_wire_truncated_frame_then_eof_is_disconnected);
  tcase_add_test(tc, test_wire_reader_free_closes_held_fds);
  tcase_add_test(tc, test_wire_send_to_closed_peer_is_disconnected);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(wire_suite());
  int failed;
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
