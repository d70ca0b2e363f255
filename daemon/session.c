/* Sessions: one per client connection. Reads frames (with their fds) from
 * the socket with raw recvmsg under a uv_poll_t, answers every request
 * with one reply, and queues pushed RefreshDone frames. A session that
 * misbehaves loses only itself (invariant 5). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dashd.h"
#include "log.h"

/* A client that lets this much pile up unread is dropped. */
static const size_t kMaxOutBytes = 8u << 20;

static void update_poll(struct dashd_session *s);

static void on_closed(uv_handle_t *h) {
  struct dashd_session *s = h->data;
  dash__wire_reader_free(&s->reader);
  free(s->out);
  free(s);
}

void dashd__session_close(struct dashd_session *s, const char *why) {
  if (s->closing)
    return;
  s->closing = 1;
  dashd__log(DASHD_LOG_INFO, "client pid %d uid %u disconnected: %s",
             (int)s->pid, (unsigned)s->uid, why);
  while (s->stacks != NULL)
    dashd__stack_release(s->stacks);
  dashd__server_remove_session(s->srv, s);
  uv_poll_stop(&s->poll);
  close(s->fd);
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* The connection failed while sending: closed on the loop's next turn,
 * never here, as the sender may still use one of the session's stacks,
 * which the close would free under it. */
static void doom(struct dashd_session *s, const char *why) {
  if (s->closing || s->doomed)
    return;
  s->doomed = 1;
  snprintf(s->doom_why, sizeof(s->doom_why), "%s", why);
  uv_poll_stop(&s->poll);
  s->poll_events = 0;
  dashd__server_defer(s->srv);
}

/* Sends what the socket takes now; the rest waits for UV_WRITABLE. */
static void flush(struct dashd_session *s) {
  if (s->out_off < s->out_len) {
    int rc =
        dash__wire_send_some(s->fd, s->out, s->out_len, &s->out_off, NULL, 0);
    if (rc < 0) {
      doom(s, "the connection broke while sending");
      return;
    }
  }
  if (s->out_off == s->out_len)
    s->out_off = s->out_len = 0;
  update_poll(s);
}

void dashd__session_send(struct dashd_session *s, Dashpb__Envelope *env) {
  uint8_t *frame = NULL;
  size_t len = 0;
  if (s->closing || s->doomed)
    return;
  env->version = DASH_WIRE_VERSION;
  if (dash__wire_encode(env, s->srv->cfg.max_frame, &frame, &len) < 0) {
    dashd__log(DASHD_LOG_ERROR, "cannot encode a reply for pid %d: %s",
               (int)s->pid, dash_last_error());
    return;
  }
  if (s->out_len - s->out_off + len > kMaxOutBytes) {
    free(frame);
    doom(s, "it does not read its replies");
    return;
  }
  if (s->out_off > 0) {
    memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
    s->out_len -= s->out_off;
    s->out_off = 0;
  }
  if (s->out_len + len > s->out_cap) {
    size_t cap = s->out_cap ? s->out_cap : 4096;
    while (cap < s->out_len + len)
      cap *= 2;
    uint8_t *p = realloc(s->out, cap);
    if (p == NULL) {
      free(frame);
      doom(s, "out of memory for its replies");
      return;
    }
    s->out = p;
    s->out_cap = cap;
  }
  memcpy(s->out + s->out_len, frame, len);
  s->out_len += len;
  free(frame);
  flush(s);
}

static void reply_status(struct dashd_session *s, uint64_t request_id,
                         int status, const char *message) {
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  env.request_id = request_id;
  env.status = status;
  env.message = (char *)(message ? message : "");
  if (status < 0)
    dashd__log(DASHD_LOG_DEBUG, "pid %d request %llu: %s: %s", (int)s->pid,
               (unsigned long long)request_id, dash_status_name(status),
               env.message);
  dashd__session_send(s, &env);
}

static void close_fds(int *fds, int nfds) {
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
}

/* Finds a stack for a request of this session: unknown ids and other
 * clients' ids get their own errors. */
static struct dashd_stack *own_stack(struct dashd_session *s, uint64_t rid,
                                     uint64_t id) {
  char msg[128];
  struct dashd_stack *st = dashd__server_find_stack(s->srv, id);
  if (st == NULL) {
    snprintf(msg, sizeof(msg), "no stack %llu", (unsigned long long)id);
    reply_status(s, rid, DASH_E_NOT_FOUND, msg);
    return NULL;
  }
  if (st->owner != s) {
    snprintf(msg, sizeof(msg), "stack %llu belongs to another client",
             (unsigned long long)id);
    reply_status(s, rid, DASH_E_PERMISSION, msg);
    return NULL;
  }
  return st;
}

static void handle_hello(struct dashd_session *s, const Dashpb__Envelope *req) {
  char msg[160];
  if (!s->allowed) {
    snprintf(msg, sizeof(msg),
             "uid %u is not allowed by this daemon's configuration",
             (unsigned)s->uid);
    reply_status(s, req->request_id, DASH_E_PERMISSION, msg);
    dashd__session_close(s, "refused by allowed_uids/allowed_gids");
    return;
  }
  if (s->srv->n_sessions > s->srv->cfg.max_clients) {
    snprintf(msg, sizeof(msg), "the daemon serves its limit of %u clients",
             s->srv->cfg.max_clients);
    reply_status(s, req->request_id, DASH_E_LIMIT, msg);
    dashd__session_close(s, "max_clients reached");
    return;
  }
  s->hello_done = 1;
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__HelloReply hr = DASHPB__HELLO_REPLY__INIT;
  hr.protocol_version = DASH_WIRE_VERSION;
  hr.daemon_version = (char *)DASH_VERSION;
  hr.backend = (char *)dash_backend_name(
      s->srv->cfg.backend == DASH_BACKEND_AUTO ? DASH_BACKEND_CPU
                                               : s->srv->cfg.backend);
  hr.device = s->srv->device[0] ? s->srv->device : (char *)"cpu";
  hr.max_frame = s->srv->cfg.max_frame;
  env.request_id = req->request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_HELLO_REPLY;
  env.hello_reply = &hr;
  dashd__log(DASHD_LOG_INFO, "client pid %d uid %u says hello (%s)",
             (int)s->pid, (unsigned)s->uid,
             req->hello->client_name ? req->hello->client_name : "");
  dashd__session_send(s, &env);
}

static void handle_register(struct dashd_session *s,
                            const Dashpb__Envelope *req, int *fds, int nfds) {
  char err[320] = "";
  uint64_t id = 0;
  int rc = dashd__stack_register(s, req->register_stack, fds, nfds, &id, err,
                                 sizeof(err));
  if (rc < 0) {
    reply_status(s, req->request_id, rc, err);
    if (rc == DASH_E_DEVICE_LOST) {
      /* The GPU failed while making the plan: as after a computation. */
      char why[360];
      snprintf(why, sizeof(why), "the GPU failed (%s)", err);
      dashd__server_fail(s->srv, kDashdExitDeviceLost, why);
    }
    return;
  }
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__RegisterStackReply rr = DASHPB__REGISTER_STACK_REPLY__INIT;
  ProtobufCBinaryData result_events[2];
  rr.stack_id = id;
  struct dashd_stack *st = dashd__server_find_stack(s->srv, id);
  if (st != NULL && st->cuda != NULL)
    dashd__cuda_stack_events(st, &rr, result_events);
  env.request_id = req->request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_REGISTER_STACK_REPLY;
  env.register_stack_reply = &rr;
  dashd__session_send(s, &env);
}

static void handle_refresh(struct dashd_session *s,
                           const Dashpb__Envelope *req) {
  struct dashd_stack *st =
      own_stack(s, req->request_id, req->refresh->stack_id);
  if (st == NULL)
    return;
  int rc = dashd__stack_refresh(st, req->refresh->step, req->request_id);
  if (rc == DASH_E_INVALID) {
    reply_status(s, req->request_id, DASH_E_INVALID,
                 "a Refresh of this stack is still being taken; wait for "
                 "its reply");
  } else if (rc < 0) {
    /* The GPU refused the snapshot copy of a CUDA stack. */
    char why[360];
    snprintf(why, sizeof(why), "the snapshot copy failed: %s",
             dash_last_error());
    reply_status(s, req->request_id, rc, why);
    if (rc == DASH_E_DEVICE_LOST)
      dashd__server_fail(s->srv, kDashdExitDeviceLost, why);
  }
}

static void handle_sync(struct dashd_session *s, const Dashpb__Envelope *req) {
  struct dashd_stack *st = own_stack(s, req->request_id, req->sync->stack_id);
  if (st == NULL)
    return;
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__SyncReply sr = DASHPB__SYNC_REPLY__INIT;
  Dashpb__ResultInfo info;
  uint64_t counts[DASH_BLOCK_STATUS_COUNT];
  sr.adopted = dashd__stack_sync(st);
  if (st->held >= 0) {
    dashd__result_to_pb(&st->slot_result[st->held], st->held, &info, counts);
    sr.held = &info;
  }
  sr.in_flight = st->computing >= 0 || st->pending >= 0;
  env.request_id = req->request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_SYNC_REPLY;
  env.sync_reply = &sr;
  dashd__session_send(s, &env);
}

static void handle_unregister(struct dashd_session *s,
                              const Dashpb__Envelope *req) {
  struct dashd_stack *st =
      own_stack(s, req->request_id, req->unregister->stack_id);
  if (st == NULL)
    return;
  dashd__log(DASHD_LOG_INFO, "stack %llu unregistered by pid %d",
             (unsigned long long)st->id, (int)s->pid);
  if (!dashd__stack_unregister(st, req->request_id))
    reply_status(s, req->request_id, 0, "");
}

static void handle_status(struct dashd_session *s,
                          const Dashpb__Envelope *req) {
  struct dashd_server *srv = s->srv;
  size_t n = 0;
  for (struct dashd_stack *st = srv->stacks; st != NULL; st = st->next_all)
    if (st->owner != NULL)
      n++;
  Dashpb__StackStatus *rows = calloc(n ? n : 1, sizeof(*rows));
  Dashpb__StackStatus **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
  if (rows == NULL || ptrs == NULL) {
    free(rows);
    free(ptrs);
    reply_status(s, req->request_id, DASH_E_NOMEM, "out of memory");
    return;
  }
  size_t i = 0;
  for (struct dashd_stack *st = srv->stacks; st != NULL; st = st->next_all) {
    if (st->owner == NULL)
      continue;
    Dashpb__StackStatus *r = &rows[i];
    dashpb__stack_status__init(r);
    r->stack_id = st->id;
    r->owner_pid = (uint32_t)st->owner->pid;
    r->owner_uid = (uint32_t)st->owner->uid;
    r->num_blocks = st->n;
    r->block_size = st->b;
    r->method = (int32_t)st->opts.method;
    r->generation = st->generation;
    r->last_refresh_ms = st->last_refresh_ms;
    r->last_step_requested = st->last_step_requested;
    r->last_step_done = st->last_step_done;
    r->refreshes = st->refreshes;
    r->coalesced = st->coalesced;
    r->failures = st->failures;
    r->memory = st->cuda != NULL ? st->memory : (char *)"shm";
    ptrs[i++] = r;
  }
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__StatusReply sr = DASHPB__STATUS_REPLY__INIT;
  sr.version = (char *)DASH_VERSION;
  sr.backend = (char *)dash_backend_name(srv->cfg.backend == DASH_BACKEND_AUTO
                                             ? DASH_BACKEND_CPU
                                             : srv->cfg.backend);
  sr.device = srv->device[0] ? srv->device : (char *)"cpu";
  sr.uptime_s = (uv_now(srv->loop) - srv->start_ms) / 1e3;
  sr.clients = srv->n_sessions;
  sr.n_stacks = n;
  sr.stacks = ptrs;
  env.request_id = req->request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_STATUS_REPLY;
  env.status_reply = &sr;
  dashd__session_send(s, &env);
  free(rows);
  free(ptrs);
}

static void handle(struct dashd_session *s, const Dashpb__Envelope *req,
                   int *fds, int nfds) {
  char msg[160];
  uint64_t rid = req->request_id;
  if (req->version != DASH_WIRE_VERSION) {
    close_fds(fds, nfds);
    snprintf(msg, sizeof(msg), "protocol version %u; this daemon speaks %u",
             req->version, DASH_WIRE_VERSION);
    reply_status(s, rid, DASH_E_VERSION, msg);
    return;
  }
  if (req->body_case != DASHPB__ENVELOPE__BODY_REGISTER_STACK && nfds > 0) {
    close_fds(fds, nfds);
    snprintf(msg, sizeof(msg),
             "the request carries %d fds it does not call for; all closed",
             nfds);
    reply_status(s, rid, DASH_E_INVALID, msg);
    return;
  }
  if (!s->hello_done && req->body_case != DASHPB__ENVELOPE__BODY_HELLO) {
    close_fds(fds, nfds);
    reply_status(s, rid, DASH_E_PROTOCOL, "send Hello first");
    return;
  }
  if (s->srv->stopping &&
      (req->body_case == DASHPB__ENVELOPE__BODY_REGISTER_STACK ||
       req->body_case == DASHPB__ENVELOPE__BODY_REFRESH)) {
    /* No new work while the daemon winds down its last computation. */
    close_fds(fds, nfds);
    reply_status(s, rid, DASH_E_DISCONNECTED, "the daemon is stopping");
    return;
  }
  switch (req->body_case) {
    case DASHPB__ENVELOPE__BODY_HELLO:
      handle_hello(s, req);
      return;
    case DASHPB__ENVELOPE__BODY_REGISTER_STACK:
      handle_register(s, req, fds, nfds);
      return;
    case DASHPB__ENVELOPE__BODY_REFRESH:
      handle_refresh(s, req);
      return;
    case DASHPB__ENVELOPE__BODY_SYNC:
      handle_sync(s, req);
      return;
    case DASHPB__ENVELOPE__BODY_UNREGISTER:
      handle_unregister(s, req);
      return;
    case DASHPB__ENVELOPE__BODY_PING: {
      Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
      Dashpb__Ping pong = DASHPB__PING__INIT;
      env.request_id = rid;
      env.body_case = DASHPB__ENVELOPE__BODY_PING;
      env.ping = &pong;
      dashd__session_send(s, &env);
      return;
    }
    case DASHPB__ENVELOPE__BODY_STATUS_REQUEST:
      handle_status(s, req);
      return;
    case DASHPB__ENVELOPE__BODY_METRICS: {
      char *text = dashd__metrics_render(s->srv);
      if (text == NULL) {
        reply_status(s, rid, DASH_E_NOMEM, "out of memory");
        return;
      }
      Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
      Dashpb__MetricsReply mr = DASHPB__METRICS_REPLY__INIT;
      mr.text = text;
      env.request_id = rid;
      env.body_case = DASHPB__ENVELOPE__BODY_METRICS_REPLY;
      env.metrics_reply = &mr;
      dashd__session_send(s, &env);
      free(text);
      return;
    }
    case DASHPB__ENVELOPE__BODY__NOT_SET:
      reply_status(s, rid, DASH_E_PROTOCOL,
                   "unknown or empty request; this daemon speaks protocol 1");
      return;
    default:
      snprintf(msg, sizeof(msg), "message %d is a reply, not a request",
               (int)req->body_case);
      reply_status(s, rid, DASH_E_PROTOCOL, msg);
      return;
  }
}

static void on_readable(struct dashd_session *s) {
  for (;;) {
    int rc = dash__wire_reader_fill(&s->reader, s->fd);
    if (rc == DASH_E_DISCONNECTED) {
      dashd__session_close(s, "end of stream");
      return;
    }
    if (rc == DASH_E_PROTOCOL) {
      reply_status(s, 0, DASH_E_PROTOCOL, dash_last_error());
      if (s->closing || s->doomed)
        return;
      continue;
    }
    if (rc == DASH_E_TOO_LARGE) {
      /* The stream cannot be resynchronised after a bad length. */
      reply_status(s, 0, DASH_E_TOO_LARGE, dash_last_error());
      dashd__session_close(s, "oversized frame");
      return;
    }
    if (rc < 0) {
      dashd__session_close(s, dash_last_error());
      return;
    }
    for (;;) {
      Dashpb__Envelope *env = NULL;
      int fds[DASH_WIRE_MAX_FDS];
      int nfds = 0;
      int got = dash__wire_reader_next(&s->reader, &env, fds, &nfds);
      if (got == 0)
        break;
      if (got == DASH_E_TOO_LARGE) {
        /* The stream cannot be resynchronised after a bad length. */
        reply_status(s, 0, DASH_E_TOO_LARGE, dash_last_error());
        dashd__session_close(s, "oversized frame");
        return;
      }
      if (got < 0) {
        reply_status(s, 0, got, dash_last_error());
      } else {
        handle(s, env, fds, nfds);
        dashpb__envelope__free_unpacked(env, NULL);
      }
      if (s->closing || s->doomed)
        return;
    }
    if (rc == 0)
      return; /* nothing more to read now */
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct dashd_session *s = h->data;
  if (status < 0) {
    dashd__session_close(s, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE)
    flush(s);
  if (!s->closing && !s->doomed && (events & UV_READABLE))
    on_readable(s);
}

static void update_poll(struct dashd_session *s) {
  if (s->closing || s->doomed)
    return;
  int want = UV_READABLE | (s->out_off < s->out_len ? UV_WRITABLE : 0);
  if (want != s->poll_events) {
    s->poll_events = want;
    uv_poll_start(&s->poll, want, on_poll);
  }
}

int dashd__session_open(struct dashd_server *srv, int fd) {
  struct dashd_session *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    close(fd);
    return DASH_E_NOMEM;
  }
  s->srv = srv;
  s->serial = ++srv->next_session_serial;
  s->fd = fd;
  dash__wire_reader_init(&s->reader, srv->cfg.max_frame);
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    dashd__log(DASHD_LOG_WARN, "SO_PEERCRED failed: %s", strerror(errno));
    dash__wire_reader_free(&s->reader);
    free(s);
    close(fd);
    return DASH_E_IO;
  }
  s->pid = cred.pid;
  s->uid = cred.uid;
  s->gid = cred.gid;
  s->allowed = dashd__config_allows(&srv->cfg, cred.uid, cred.gid);
  srv->metrics.connections++;
  if (!s->allowed)
    srv->metrics.refused++;
  if (uv_poll_init(srv->loop, &s->poll, fd) != 0) {
    dash__wire_reader_free(&s->reader);
    free(s);
    close(fd);
    return DASH_E_INTERNAL;
  }
  s->poll.data = s;
  s->next = srv->sessions;
  if (srv->sessions != NULL)
    srv->sessions->prev = s;
  srv->sessions = s;
  srv->n_sessions++;
  s->poll_events = 0;
  update_poll(s);
  dashd__log(DASHD_LOG_INFO, "client pid %d uid %u connected%s", (int)s->pid,
             (unsigned)s->uid, s->allowed ? "" : " (not allowed)");
  return 0;
}
