/* The listening socket, the list of sessions and stacks, signals, and the
 * orderly stop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "dashd.h"
#include "log.h"

/* How long a stop waits for the computation in flight. */
static const uint64_t kStopGraceMs = 2000;
/* How often STATUS= is refreshed when systemd listens but asked for no
 * watchdog. */
static const uint64_t kNotifyStatusMs = 5000;

/* Without systemd every sd_* call below is a no-op: no NOTIFY_SOCKET, no
 * LISTEN_FDS. */

int dashd__config_allows(const struct dashd_config *cfg, uid_t uid, gid_t gid) {
  if (cfg->allow_all_uids)
    return 1;
  for (int i = 0; i < cfg->n_allowed_uids; i++)
    if (cfg->allowed_uids[i] == (unsigned)uid)
      return 1;
  for (int i = 0; i < cfg->n_allowed_gids; i++)
    if (cfg->allowed_gids[i] == (unsigned)gid)
      return 1;
  return 0;
}

struct dashd_stack *dashd__server_find_stack(struct dashd_server *srv,
                                             uint64_t id) {
  for (struct dashd_stack *st = srv->stacks; st != NULL; st = st->next_all)
    if (st->id == id && st->owner != NULL)
      return st;
  return NULL;
}

void dashd__server_remove_session(struct dashd_server *srv,
                                  struct dashd_session *s) {
  if (s->prev != NULL)
    s->prev->next = s->next;
  else if (srv->sessions == s)
    srv->sessions = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  srv->n_sessions--;
}

static void on_connection(uv_poll_t *h, int status, int events) {
  struct dashd_server *srv = h->data;
  (void)events;
  if (status < 0 || srv->stopping)
    return;
  for (;;) {
    int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        dashd__log(DASHD_LOG_WARN, "accept: %s", strerror(errno));
      return;
    }
    dashd__session_open(srv, fd);
  }
}

/* A socket file left by a daemon that died is removed; one that answers
 * belongs to a running daemon, which is not disturbed. */
static int claim_path(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return 0;
  if (!S_ISSOCK(sb.st_mode)) {
    dashd__log(DASHD_LOG_ERROR, "%s exists and is not a socket", path);
    return DASH_E_INVALID;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
  int live =
      fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
  if (fd >= 0)
    close(fd);
  if (live) {
    dashd__log(DASHD_LOG_ERROR, "another dashd is listening on %s", path);
    return DASH_E_INVALID;
  }
  unlink(path);
  return 0;
}

/* Tells systemd what the daemon is doing, when that changed. */
static void notify_status(struct dashd_server *srv) {
  char line[sizeof(srv->last_status)];
  unsigned stacks = 0;
  for (struct dashd_stack *st = srv->stacks; st != NULL; st = st->next_all)
    if (st->owner != NULL)
      stacks++;
  if (srv->stopping)
    snprintf(line, sizeof(line), "stopping");
  else
    snprintf(line, sizeof(line), "serving %u clients, %u stacks",
             srv->n_sessions, stacks);
  if (strcmp(line, srv->last_status) == 0)
    return;
  snprintf(srv->last_status, sizeof(srv->last_status), "%s", line);
  sd_notifyf(0, "STATUS=%s", line);
}

static void on_notify_tick(uv_timer_t *t) {
  struct dashd_server *srv = t->data;
  if (srv->watchdog_usec > 0)
    sd_notify(0, "WATCHDOG=1");
  notify_status(srv);
}

/* READY=1 once the socket listens and the handlers are in place. */
static void notify_ready(struct dashd_server *srv) {
  sd_notifyf(0, "READY=1\nMAINPID=%lu", (unsigned long)getpid());
  notify_status(srv);
  if (getenv("NOTIFY_SOCKET") == NULL)
    return;
  /* Pinged at half the interval systemd asked for, as sd_watchdog_enabled
   * recommends; STATUS= rides on the same timer. */
  if (sd_watchdog_enabled(0, &srv->watchdog_usec) <= 0)
    srv->watchdog_usec = 0;
  uint64_t every = kNotifyStatusMs;
  if (srv->watchdog_usec > 0 && srv->watchdog_usec / 2000 < every)
    every = srv->watchdog_usec / 2000 > 0 ? srv->watchdog_usec / 2000 : 1;
  uv_timer_init(srv->loop, &srv->notify_timer);
  srv->notify_timer.data = srv;
  uv_timer_start(&srv->notify_timer, on_notify_tick, every, every);
  srv->notify_on = 1;
}

/* A listening Unix stream socket passed by systemd (dashd.socket or
 * systemd-socket-activate), or -1. */
static int systemd_listen_fd(void) {
  int n = sd_listen_fds(1);
  if (n <= 0)
    return -1;
  if (n == 1 &&
      sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) > 0)
    return SD_LISTEN_FDS_START;
  dashd__log(DASHD_LOG_WARN,
             "systemd passed %d fds, not one listening Unix stream socket; "
             "binding instead",
             n);
  for (int i = 0; i < n; i++)
    close(SD_LISTEN_FDS_START + i);
  return -1;
}

