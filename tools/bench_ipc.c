/* dash-bench --ipc: what going through the daemon costs. For each stack
 * shape, in one run: the dash_step round trip (snapshot taken, reply
 * back), the step-to-adoption latency (dash_step, then dash_sync(-1) until
 * the result is held), and then the same computation in process with
 * dash_roots_execute(). */
#define _POSIX_C_SOURCE 200809L

#include "bench_ipc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dash/dash.h"

#define MAX_SHAPES 8

struct ipc_opts {
  const char *socket; /* NULL: start a private dashd */
  const char *dashd;  /* the daemon to start */
  size_t shapes[MAX_SHAPES][2];
  int nshapes;
  int repeat;
  int root;
  dash_method method;
  int threads;
  int json;
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The q-quantile of n sorted values (nearest rank). */
static double quantile(const double *v, int n, double q) {
  int i = (int)(q * n + 0.999999) - 1;
  if (i < 0)
    i = 0;
  if (i >= n)
    i = n - 1;
  return v[i];
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: dash-bench --ipc [options]\n"
          "Measures the cost of computing through dashd against the same\n"
          "computation in process.\n"
          "\n"
          "  --socket PATH   use the dashd listening there (default: start\n"
          "                  a private one on a temporary socket)\n"
          "  --dashd PATH    the daemon to start (default: dashd beside\n"
          "                  this program)\n"
          "  --shape NxB     a stack shape (repeatable; default 4x64,\n"
          "                  16x128, 8x512)\n"
          "  --repeat R      measurements per shape (default 200; shapes\n"
          "                  over 1 MiB use R/20, at least 5)\n"
          "  --root P        (default 4)\n"
          "  --method M      ndb, cn, evd, cheb or auto (default ndb)\n"
          "  --threads T     threads of the private daemon and of the\n"
          "                  in-process runs (default 0 = every core)\n"
          "  --json          one JSON object per shape\n"
          "  --help          this text\n");
}

static int parse_shape(const char *s, size_t *n, size_t *b) {
  char *end;
  errno = 0;
  unsigned long long nn = strtoull(s, &end, 10);
  if (errno || end == s || *end != 'x')
    return -1;
  const char *bs = end + 1;
  unsigned long long bb = strtoull(bs, &end, 10);
  if (errno || end == bs || *end != '\0' || nn == 0 || bb == 0)
    return -1;
  if (dash_roots_check_shape((size_t)nn, (size_t)bb) < 0)
    return -1;
  *n = (size_t)nn;
  *b = (size_t)bb;
  return 0;
}

static int parse(int argc, char **argv, struct ipc_opts *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--ipc") == 0)
      continue;
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0) {
      usage(stdout);
      return 1;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "dash-bench --ipc: unknown or incomplete '%s'\n", a);
      return -1;
    }
    const char *v = argv[++i];
    char *end;
    long x;
    if (strcmp(a, "--socket") == 0) {
      o->socket = v;
    } else if (strcmp(a, "--dashd") == 0) {
      o->dashd = v;
    } else if (strcmp(a, "--shape") == 0) {
      if (o->nshapes == MAX_SHAPES ||
          parse_shape(v, &o->shapes[o->nshapes][0], &o->shapes[o->nshapes][1]) <
              0) {
        fprintf(stderr, "dash-bench --ipc: bad or too many --shape '%s'\n", v);
        return -1;
      }
      o->nshapes++;
    } else if (strcmp(a, "--method") == 0) {
      if (dash_method_parse(v, &o->method) < 0) {
        fprintf(stderr, "dash-bench --ipc: unknown method '%s'\n", v);
        return -1;
      }
    } else if (strcmp(a, "--repeat") == 0 || strcmp(a, "--root") == 0 ||
               strcmp(a, "--threads") == 0) {
      errno = 0;
      x = strtol(v, &end, 10);
      if (errno || *end != '\0' || x < 0 || x > 1000000) {
        fprintf(stderr, "dash-bench --ipc: bad %s '%s'\n", a, v);
        return -1;
      }
      if (a[2] == 'r' && a[3] == 'e')
        o->repeat = (int)x;
      if (a[2] == 'r' && a[3] == 'o')
        o->root = (int)x;
      if (a[2] == 't')
        o->threads = (int)x;
    } else {
      fprintf(stderr, "dash-bench --ipc: unknown argument '%s'\n", a);
      return -1;
    }
  }
  if (o->repeat < 1)
    o->repeat = 1;
  return 0;
}

/* Statistics with a known, well-conditioned spectrum: blocks of
 * diag(1..2) plus a small symmetric coupling, so every method converges. */
