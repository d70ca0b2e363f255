/* The Prometheus endpoint: `GET /metrics` on the TCP address of
 * metrics_listen (off by default), one request per connection, the same
 * text `dashctl metrics` prints. Loop thread only. A connection that does
 * not finish its request in kRequestMs, or sends more than a request
 * line and headers fit in, is closed; beyond kMaxConns at once, new ones
 * get 503. Nothing here touches the stacks or the clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashd.h"
#include "log.h"

enum { kMaxConns = 16, kRequestMs = 5000, kRequestMax = 4096 };

struct dashd_http_conn {
  struct dashd_server *srv;
  struct dashd_http_conn *next;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  char in[kRequestMax];
  size_t in_len;
  char *out;
  int open_handles; /* freed when both handles have closed */
  int head;         /* a HEAD request */
  int closing;
};

static void on_handle_closed(uv_handle_t *h) {
  struct dashd_http_conn *c = h->data;
  if (--c->open_handles > 0)
    return;
  free(c->out);
  free(c);
}

static void conn_close(struct dashd_http_conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  struct dashd_server *srv = c->srv;
  for (struct dashd_http_conn **p = &srv->http_conns; *p != NULL;
       p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      break;
    }
  }
  srv->n_http_conns--;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_written(uv_write_t *w, int status) {
  conn_close(w->data);
}

/* Sends a whole response and closes the connection after it. */
static void respond(struct dashd_http_conn *c, int code, const char *reason,
                    const char *type, const char *body) {
  size_t body_len = strlen(body);
  /* HEAD: the headers GET would send, without the body. */
  size_t send_len = c->head ? 0 : body_len;
  size_t cap = body_len + 256;
  c->out = malloc(cap);
  if (c->out == NULL) {
    conn_close(c);
    return;
  }
  int n = snprintf(c->out, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   code, reason, type, body_len);
  memcpy(c->out + n, body, send_len);
  uv_buf_t buf = uv_buf_init(c->out, (unsigned)(n + send_len));
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->write.data = c;
  if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
    conn_close(c);
}

static void handle_request(struct dashd_http_conn *c) {
  static const char kText[] = "text/plain; charset=utf-8";
  char method[8] = "", path[64] = "";
  /* The request line only: "METHOD PATH HTTP/x.y". */
  if (sscanf(c->in, "%7s %63s", method, path) != 2) {
    respond(c, 400, "Bad Request", kText, "bad request\n");
    return;
  }
  c->head = strcmp(method, "HEAD") == 0;
  if (strcmp(method, "GET") != 0 && !c->head) {
    respond(c, 405, "Method Not Allowed", kText, "GET /metrics only\n");
    return;
  }
  size_t plen = strcspn(path, "?");
  if (plen != strlen("/metrics") || strncmp(path, "/metrics", plen) != 0) {
    respond(c, 404, "Not Found", kText, "the metrics are at /metrics\n");
    return;
  }
  char *text = dashd__metrics_render(c->srv);
  if (text == NULL) {
    respond(c, 500, "Internal Server Error", kText, "out of memory\n");
    return;
  }
  respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text);
  free(text);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct dashd_http_conn *c = h->data;
  buf->base = c->in + c->in_len;
  buf->len = sizeof(c->in) - 1 - c->in_len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct dashd_http_conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in_len += (size_t)nread;
  c->in[c->in_len] = '\0';
  if (strstr(c->in, "\r\n\r\n") != NULL || strstr(c->in, "\n\n") != NULL) {
    handle_request(c);
    return;
  }
  if (c->in_len >= sizeof(c->in) - 1)
    respond(c, 431, "Request Header Fields Too Large",
            "text/plain; charset=utf-8", "request too large\n");
}

static void on_timeout(uv_timer_t *t) {
  conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status) {
  struct dashd_server *srv = server->data;
  if (status < 0)
    return;
  struct dashd_http_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = srv->http_conns;
  srv->http_conns = c;
  srv->n_http_conns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, kRequestMs, 0);
  if (srv->n_http_conns > kMaxConns) {
    respond(c, 503, "Service Unavailable", "text/plain; charset=utf-8",
            "too many connections\n");
    return;
  }
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

int dashd__http_start(struct dashd_server *srv) {
  struct sockaddr_storage addr;
  char name[INET6_ADDRSTRLEN + 16];
  int rc;
  if (srv->cfg.metrics_listen[0] == '\0')
    return 0;
  if (dashd__config_parse_addr(srv->cfg.metrics_listen, &addr) < 0) {
    dashd__log(DASHD_LOG_ERROR, "metrics_listen '%s' is not HOST:PORT",
               srv->cfg.metrics_listen);
    return DASH_E_INVALID;
  }
  uv_tcp_init(srv->loop, &srv->metrics_tcp);
  srv->metrics_tcp.data = srv;
  srv->metrics_on = 1;
  if ((rc = uv_tcp_bind(&srv->metrics_tcp, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&srv->metrics_tcp, 16, on_connection)) !=
          0) {
    dashd__log(DASHD_LOG_ERROR, "cannot serve metrics on %s: %s",
               srv->cfg.metrics_listen, uv_strerror(rc));
    return DASH_E_IO;
  }
  /* The address bound, port 0 resolved, for the log and for tests. */
  struct sockaddr_storage got;
  int len = sizeof(got);
  uv_tcp_getsockname(&srv->metrics_tcp, (struct sockaddr *)&got, &len);
  int port;
  if (got.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&got, name + 1, sizeof(name) - 2);
    name[0] = '[';
    strcat(name, "]");
    port = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&got, name, sizeof(name));
    port = ntohs(((struct sockaddr_in *)&got)->sin_port);
  }
  dashd__log(DASHD_LOG_INFO, "metrics on http://%s:%d/metrics", name, port);
  return 0;
}

void dashd__http_stop(struct dashd_server *srv) {
  if (!srv->metrics_on)
    return;
  srv->metrics_on = 0;
  uv_close((uv_handle_t *)&srv->metrics_tcp, NULL);
  while (srv->http_conns != NULL)
    conn_close(srv->http_conns);
}