static void on_signal(uv_signal_t *h, int signum);

int dashd__server_start(struct dashd_server *srv, uv_loop_t *loop) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int rc;
  srv->loop = loop;
  srv->listen_fd = -1;
  srv->start_ms = (double)uv_now(loop);
  if ((srv->listen_fd = systemd_listen_fd()) >= 0) {
    /* systemd owns the socket file: it is neither claimed nor, at stop,
     * unlinked. The path it was bound to is what the log names. */
    socklen_t len = sizeof(addr);
    srv->socket_from_systemd = 1;
    if (getsockname(srv->listen_fd, (struct sockaddr *)&addr, &len) == 0 &&
        len > offsetof(struct sockaddr_un, sun_path) && addr.sun_path[0]) {
      size_t n =
          strnlen(addr.sun_path, len - offsetof(struct sockaddr_un, sun_path));
      if (n < sizeof(srv->socket_path)) {
        memcpy(srv->socket_path, addr.sun_path, n);
        srv->socket_path[n] = '\0';
      }
    }
    if (fcntl(srv->listen_fd, F_SETFL,
              fcntl(srv->listen_fd, F_GETFL) | O_NONBLOCK) != 0) {
      dashd__log(DASHD_LOG_ERROR, "socket from systemd: %s", strerror(errno));
      return DASH_E_IO;
    }
    goto listening;
  }
  if (strlen(srv->socket_path) >= sizeof(addr.sun_path)) {
    dashd__log(DASHD_LOG_ERROR, "socket path too long: %s", srv->socket_path);
    return DASH_E_INVALID;
  }
  if ((rc = claim_path(srv->socket_path)) < 0)
    return rc;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", srv->socket_path);
  srv->listen_fd =
      socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (srv->listen_fd < 0 ||
      bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
      listen(srv->listen_fd, 128) != 0) {
    dashd__log(DASHD_LOG_ERROR, "cannot listen on %s: %s", srv->socket_path,
               strerror(errno));
    if (srv->listen_fd >= 0)
      close(srv->listen_fd);
    srv->listen_fd = -1;
    return DASH_E_IO;
  }
listening:
  if ((rc = dashd__sched_create(srv, &srv->sched)) < 0) {
    dashd__log(DASHD_LOG_ERROR, "cannot start the worker thread");
    close(srv->listen_fd);
    if (!srv->socket_from_systemd)
      unlink(srv->socket_path);
    return rc;
  }
  uv_poll_init(loop, &srv->listen_poll, srv->listen_fd);
  srv->listen_poll.data = srv;
  uv_poll_start(&srv->listen_poll, UV_READABLE, on_connection);
  uv_signal_init(loop, &srv->sig_int);
  uv_signal_init(loop, &srv->sig_term);
  uv_signal_init(loop, &srv->sig_hup);
  srv->sig_int.data = srv->sig_term.data = srv->sig_hup.data = srv;
  uv_signal_start(&srv->sig_int, on_signal, SIGINT);
  uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
  uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
  uv_timer_init(loop, &srv->stop_timer);
  srv->stop_timer.data = srv;
  uv_timer_init(loop, &srv->gpu_poll);
  srv->gpu_poll.data = srv;
  srv->gpu_poll_open = 1;
  uv_timer_init(loop, &srv->deferred);
  srv->deferred.data = srv;
  srv->deferred_open = 1;
  if ((rc = dashd__http_start(srv)) < 0)
    return rc;
  dashd__log(DASHD_LOG_INFO,
             "dashd %s listening on %s%s (backend %s, %d threads)",
             DASH_VERSION, srv->socket_path,
             srv->socket_from_systemd ? " (socket from systemd)" : "",
             dash_backend_name(srv->cfg.backend), srv->cfg.threads);
  notify_ready(srv);
  return 0;
}