static void fill_stats(float *x, size_t n, size_t b, unsigned salt) {
  for (size_t k = 0; k < n; k++) {
    float *blk = x + k * b * b;
    for (size_t i = 0; i < b; i++)
      for (size_t j = 0; j < b; j++) {
        float c = (float)(((i * 31 + j * 17 + k + salt) % 97) / 97.0 - 0.5);
        blk[i * b + j] = (i == j) ? 1.0f + (float)i / (float)b : 0.0f;
        if (i != j)
          blk[i * b + j] = 0.02f * c / (float)b;
      }
    for (size_t i = 0; i < b; i++)
      for (size_t j = 0; j < i; j++)
        blk[j * b + i] = blk[i * b + j];
  }
}

static pid_t start_daemon(const struct ipc_opts *o, const char *sock) {
  char threads[16];
  snprintf(threads, sizeof(threads), "%d", o->threads);
  pid_t pid = fork();
  if (pid == 0) {
    execl(o->dashd, o->dashd, "--socket", sock, "--threads", threads,
          "--log-level", "warn", (char *)NULL);
    fprintf(stderr, "dash-bench --ipc: cannot run %s: %s\n", o->dashd,
            strerror(errno));
    _exit(127);
  }
  return pid;
}

static int connect_retry(const char *sock, dash_client **c) {
  double deadline = now_ms() + 10000;
  int rc;
  while ((rc = dash_connect(sock, c)) == DASH_E_DISCONNECTED &&
         now_ms() < deadline) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return rc;
}

static int run_shape(dash_client *c, const struct ipc_opts *o, size_t n,
                     size_t b) {
  dash_stack_options so = DASH_STACK_OPTIONS_INIT;
  dash_roots_options ro = DASH_ROOTS_OPTIONS_INIT;
  dash_stack *s = NULL;
  dash_roots_plan *plan = NULL;
  double *rtt = NULL, *e2e = NULL, *direct = NULL, *daemon_ms = NULL;
  float *out = NULL;
  int rc = -1;
  size_t elems = n * b * b;
  int reps = o->repeat;
  if (elems * sizeof(float) > (1u << 20))
    reps = reps / 20 > 5 ? reps / 20 : 5;

  so.num_blocks = n;
  so.block_size = b;
  so.root = o->root;
  so.method = o->method;
  ro.root = o->root;
  ro.method = o->method;
  ro.threads = o->threads;
  rtt = calloc((size_t)reps, sizeof(double));
  e2e = calloc((size_t)reps, sizeof(double));
  direct = calloc((size_t)reps, sizeof(double));
  daemon_ms = calloc((size_t)reps, sizeof(double));
  out = malloc(elems * sizeof(float));
  if (!rtt || !e2e || !direct || !daemon_ms || !out)
    goto out;
  if ((rc = dash_stack_create(c, &so, &s)) < 0) {
    fprintf(stderr, "dash-bench --ipc: dash_stack_create: %s\n",
            dash_last_error());
    goto out;
  }
  if ((rc = dash_roots_plan_create(&plan, n, b, &ro)) < 0) {
    fprintf(stderr, "dash-bench --ipc: plan: %s\n", dash_last_error());
    goto out;
  }
  fill_stats(dash_stack_stats(s), n, b, 0);
  /* The daemon's round trips first, then the same computation in process:
   * interleaved, the in-process run's threads were still winding down when
   * the next dash_step went out, and its latency measured them. */
  fprintf(stderr, "[ipc] %zux%zu: %d measurements ...\n", n, b, reps);
  for (int r = -1; r < reps; r++) { /* r = -1 warms up */
    dash_refresh_info info;
    double t0 = now_ms();
    if ((rc = dash_step(s, (uint64_t)(r + 2), NULL)) < 0)
      goto fail;
    double t1 = now_ms();
    if ((rc = dash_sync(s, -1, &info)) < 0)
      goto fail;
    double t2 = now_ms();
    if (r >= 0) {
      rtt[r] = t1 - t0;
      e2e[r] = t2 - t0;
      daemon_ms[r] = info.compute_ms;
    }
  }
  for (int r = -1; r < reps; r++) {
    dash_roots_report rep;
    double t3 = now_ms();
    if ((rc = dash_roots_execute(plan, out, dash_stack_stats(s), NULL, &rep)) <
        0)
      goto fail;
    double t4 = now_ms();
    if (r >= 0)
      direct[r] = t4 - t3;
  }
  qsort(rtt, (size_t)reps, sizeof(double), cmp_double);
  qsort(e2e, (size_t)reps, sizeof(double), cmp_double);
  qsort(direct, (size_t)reps, sizeof(double), cmp_double);
  qsort(daemon_ms, (size_t)reps, sizeof(double), cmp_double);
  double ratio = quantile(e2e, reps, 0.5) / quantile(direct, reps, 0.5);
  if (o->json) {
    printf(
        "{\"record\": \"ipc\", \"N\": %zu, \"B\": %zu, \"root\": %d, "
        "\"method\": \"%s\", \"repeat\": %d, \"step_p50_us\": %.1f, "
        "\"step_p99_us\": %.1f, \"refresh_p50_ms\": %.4f, "
        "\"refresh_p99_ms\": %.4f, \"daemon_compute_p50_ms\": %.4f, "
        "\"direct_p50_ms\": %.4f, \"refresh_over_direct\": %.4f}\n",
        n, b, o->root, dash_method_name(o->method), reps,
        1e3 * quantile(rtt, reps, 0.5), 1e3 * quantile(rtt, reps, 0.99),
        quantile(e2e, reps, 0.5), quantile(e2e, reps, 0.99),
        quantile(daemon_ms, reps, 0.5), quantile(direct, reps, 0.5), ratio);
  } else {
    char shape[32];
    snprintf(shape, sizeof(shape), "%zux%zu", n, b);
    printf("%-9s %6d %10.1f %10.1f %12.3f %12.3f %12.3f %12.3f %8.3f\n", shape,
           reps, 1e3 * quantile(rtt, reps, 0.5),
           1e3 * quantile(rtt, reps, 0.99), quantile(e2e, reps, 0.5),
           quantile(e2e, reps, 0.99), quantile(daemon_ms, reps, 0.5),
           quantile(direct, reps, 0.5), ratio);
  }
  fflush(stdout);
  rc = 0;
  goto out;
fail:
  fprintf(stderr, "dash-bench --ipc: %s: %s\n", dash_status_name(rc),
          dash_last_error());
out:
  dash_stack_destroy(s);
  dash_roots_plan_destroy(plan);
  free(rtt);
  free(e2e);
  free(direct);
  free(daemon_ms);
  free(out);
  return rc;
}

