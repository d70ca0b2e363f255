/* dashctl: asks a running dashd whether it is alive and what it does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dash/dash.h"
#include "internal.h"
#include "paths.h"

enum { EXIT_DAEMON = 1, EXIT_USAGE = 2 };

static void usage(FILE *f) {
  fputs(
      "usage: dashctl [--socket PATH] ping\n"
      "       dashctl [--socket PATH] status [--json]\n"
      "       dashctl [--socket PATH] metrics\n"
      "       dashctl --help | --version\n"
      "\n"
      "  ping            round trip to the daemon\n"
      "  status          the daemon and every stack it serves\n"
      "  metrics         counters and gauges, Prometheus text format\n"
      "  --json          status as one JSON object\n"
      "  --socket PATH   the daemon's socket (default: $DASHD_SOCKET, else\n"
      "                  /run/dashd/dashd.sock for root, else\n"
      "                  $XDG_RUNTIME_DIR/dashd.sock)\n"
      "\n"
      "Exit status: 0 ok, 1 the daemon failed or is unreachable, 2 usage.\n",
      f);
}

static int usage_error(const char *what, const char *arg) {
  fprintf(stderr, "dashctl: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
  usage(stderr);
  return EXIT_USAGE;
}

/* Writes s as a JSON string: quotes, backslashes and control characters
 * escaped; other bytes (UTF-8 included) as they are. */
static void json_string(const char *s) {
  putchar('"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      printf("\\%c", *p);
    else if (*p < 0x20)
      printf("\\u%04x", *p);
    else
      putchar(*p);
  }
  putchar('"');
}

/* JSON has no NaN or Inf. */
static void json_number(double x) {
  if (isfinite(x))
    printf("%.17g", x);
  else
    fputs("null", stdout);
}

static const char *method_name(int32_t m, char *buf, size_t len) {
  const char *name = dash_method_name((dash_method)m);
  if (name != NULL)
    return name;
  snprintf(buf, len, "?%d", (int)m);
  return buf;
}

/* Steps the result lags behind the statistics. */
static uint64_t staleness(const Dashpb__StackStatus *st) {
  return st->last_step_requested > st->last_step_done
             ? st->last_step_requested - st->last_step_done
             : 0;
}

static void print_json(const Dashpb__StatusReply *r) {
  char buf[16];
  fputs("{\"version\":", stdout);
  json_string(r->version);
  fputs(",\"backend\":", stdout);
  json_string(r->backend);
  fputs(",\"device\":", stdout);
  json_string(r->device);
  fputs(",\"uptime_s\":", stdout);
  json_number(r->uptime_s);
  printf(",\"clients\":%u,\"stacks\":[", r->clients);
  for (size_t i = 0; i < r->n_stacks; i++) {
    const Dashpb__StackStatus *st = r->stacks[i];
    printf(
        "%s{\"id\":%llu,\"owner_pid\":%u,\"owner_uid\":%u,"
        "\"num_blocks\":%llu,\"block_size\":%llu,\"method\":",
        i ? "," : "", (unsigned long long)st->stack_id, st->owner_pid,
        st->owner_uid, (unsigned long long)st->num_blocks,
        (unsigned long long)st->block_size);
    json_string(method_name(st->method, buf, sizeof(buf)));
    printf(",\"generation\":%llu,\"last_refresh_ms\":",
           (unsigned long long)st->generation);
    json_number(st->last_refresh_ms);
    printf(
        ",\"last_step_requested\":%llu,\"last_step_done\":%llu,"
        "\"staleness\":%llu,\"refreshes\":%llu,\"coalesced\":%llu,"
        "\"failures\":%llu,\"memory\":",
        (unsigned long long)st->last_step_requested,
        (unsigned long long)st->last_step_done,
        (unsigned long long)staleness(st), (unsigned long long)st->refreshes,
        (unsigned long long)st->coalesced, (unsigned long long)st->failures);
    json_string(st->memory);
    putchar('}');
  }
  fputs("]}\n", stdout);
}