/* Closes every handle so that uv_run returns. */
static void finish(struct dashd_server *srv) {
  while (srv->sessions != NULL)
    dashd__session_close(srv->sessions, "the daemon is stopping");
  unsigned kept = 0;
  for (struct dashd_stack *st = srv->draining; st != NULL; st = st->next_all)
    kept++;
  if (kept > 0)
    dashd__log(DASHD_LOG_WARN,
               "%u released stacks still have copies waiting for their "
               "clients' GPU work; exiting without freeing them",
               kept);
  if (srv->gpu_poll_open)
    uv_close((uv_handle_t *)&srv->gpu_poll, NULL);
  srv->gpu_poll_open = 0;
  if (srv->deferred_open)
    uv_close((uv_handle_t *)&srv->deferred, NULL);
  srv->deferred_open = 0;
  dashd__sched_destroy(srv->sched);
  srv->sched = NULL;
  uv_close((uv_handle_t *)&srv->sig_int, NULL);
  uv_close((uv_handle_t *)&srv->sig_term, NULL);
  uv_close((uv_handle_t *)&srv->sig_hup, NULL);
  uv_close((uv_handle_t *)&srv->stop_timer, NULL);
  if (srv->notify_on)
    uv_close((uv_handle_t *)&srv->notify_timer, NULL);
  srv->notify_on = 0;
}

static void on_stop_tick(uv_timer_t *t) {
  struct dashd_server *srv = t->data;
  uint64_t waited = uv_now(srv->loop) - srv->stop_started_ms;
  if (!dashd__sched_busy(srv->sched)) {
    /* The stacks go with their sessions; those whose copies still wait
     * for a client's GPU are given the rest of the grace to drain. */
    while (srv->sessions != NULL)
      dashd__session_close(srv->sessions, "the daemon is stopping");
    if (srv->draining == NULL || waited >= kStopGraceMs)
      finish(srv);
    return;
  }
  if (waited >= kStopGraceMs) {
    /* The library cannot be interrupted inside a computation. Its
     * clients are told by the closed connections; the process ends
     * without unwinding the worker. */
    dashd__log(DASHD_LOG_WARN,
               "a computation is still running after %llu ms; exiting "
               "without it",
               (unsigned long long)kStopGraceMs);
    while (srv->sessions != NULL)
      dashd__session_close(srv->sessions, "the daemon is stopping");
    /* A failed GPU still asks systemd for a restart. */
    _exit(srv->exit_code);
  }
}

void dashd__server_stop(struct dashd_server *srv) {
  if (srv->stopping)
    return;
  srv->stopping = 1;
  srv->stop_started_ms = uv_now(srv->loop);
  snprintf(srv->last_status, sizeof(srv->last_status), "stopping");
  sd_notify(0, "STOPPING=1\nSTATUS=stopping");
  dashd__log(DASHD_LOG_INFO,
             "stopping: no new clients; %d waiting "
             "refreshes dropped",
             dashd__sched_cancel_waiting(srv->sched));
  dashd__http_stop(srv);
  uv_poll_stop(&srv->listen_poll);
  uv_close((uv_handle_t *)&srv->listen_poll, NULL);
  close(srv->listen_fd);
  srv->listen_fd = -1;
  if (!srv->socket_from_systemd)
    unlink(srv->socket_path);
  uv_timer_start(&srv->stop_timer, on_stop_tick, 0, 20);
}

static void on_deferred(uv_timer_t *t) {
  struct dashd_server *srv = t->data;
  /* Closing one session may doom no other, but the list changes under
   * the walk: start over after each close. */
  for (int again = 1; again;) {
    again = 0;
    for (struct dashd_session *s = srv->sessions; s != NULL; s = s->next) {
      if (s->doomed && !s->closing) {
        dashd__session_close(s, s->doom_why);
        again = 1;
        break;
      }
    }
  }
  if (srv->fail_code != 0) {
    int code = srv->fail_code;
    srv->fail_code = 0;
    dashd__server_fail(srv, code, srv->fail_why);
  }
}