int dash__bench_ipc(int argc, char **argv) {
  struct ipc_opts o = {0};
  char dir[] = "/tmp/dash-bench-ipc-XXXXXX";
  char sock[PATH_MAX], self[PATH_MAX], dashd[PATH_MAX];
  pid_t pid = -1;
  dash_client *c = NULL;
  int status = 1;

  o.repeat = 200;
  o.root = 4;
  o.method = DASH_METHOD_NEWTON_DB;
  int prc = parse(argc, argv, &o);
  if (prc != 0)
    return prc > 0 ? 0 : 64;
  if (o.nshapes == 0) {
    size_t def[3][2] = {{4, 64}, {16, 128}, {8, 512}};
    for (int i = 0; i < 3; i++) {
      o.shapes[i][0] = def[i][0];
      o.shapes[i][1] = def[i][1];
    }
    o.nshapes = 3;
  }
  if (o.socket == NULL) {
    if (o.dashd == NULL) {
      ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
      if (len <= 0)
        return 1;
      self[len] = '\0';
      char *slash = strrchr(self, '/');
      if (slash)
        *slash = '\0';
      if (snprintf(dashd, sizeof(dashd), "%.*s/dashd", PATH_MAX - 8, self) >=
          (int)sizeof(dashd))
        return 1;
      o.dashd = dashd;
    }
    if (mkdtemp(dir) == NULL)
      return 1;
    snprintf(sock, sizeof(sock), "%s/sock", dir);
    pid = start_daemon(&o, sock);
    o.socket = sock;
  }
  if (connect_retry(o.socket, &c) < 0) {
    fprintf(stderr, "dash-bench --ipc: cannot reach dashd at %s: %s\n",
            o.socket, dash_last_error());
    goto out;
  }
  if (!o.json)
    printf("%-9s %6s %10s %10s %12s %12s %12s %12s %8s\n", "shape", "reps",
           "step p50us", "step p99us", "refresh p50", "refresh p99",
           "daemon p50", "direct p50", "ratio");
  for (int i = 0; i < o.nshapes; i++) {
    if (run_shape(c, &o, o.shapes[i][0], o.shapes[i][1]) < 0)
      goto out;
  }
  if (!o.json)
    printf(
        "refresh = dash_step + dash_sync(-1) until adopted (ms); daemon = "
        "its compute time; direct = dash_roots_execute in process; ratio "
        "= refresh p50 / direct p50\n");
  status = 0;
out:
  dash_disconnect(c);
  if (pid > 0) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    rmdir(dir);
  }
  return status;
}