#define COLS 12
#define CELL 48

static const char *const kHeads[COLS] = {
    "STACK",   "PID",   "UID",       "SHAPE",     "METHOD",   "GEN",
    "LAST MS", "STALE", "REFRESHES", "COALESCED", "FAILURES", "MEMORY"};

/* Text columns are left-aligned, numbers right-aligned. */
static int left_aligned(int col) {
  return col == 3 || col == 4 || col == 11;
}

static void fill_row(char (*row)[CELL], const Dashpb__StackStatus *st) {
  char buf[16];
  snprintf(row[0], CELL, "%llu", (unsigned long long)st->stack_id);
  snprintf(row[1], CELL, "%u", st->owner_pid);
  snprintf(row[2], CELL, "%u", st->owner_uid);
  snprintf(row[3], CELL, "%llux%llu", (unsigned long long)st->num_blocks,
           (unsigned long long)st->block_size);
  snprintf(row[4], CELL, "%s", method_name(st->method, buf, sizeof(buf)));
  snprintf(row[5], CELL, "%llu", (unsigned long long)st->generation);
  snprintf(row[6], CELL, "%.3f", st->last_refresh_ms);
  snprintf(row[7], CELL, "%llu", (unsigned long long)staleness(st));
  snprintf(row[8], CELL, "%llu", (unsigned long long)st->refreshes);
  snprintf(row[9], CELL, "%llu", (unsigned long long)st->coalesced);
  snprintf(row[10], CELL, "%llu", (unsigned long long)st->failures);
  snprintf(row[11], CELL, "%s", st->memory);
}

static void print_duration(double s) {
  if (!isfinite(s) || s < 60) {
    printf("%.1f s", s);
    return;
  }
  unsigned long long t = (unsigned long long)s;
  if (t >= 86400)
    printf("%llud ", t / 86400);
  printf("%02llu:%02llu:%02llu", t / 3600 % 24, t / 60 % 60, t % 60);
}

static int print_table(const Dashpb__StatusReply *r) {
  printf("dashd %s, backend %s, device %s, up ", r->version, r->backend,
         r->device);
  print_duration(r->uptime_s);
  printf(", %u client%s\n", r->clients, r->clients == 1 ? "" : "s");
  if (r->n_stacks == 0) {
    puts("no stacks");
    return 0;
  }
  char(*cells)[COLS][CELL] = calloc(r->n_stacks + 1, sizeof(*cells));
  if (cells == NULL) {
    fprintf(stderr, "dashctl: out of memory for %zu stacks\n", r->n_stacks);
    return EXIT_DAEMON;
  }
  size_t width[COLS] = {0};
  for (int k = 0; k < COLS; k++)
    snprintf(cells[0][k], CELL, "%s", kHeads[k]);
  for (size_t i = 0; i < r->n_stacks; i++)
    fill_row(cells[i + 1], r->stacks[i]);
  for (size_t i = 0; i <= r->n_stacks; i++)
    for (int k = 0; k < COLS; k++)
      if (strlen(cells[i][k]) > width[k])
        width[k] = strlen(cells[i][k]);
  for (size_t i = 0; i <= r->n_stacks; i++) {
    for (int k = 0; k < COLS; k++) {
      printf(left_aligned(k) ? "%-*s" : "%*s", (int)width[k], cells[i][k]);
      fputs(k == COLS - 1 ? "\n" : "  ", stdout);
    }
  }
  free(cells);
  return 0;
}

static int cmd_ping(dash_client *c) {
  double ms;
  if (dash_ping(c, &ms) < 0) {
    fprintf(stderr, "dashctl: dashd at %s: %s\n", c->socket_path,
            dash_last_error());
    return EXIT_DAEMON;
  }
  printf("pong from dashd %s in %.3f ms\n", c->daemon_version, ms);
  return 0;
}