void dashd__server_defer(struct dashd_server *srv) {
  if (srv->deferred_open)
    uv_timer_start(&srv->deferred, on_deferred, 0, 0);
}

void dashd__server_fail_later(struct dashd_server *srv, int exit_code,
                              const char *why) {
  if (srv->fail_code == 0) {
    srv->fail_code = exit_code;
    snprintf(srv->fail_why, sizeof(srv->fail_why), "%s", why);
  }
  dashd__server_defer(srv);
}

void dashd__server_fail(struct dashd_server *srv, int exit_code,
                        const char *why) {
  if (srv->exit_code == 0)
    srv->exit_code = exit_code;
  dashd__log(DASHD_LOG_ERROR,
             "%s; disconnecting every client and exiting %d to be restarted",
             why, exit_code);
  snprintf(srv->last_status, sizeof(srv->last_status), "failed: %.100s", why);
  while (srv->sessions != NULL)
    dashd__session_close(srv->sessions, why);
  dashd__server_stop(srv);
}

static void reload(struct dashd_server *srv) {
  if (srv->config_path == NULL) {
    dashd__log(DASHD_LOG_INFO, "SIGHUP: no configuration file to reload");
    return;
  }
  /* From the defaults, so that a key deleted from the file goes back to
   * its default, then the file, then the command line as at start. */
  struct dashd_config next;
  char err[512];
  dashd__config_defaults(&next);
  if (dashd__config_load(&next, srv->config_path, err, sizeof(err)) < 0) {
    dashd__log(DASHD_LOG_ERROR, "SIGHUP: keeping the running configuration: %s",
               err);
    return;
  }
  for (int i = 0; i < srv->n_cli_pairs; i++)
    dashd__config_set(&next, srv->cli_pairs[i][0], srv->cli_pairs[i][1], err,
                      sizeof(err));
  if (next.backend == DASH_BACKEND_AUTO)
    next.backend = next.device[0] ? DASH_BACKEND_CUDA : DASH_BACKEND_CPU;
  /* What only a restart can change stays as it is, and the log says so. */
  if (strcmp(next.device, srv->cfg.device) != 0)
    dashd__log(DASHD_LOG_WARN, "SIGHUP: 'device' changes only on restart");
  if (strcmp(next.metrics_listen, srv->cfg.metrics_listen) != 0)
    dashd__log(DASHD_LOG_WARN,
               "SIGHUP: 'metrics_listen' changes only on restart");
  if (strcmp(next.socket_path, srv->cfg.socket_path) != 0)
    dashd__log(DASHD_LOG_WARN, "SIGHUP: 'socket' changes only on restart");
  if (next.backend != srv->cfg.backend)
    dashd__log(DASHD_LOG_WARN, "SIGHUP: 'backend' changes only on restart");
  if (next.threads != srv->cfg.threads)
    dashd__log(DASHD_LOG_WARN, "SIGHUP: 'threads' changes only on restart");
  if (next.max_frame != srv->cfg.max_frame)
    dashd__log(DASHD_LOG_WARN, "SIGHUP: 'max_frame' changes only on restart");
  snprintf(next.socket_path, sizeof(next.socket_path), "%s",
           srv->cfg.socket_path);
  next.backend = srv->cfg.backend;
  snprintf(next.device, sizeof(next.device), "%s", srv->cfg.device);
  snprintf(next.metrics_listen, sizeof(next.metrics_listen), "%s",
           srv->cfg.metrics_listen);
  next.threads = srv->cfg.threads;
  next.max_frame = srv->cfg.max_frame;
  srv->cfg = next;
  dashd__log_set_level(srv->cfg.log_level);
  notify_status(srv);
  dashd__log(DASHD_LOG_INFO,
             "SIGHUP: configuration reloaded from %s (log level %s, "
             "max_clients %u, max_stacks_per_client %u)",
             srv->config_path, dashd__log_level_name(srv->cfg.log_level),
             srv->cfg.max_clients, srv->cfg.max_stacks_per_client);
}

static void on_signal(uv_signal_t *h, int signum) {
  struct dashd_server *srv = h->data;
  if (signum == SIGHUP) {
    reload(srv);
    return;
  }
  dashd__log(DASHD_LOG_INFO, "signal %d received", signum);
  dashd__server_stop(srv);
}
