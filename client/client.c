/* libdash: the connection to dashd, its requests and replies, and the
 * frames the daemon pushes in between. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../kernels/internal.h"
#include "internal.h"
#include "paths.h"

/* Most recvmsg calls one drain makes, so that a daemon that floods the
 * socket cannot keep a caller inside the library forever. */
#define DRAIN_MAX_READS 64

static const char *body_name(Dashpb__Envelope__BodyCase body) {
  switch (body) {
    case DASHPB__ENVELOPE__BODY_HELLO:
      return "Hello";
    case DASHPB__ENVELOPE__BODY_REGISTER_STACK:
      return "RegisterStack";
    case DASHPB__ENVELOPE__BODY_REFRESH:
      return "Refresh";
    case DASHPB__ENVELOPE__BODY_SYNC:
      return "Sync";
    case DASHPB__ENVELOPE__BODY_UNREGISTER:
      return "Unregister";
    case DASHPB__ENVELOPE__BODY_PING:
      return "Ping";
    case DASHPB__ENVELOPE__BODY_STATUS_REQUEST:
      return "Status";
    default:
      return "the request";
  }
}

/* Marks the connection dead (the first reason sticks) and wakes every
 * thread that waits on it. shutdown() also wakes a thread blocked in
 * poll() and tells the daemon to release this client's stacks. */
__attribute__((format(printf, 2, 3))) static void mark_dead(dash_client *c,
                                                            const char *fmt,
                                                            ...) {
  va_list ap;
  if (c->dead)
    return;
  c->dead = 1;
  va_start(ap, fmt);
  vsnprintf(c->dead_why, sizeof(c->dead_why), fmt, ap);
  va_end(ap);
  shutdown(c->sock, SHUT_RDWR);
  pthread_cond_broadcast(&c->cv);
}

int dash__client_check_alive(dash_client *c) {
  if (!c->dead)
    return 0;
  return dash__fail(DASH_E_DISCONNECTED, "connection to dashd lost: %s",
                    c->dead_why);
}

/* Hands one frame from the daemon to whoever it is for; takes env. */
static void dispatch(dash_client *c, Dashpb__Envelope *env) {
  if (env->request_id == 0) {
    if (env->body_case == DASHPB__ENVELOPE__BODY_REFRESH_DONE &&
        env->refresh_done != NULL)
      dash__stack_on_refresh_done(c, env->refresh_done);
    dashpb__envelope__free_unpacked(env, NULL);
    return;
  }
  for (struct dash__waiter *w = c->waiters; w != NULL; w = w->next) {
    if (w->request_id == env->request_id && w->reply == NULL) {
      w->reply = env;
      return;
    }
  }
  /* Nobody asked: a daemon bug, harmless to drop. */
  dashpb__envelope__free_unpacked(env, NULL);
}

/* Reads what the socket holds without blocking (poll with timeout 0
 * first, as the socket itself is blocking) and dispatches every complete
 * frame. Failures mark the connection dead. */
static void pump(dash_client *c) {
  for (int i = 0; i < DRAIN_MAX_READS && !c->dead; i++) {
    struct pollfd p = {.fd = c->sock, .events = POLLIN};
    int r = poll(&p, 1, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      mark_dead(c, "poll: %s", strerror(errno));
      return;
    }
    if (r == 0)
      return;
    int rc = dash__wire_reader_fill(&c->rd, c->sock);
    if (rc == DASH_E_DISCONNECTED) {
      mark_dead(c, "dashd closed the connection");
      return;
    }
    if (rc < 0) {
      mark_dead(c, "reading from dashd: %s", dash_last_error());
      return;
    }
    for (;;) {
      Dashpb__Envelope *env = NULL;
      int fds[DASH_WIRE_MAX_FDS], nfds = 0;
      rc = dash__wire_reader_next(&c->rd, &env, fds, &nfds);
      /* The daemon has no reason to send fds: never keep them. */
      for (int k = 0; k < nfds; k++)
        close(fds[k]);
      if (rc == 0)
        break;
      if (rc < 0) {
        /* A reply that does not decode leaves its requester waiting:
         * the connection is of no further use. */
        mark_dead(c, "bad frame from dashd: %s", dash_last_error());
        return;
      }
      dispatch(c, env);
    }
  }
}

int dash__client_drain(dash_client *c) {
  /* While another thread polls the socket, it is the one that reads. */
  if (!c->reading)
    pump(c);
  return dash__client_check_alive(c);
}