static int cmd_status(dash_client *c, int json) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Status status = DASHPB__STATUS__INIT;
  Dashpb__Envelope *reply = NULL;
  int rc;

  req.body_case = DASHPB__ENVELOPE__BODY_STATUS_REQUEST;
  req.status_request = &status;
  if (dash__client_request(c, &req, NULL, 0, &reply) < 0) {
    fprintf(stderr, "dashctl: dashd at %s: %s\n", c->socket_path,
            dash_last_error());
    return EXIT_DAEMON;
  }
  if (reply->body_case != DASHPB__ENVELOPE__BODY_STATUS_REPLY ||
      reply->status_reply == NULL) {
    fprintf(stderr, "dashctl: dashd at %s answered Status with %d\n",
            c->socket_path, (int)reply->body_case);
    rc = EXIT_DAEMON;
    goto out;
  }
  if (json) {
    print_json(reply->status_reply);
    rc = 0;
  } else {
    rc = print_table(reply->status_reply);
  }
out:
  dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

static int cmd_metrics(dash_client *c) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Metrics metrics = DASHPB__METRICS__INIT;
  Dashpb__Envelope *reply = NULL;
  int rc = 0;

  req.body_case = DASHPB__ENVELOPE__BODY_METRICS;
  req.metrics = &metrics;
  if (dash__client_request(c, &req, NULL, 0, &reply) < 0) {
    fprintf(stderr, "dashctl: dashd at %s: %s\n", c->socket_path,
            dash_last_error());
    return EXIT_DAEMON;
  }
  if (reply->body_case != DASHPB__ENVELOPE__BODY_METRICS_REPLY ||
      reply->metrics_reply == NULL) {
    fprintf(stderr, "dashctl: dashd at %s answered Metrics with %d\n",
            c->socket_path, (int)reply->body_case);
    rc = EXIT_DAEMON;
  } else {
    fputs(reply->metrics_reply->text, stdout);
  }
  dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

int main(int argc, char **argv) {
  const char *socket_path = NULL, *cmd = NULL;
  char path[128];
  int json = 0, rc;
  dash_client *c = NULL;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("dashctl %s\n", DASH_VERSION);
      return 0;
    }
    if (strcmp(a, "--socket") == 0) {
      if (++i == argc)
        return usage_error("--socket needs a path", NULL);
      socket_path = argv[i];
    } else if (strncmp(a, "--socket=", 9) == 0) {
      socket_path = a + 9;
    } else if (strcmp(a, "--json") == 0) {
      json = 1;
    } else if (a[0] == '-') {
      return usage_error("unknown option", a);
    } else if (cmd != NULL) {
      return usage_error("one command at a time", a);
    } else if (strcmp(a, "ping") == 0 || strcmp(a, "status") == 0 ||
               strcmp(a, "metrics") == 0) {
      cmd = a;
    } else {
      return usage_error("unknown command", a);
    }
  }
  if (cmd == NULL)
    return usage_error("no command", NULL);
  if (json && strcmp(cmd, "status") != 0)
    return usage_error("--json goes with status", NULL);
  if (socket_path == NULL) {
    if (dash__default_socket_path(path, sizeof(path)) < 0) {
      fprintf(stderr, "dashctl: %s\n", dash_last_error());
      return EXIT_DAEMON;
    }
    socket_path = path;
  }
  if (dash_connect(socket_path, &c) < 0) {
    /* The detail names the socket path already. */
    fprintf(stderr, "dashctl: %s\n", dash_last_error());
    return EXIT_DAEMON;
  }
  if (strcmp(cmd, "ping") == 0)
    rc = cmd_ping(c);
  else if (strcmp(cmd, "metrics") == 0)
    rc = cmd_metrics(c);
  else
    rc = cmd_status(c, json);
  dash_disconnect(c);
  return rc;
}