/* Waits on c->cv at most ms milliseconds (-1: no limit). */
static void cond_wait_ms(dash_client *c, int ms) {
  struct timespec ts;
  if (ms < 0) {
    pthread_cond_wait(&c->cv, &c->mu);
    return;
  }
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

int dash__client_wait(dash_client *c, int (*done)(void *arg), void *arg,
                      int timeout_ms) {
  double deadline = dash__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

  for (;;) {
    if (done(arg))
      return 0;
    if (c->dead)
      return dash__client_check_alive(c);
    int left = -1;
    if (timeout_ms >= 0) {
      double ms = deadline - dash__now_ms();
      if (ms <= 0)
        return dash__fail(DASH_E_TIMEOUT, "no answer within %d ms", timeout_ms);
      left = ms < INT_MAX - 1 ? (int)ms + 1 : INT_MAX;
    }
    if (c->reading) {
      cond_wait_ms(c, left);
      continue;
    }
    /* This thread becomes the reader: it sleeps in poll() without the
     * lock, so that other threads may send meanwhile, then reads and
     * hands out what arrived. */
    c->reading = 1;
    pthread_mutex_unlock(&c->mu);
    struct pollfd p = {.fd = c->sock, .events = POLLIN};
    int r = poll(&p, 1, left);
    int err = errno;
    pthread_mutex_lock(&c->mu);
    c->reading = 0;
    if (r < 0 && err != EINTR)
      mark_dead(c, "poll: %s", strerror(err));
    else if (r > 0)
      pump(c);
    pthread_cond_broadcast(&c->cv);
  }
}

static int reply_arrived(void *arg) {
  return ((struct dash__waiter *)arg)->reply != NULL;
}

int dash__client_request_locked(dash_client *c, Dashpb__Envelope *req,
                                const int *fds, int nfds,
                                Dashpb__Envelope **reply) {
  struct dash__waiter w = {0};
  const char *name = body_name(req->body_case);
  int rc;

  *reply = NULL;
  if ((rc = dash__client_check_alive(c)) < 0)
    return rc;
  req->version = DASH_WIRE_VERSION;
  req->request_id = c->next_request_id++;
  w.request_id = req->request_id;
  rc = dash__wire_send(c->sock, req, fds, nfds);
  if (rc == DASH_E_DISCONNECTED || rc == DASH_E_IO || rc == DASH_E_TIMEOUT) {
    /* A frame cut short leaves the stream out of step. */
    mark_dead(c, "sending %s: %s", name, dash_last_error());
    return rc == DASH_E_TIMEOUT ? dash__fail(rc, "%s", c->dead_why)
                                : dash__client_check_alive(c);
  }
  if (rc < 0)
    return rc;

  w.next = c->waiters;
  c->waiters = &w;
  rc = dash__client_wait(c, reply_arrived, &w, c->reply_timeout_ms);
  for (struct dash__waiter **p = &c->waiters; *p != NULL; p = &(*p)->next) {
    if (*p == &w) {
      *p = w.next;
      break;
    }
  }
  if (rc == DASH_E_TIMEOUT) {
    mark_dead(c, "no reply to %s within %d ms", name, c->reply_timeout_ms);
    return dash__fail(DASH_E_TIMEOUT, "%s", c->dead_why);
  }
  if (rc < 0)
    return rc;

  Dashpb__Envelope *env = w.reply;
  if (env->status != 0) {
    /* A positive status is not in the protocol. */
    int status = env->status < 0 ? env->status : DASH_E_PROTOCOL;
    const char *msg = env->message != NULL && env->message[0] != '\0'
                          ? env->message
                          : dash_strerror(status);
    rc = dash__fail(status, "%s refused: %s", name, msg);
    dashpb__envelope__free_unpacked(env, NULL);
    return rc;
  }
  *reply = env;
  return 0;
}

int dash__client_request(dash_client *c, Dashpb__Envelope *req, const int *fds,
                         int nfds, Dashpb__Envelope **reply) {
  pthread_mutex_lock(&c->mu);
  int rc = dash__client_request_locked(c, req, fds, nfds, reply);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

static char *dup_or_empty(const char *s) {
  return strdup(s != NULL ? s : "");
}

static int hello(dash_client *c) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Hello h = DASHPB__HELLO__INIT;
  Dashpb__Envelope *reply = NULL;
  char name[64];
  int rc;

  snprintf(name, sizeof(name), "%s[%ld]", program_invocation_short_name,
           (long)getpid());
  h.protocol_version = DASH_WIRE_VERSION;
  h.client_name = name;
  req.body_case = DASHPB__ENVELOPE__BODY_HELLO;
  req.hello = &h;
  if ((rc = dash__client_request(c, &req, NULL, 0, &reply)) < 0) {
    /* Say which daemon: the caller of dash_connect() may not know. */
    char why[256];
    snprintf(why, sizeof(why), "%s", dash_last_error());
    rc = dash__fail(rc, "dashd at %s: %s", c->socket_path, why);
    goto out;
  }
  if (reply->body_case != DASHPB__ENVELOPE__BODY_HELLO_REPLY ||
      reply->hello_reply == NULL) {
    rc = dash__fail(DASH_E_PROTOCOL, "dashd at %s answered Hello with %d",
                    c->socket_path, (int)reply->body_case);
    goto out;
  }
  const Dashpb__HelloReply *hr = reply->hello_reply;
  if (hr->protocol_version != DASH_WIRE_VERSION) {
    rc = dash__fail(DASH_E_VERSION,
                    "dashd at %s speaks protocol version %u, libdash %u",
                    c->socket_path, hr->protocol_version, DASH_WIRE_VERSION);
    goto out;
  }
  c->daemon_version = dup_or_empty(hr->daemon_version);
  c->backend = dup_or_empty(hr->backend);
  c->device = dup_or_empty(hr->device);
  if (c->daemon_version == NULL || c->backend == NULL || c->device == NULL)
    rc = dash__fail(DASH_E_NOMEM, "HelloReply strings");
out:
  if (reply != NULL)
    dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

/* Frees a client whose stacks are gone; also a half-made one. */
static void client_free(dash_client *c) {
  dash__wire_reader_free(&c->rd);
  if (c->sock >= 0)
    close(c->sock);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c->socket_path);
  free(c->daemon_version);
  free(c->backend);
  free(c->device);
  free(c);
}

static int client_new(const char *socket_path, dash_client **out) {
  pthread_condattr_t attr;
  dash_client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return dash__fail(DASH_E_NOMEM, "client");
  c->sock = -1;
  c->next_request_id = 1;
  c->reply_timeout_ms = DASH__REPLY_TIMEOUT_MS;
  dash__wire_reader_init(&c->rd, DASH_WIRE_MAX_FRAME);
  /* Waits measure time on the monotonic clock, as dash__now_ms() does. */
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&c->mu, NULL);
  c->socket_path = strdup(socket_path);
  if (c->socket_path == NULL) {
    client_free(c);
    return dash__fail(DASH_E_NOMEM, "client");
  }
  *out = c;
  return 0;
}

int dash_connect(const char *socket_path, dash_client **out) {
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  /* A daemon that stops reading must not block a send forever. */
  struct timeval send_timeout = {.tv_sec = DASH__REPLY_TIMEOUT_MS / 1000};
  dash_client *c = NULL;
  int rc;

  dash__clear_error();
  if (out == NULL)
    return dash__fail(DASH_E_INVALID, "out is NULL");
  *out = NULL;
  if (socket_path == NULL) {
    if ((rc = dash__default_socket_path(path, sizeof(path))) < 0)
      return rc;
    socket_path = path;
  }
  if (socket_path[0] == '\0')
    return dash__fail(DASH_E_INVALID, "socket path is empty");
  if (strlen(socket_path) >= sizeof(addr.sun_path))
    return dash__fail(DASH_E_INVALID,
                      "socket path %s is too long (at most %zu bytes)",
                      socket_path, sizeof(addr.sun_path) - 1);
  memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);

  if ((rc = client_new(socket_path, &c)) < 0)
    return rc;
  c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->sock < 0) {
    rc = dash__fail(
        errno == ENOMEM || errno == ENOBUFS ? DASH_E_NOMEM : DASH_E_IO,
        "socket: %s", strerror(errno));
    goto out;
  }
  if (connect(c->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    /* EACCES: the socket's directory or file keeps this user out. */
    int status = errno == EACCES || errno == EPERM ? DASH_E_PERMISSION
                                                   : DASH_E_DISCONNECTED;
    rc = dash__fail(status, "cannot connect to dashd at %s: %s", socket_path,
                    strerror(errno));
    goto out;
  }
  if (setsockopt(c->sock, SOL_SOCKET, SO_SNDTIMEO, &send_timeout,
                 sizeof(send_timeout)) < 0) {
    rc = dash__fail(DASH_E_IO, "SO_SNDTIMEO: %s", strerror(errno));
    goto out;
  }
  /* Who serves this socket: a CUDA stack's memory may stay mapped in
   * that process after the connection is lost, as long as it lives. */
  struct ucred cred;
  socklen_t cred_len = sizeof(cred);
  if (getsockopt(c->sock, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0)
    c->daemon_pid = cred.pid;
  rc = hello(c);
out:
  if (rc < 0)
    client_free(c);
  else
    *out = c;
  return rc;
}

void dash_disconnect(dash_client *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  while (c->stacks != NULL)
    dash__stack_destroy_locked(c->stacks);
  pthread_mutex_unlock(&c->mu);
  client_free(c);
}

int dash_ping(dash_client *c, double *rtt_ms) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Ping ping = DASHPB__PING__INIT;
  Dashpb__Envelope *reply = NULL;

  dash__clear_error();
  if (c == NULL)
    return dash__fail(DASH_E_INVALID, "client is NULL");
  req.body_case = DASHPB__ENVELOPE__BODY_PING;
  req.ping = &ping;
  double t0 = dash__now_ms();
  int rc = dash__client_request(c, &req, NULL, 0, &reply);
  double t1 = dash__now_ms();
  if (rc < 0)
    return rc;
  dashpb__envelope__free_unpacked(reply, NULL);
  if (rtt_ms != NULL)
    *rtt_ms = t1 - t0;
  return 0;
}
