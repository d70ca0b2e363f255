/* dash-roots: inverse matrix roots of a .npy stack, from the command line.
 * Reads (N, B, B) or (B, B) float32/float64, writes float32 roots of the
 * same shape, and optionally a JSON report of every block's outcome. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dash/roots.h"
#include "npy.h"

#ifndef DASH_VERSION
#define DASH_VERSION "unknown"
#endif

/* Exit statuses: a caller can tell its own mistakes from ours. */
enum { EXIT_FAILED = 1, EXIT_USAGE = 2 };

enum flag_id {
  FLAG_IN,
  FLAG_OUT,
  FLAG_METHOD,
  FLAG_ROOT,
  FLAG_EPS,
  FLAG_SCALING,
  FLAG_STEPS,
  FLAG_TOL,
  FLAG_BACKEND,
  FLAG_PRECISION,
  FLAG_THREADS,
  FLAG_FALLBACK,
  FLAG_REPORT
};

static const struct flag {
  const char *name;
  enum flag_id id;
} flags[] = {
    {"--in", FLAG_IN},           {"--out", FLAG_OUT},
    {"--method", FLAG_METHOD},   {"--root", FLAG_ROOT},
    {"--eps", FLAG_EPS},         {"--scaling", FLAG_SCALING},
    {"--steps", FLAG_STEPS},     {"--tol", FLAG_TOL},
    {"--backend", FLAG_BACKEND}, {"--precision", FLAG_PRECISION},
    {"--threads", FLAG_THREADS}, {"--fallback", FLAG_FALLBACK},
    {"--report", FLAG_REPORT},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct cli {
  const char *in;
  const char *out;
  const char *report;
  dash_roots_options opts;
};

struct timings {
  double read, plan, write;
};

/* Prints one line on stderr: newlines inside a message (from a library
 * detail, say) are flattened so that scripts can rely on one line. */
static void error_line(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void error_line(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  for (char *c = line; *c; c++)
    if (*c == '\n' || *c == '\r')
      *c = ' ';
  fprintf(stderr, "dash-roots: %s\n", line);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(FILE *f) {
  static const dash_roots_options d = DASH_ROOTS_OPTIONS_INIT;
  fprintf(f,
          "Usage: dash-roots --in FILE --out FILE [options]\n"
          "\n"
          "Computes X = (A + eps*I)^(-1/p) for every block A of a stack of\n"
          "symmetric positive semi-definite matrices in a .npy file of shape\n"
          "(N, B, B) or (B, B), dtype float32 or float64, and writes the\n"
          "roots as float32 .npy of the same shape.\n"
          "\n"
          "  --in FILE        input .npy (required)\n"
          "  --out FILE       output .npy, replaced atomically (required)\n"
          "  --method M       ndb, cn, evd, cheb or auto (default %s)\n"
          "  --root P         2 or 4; any P >= 1 with evd (default %d)\n"
          "  --eps E          ridge added to the diagonal, >= 0 "
          "(default %g)\n"
          "  --scaling S      pi, pi-multi or fro (default %s)\n"
          "  --steps K        Newton step limit, 1..1000 (default %d)\n"
          "  --tol T          early-exit tolerance, >= 0; 0 runs every step\n"
          "                   (default %g)\n"
          "  --backend B      cpu, cuda or auto (default %s)\n"
          "  --precision P    fp32, tf32, bf16 or fp16 (default %s)\n"
          "  --threads N      CPU threads, 0 = every online core "
          "(default %d)\n"
          "  --fallback F     none, diverged or unconverged: which blocks\n"
          "                   are recomputed by evd (default %s)\n"
          "  --report FILE    also write per-block diagnostics as JSON\n"
          "  --help           show this text and exit\n"
          "  --version        show the version and exit\n"
          "\n"
          "Flags take their value as the next argument or after '='.\n"
          "Blocks whose input holds NaN or Inf are written as NaN and\n"
          "reported as NONFINITE_INPUT.\n"
          "\n"
          "Exit status: 0 when every block was handled (see the report for\n"
          "each block's outcome), 1 when the computation or writing failed,\n"
          "2 for bad usage or malformed input.\n",
          dash_method_name(d.method), d.root, d.eps,
          dash_scaling_name(d.scaling), d.max_steps, d.tol,
          dash_backend_name(d.backend), dash_precision_name(d.precision),
          d.threads, dash_fallback_name(d.fallback));
}

/* A whole decimal integer in [lo, hi]: no blanks, no trailing text. */
static int parse_int(const char *flag, const char *s, long lo, long hi,
                     int *out) {
  char *end;
  long v;
  errno = 0;
  if (*s == '\0' || !(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')))
    goto bad;
  v = strtol(s, &end, 10);
  if (*end != '\0')
    goto bad;
  if (errno == ERANGE || v < lo || v > hi) {
    /* Bounds of INT_MAX are the type's, not the option's: don't cite
     * them. */
    if (hi < INT_MAX)
      error_line("%s %s is out of range [%ld, %ld]", flag, s, lo, hi);
    else if (errno == ERANGE || v > hi)
      error_line("%s %s is too large", flag, s);
    else
      error_line("%s %s must be at least %ld", flag, s, lo);
    return -1;
  }
  *out = (int)v;
  return 0;
bad:
  error_line("%s '%s' is not an integer", flag, s);
  return -1;
}

/* A whole finite decimal number >= 0. */
static int parse_nonneg(const char *flag, const char *s, double *out) {
  char *end;
  double v;
  errno = 0;
  /* strtod would skip leading blanks and accept "nan" and "inf". */
  if (!(*s == '+' || *s == '-' || *s == '.' || (*s >= '0' && *s <= '9')))
    goto bad;
  v = strtod(s, &end);
  if (end == s || *end != '\0')
    goto bad;
  if ((errno == ERANGE && isinf(v)) || !isfinite(v) || v < 0) {
    error_line("%s %s must be a finite number >= 0", flag, s);
    return -1;
  }
  *out = v;
  return 0;
bad:
  error_line("%s '%s' is not a number", flag, s);
  return -1;
}

static int apply_flag(struct cli *c, const struct flag *f, const char *v) {
  dash_roots_options *o = &c->opts;
  switch (f->id) {
    case FLAG_IN:
    case FLAG_OUT:
    case FLAG_REPORT:
      if (*v == '\0') {
        error_line("%s needs a file name", f->name);
        return -1;
      }
      if (f->id == FLAG_IN)
        c->in = v;
      if (f->id == FLAG_OUT)
        c->out = v;
      if (f->id == FLAG_REPORT)
        c->report = v;
      return 0;
    case FLAG_METHOD:
      if (dash_method_parse(v, &o->method) == 0)
        return 0;
      error_line("unknown --method '%s': need ndb, cn, evd, cheb or auto", v);
      return -1;
    case FLAG_SCALING:
      if (dash_scaling_parse(v, &o->scaling) == 0)
        return 0;
      error_line("unknown --scaling '%s': need pi, pi-multi or fro", v);
      return -1;
    case FLAG_BACKEND:
      if (dash_backend_parse(v, &o->backend) == 0)
        return 0;
      error_line("unknown --backend '%s': need cpu, cuda or auto", v);
      return -1;
    case FLAG_PRECISION:
      if (dash_precision_parse(v, &o->precision) == 0)
        return 0;
      error_line("unknown --precision '%s': need fp32, tf32, bf16 or fp16", v);
      return -1;
    case FLAG_FALLBACK:
      if (dash_fallback_parse(v, &o->fallback) == 0)
        return 0;
      error_line(
          "unknown --fallback '%s': need none, diverged or "
          "unconverged",
          v);
      return -1;
    /* The bounds here are the ones roots.h documents; the library checks
     * the rest (e.g. which roots a method supports) when planning. */
    case FLAG_ROOT:
      return parse_int(f->name, v, 1, INT_MAX, &o->root);
    case FLAG_STEPS:
      return parse_int(f->name, v, 1, 1000, &o->max_steps);
    case FLAG_THREADS:
      return parse_int(f->name, v, 0, INT_MAX, &o->threads);
    case FLAG_EPS:
      return parse_nonneg(f->name, v, &o->eps);
    case FLAG_TOL:
      return parse_nonneg(f->name, v, &o->tol);
  }
  return -1;
}

/* Returns 0 to run, 1 when --help or --version was answered, -1 for bad
 * usage (already reported). */
static int parse_args(struct cli *c, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const struct flag *f = NULL;
    const char *value;

    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (strcmp(arg, "--version") == 0) {
      printf("dash-roots %s\n", DASH_VERSION);
      return 1;
    }
    if (strncmp(arg, "--", 2) != 0) {
      error_line("unexpected argument '%s' (see --help)", arg);
      return -1;
    }
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (size_t k = 0; k < COUNT(flags); k++) {
      if (strlen(flags[k].name) == name_len &&
          strncmp(flags[k].name, arg, name_len) == 0)
        f = &flags[k];
    }
    if (f == NULL) {
      error_line("unknown flag '%.*s' (see --help)", (int)name_len, arg);
      return -1;
    }
    if (eq != NULL) {
      value = eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      error_line("%s needs a value (see --help)", f->name);
      return -1;
    }
    if (apply_flag(c, f, value) < 0)
      return -1;
  }
  if (c->in == NULL) {
    error_line("missing --in FILE (see --help)");
    return -1;
  }
  if (c->out == NULL) {
    error_line("missing --out FILE (see --help)");
    return -1;
  }
  return 0;
}

/* The shortest of %.15g..%.17g that reads back as the same double, and
 * null for NaN and Inf, which JSON cannot spell. */
static void json_double(FILE *f, double v) {
  char buf[40];
  if (!isfinite(v)) {
    fputs("null", f);
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof(buf), "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  fputs(buf, f);
}

static void json_float(FILE *f, float v) {
  char buf[32];
  if (!isfinite(v)) {
    fputs("null", f);
    return;
  }
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, sizeof(buf), "%.*g", prec, (double)v);
    if ((float)strtod(buf, NULL) == v)
      break;
  }
  fputs(buf, f);
}

/* Milliseconds to the tenth of a microsecond; more digits are noise. */
static void json_ms(FILE *f, double v) {
  if (isfinite(v))
    fprintf(f, "%.4f", v);
  else
    fputs("null", f);
}

static const char *block_status_name(dash_block_status s) {
  const char *name = dash_block_status_name(s);
  return name ? name : "UNKNOWN";
}

static void write_report_body(FILE *f, const dash_roots_options *o,
                              const dash_roots_report *rep,
                              const dash_block_info *infos,
                              const dash_npy_stack *st,
                              const struct timings *t) {
  fprintf(f, "{\n  \"method\": \"%s\",\n", dash_method_name(rep->method));
  fprintf(f, "  \"scaling\": \"%s\",\n", dash_scaling_name(rep->scaling));
  fprintf(f, "  \"backend\": \"%s\",\n", dash_backend_name(rep->backend));
  fprintf(f, "  \"precision\": \"%s\",\n", dash_precision_name(o->precision));
  fprintf(f, "  \"fallback\": \"%s\",\n", dash_fallback_name(o->fallback));
  fprintf(f, "  \"root\": %d,\n  \"eps\": ", o->root);
  json_double(f, o->eps);
  fprintf(f, ",\n  \"max_steps\": %d,\n  \"tol\": ", o->max_steps);
  json_double(f, o->tol);
  fprintf(f, ",\n  \"input_dtype\": \"<f%d\",\n", st->file_itemsize);
  fprintf(f, "  \"num_blocks\": %zu,\n  \"block_size\": %zu,\n", st->num_blocks,
          st->block_size);
  fputs("  \"ms_total\": ", f);
  json_ms(f, rep->ms_total);
  fputs(",\n  \"ms_read\": ", f);
  json_ms(f, t->read);
  fputs(",\n  \"ms_plan\": ", f);
  json_ms(f, t->plan);
  fputs(",\n  \"ms_write\": ", f);
  json_ms(f, t->write);
  fprintf(f, ",\n  \"max_iterations\": %d,\n  \"blocks_by_status\": {",
          rep->max_iterations);
  for (int s = 0; s < DASH_BLOCK_STATUS_COUNT; s++)
    fprintf(f, "%s\"%s\": %llu", s ? ", " : "",
            block_status_name((dash_block_status)s),
            (unsigned long long)rep->blocks_by_status[s]);
  fputs("},\n  \"blocks\": [", f);
  for (size_t i = 0; i < st->num_blocks; i++) {
    fprintf(f, "%s\n    {\"index\": %zu, \"iterations\": %d, \"residual\": ",
            i ? "," : "", i, infos[i].iterations);
    json_float(f, infos[i].residual);
    fputs(", \"lambda_max\": ", f);
    json_float(f, infos[i].lambda_max);
    fprintf(f, ", \"status\": \"%s\"}", block_status_name(infos[i].status));
  }
  fputs("\n  ]\n}\n", f);
}

/* The report is written next to its final name and renamed into place, as
 * the output array is, so that readers never see half a report. It is
 * created before anything is computed, so that a report path that cannot
 * be written fails the run early instead of after the output was written.
 */
struct report_file {
  const char *path;
  char *tmp;
  FILE *f;
};

static int report_open(struct report_file *r, const char *path) {
  size_t len = strlen(path);
  r->path = path;
  r->f = NULL;
  r->tmp = malloc(len + 5);
  if (r->tmp == NULL) {
    error_line("%s: out of memory", path);
    return -1;
  }
  memcpy(r->tmp, path, len);
  memcpy(r->tmp + len, ".tmp", 5);
  r->f = fopen(r->tmp, "w");
  if (r->f == NULL) {
    error_line("cannot create '%s': %s", r->tmp, strerror(errno));
    free(r->tmp);
    r->tmp = NULL;
    return -1;
  }
  return 0;
}

/* Removes the temporary file of a report that will not be committed. */
static void report_discard(struct report_file *r) {
  if (r->f != NULL) {
    fclose(r->f);
    unlink(r->tmp);
  }
  free(r->tmp);
  r->tmp = NULL;
  r->f = NULL;
}

static int report_commit(struct report_file *r, const dash_roots_options *o,
                         const dash_roots_report *rep,
                         const dash_block_info *infos, const dash_npy_stack *st,
                         const struct timings *t) {
  FILE *f = r->f;
  int rc = -1;

  write_report_body(f, o, rep, infos, st, t);
  errno = 0;
  int failed = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
  int saved = errno;
  r->f = NULL;
  if (fclose(f) != 0 && !failed) {
    failed = 1;
    saved = errno;
  }
  if (failed) {
    error_line("cannot write '%s': %s", r->tmp,
               saved ? strerror(saved) : "write error");
    unlink(r->tmp);
    goto out;
  }
  if (rename(r->tmp, r->path) < 0) {
    error_line("cannot rename '%s' to '%s': %s", r->tmp, r->path,
               strerror(errno));
    unlink(r->tmp);
    goto out;
  }
  rc = 0;
out:
  free(r->tmp);
  r->tmp = NULL;
  return rc;
}

/* Options the caller got wrong (or this machine cannot honour) are usage
 * errors; anything else is a failure of ours. */
static int plan_exit_code(int rc) {
  return rc == DASH_E_INVALID || rc == DASH_E_UNSUPPORTED ||
                 rc == DASH_E_TOO_LARGE || rc == DASH_E_NO_DEVICE
             ? EXIT_USAGE
             : EXIT_FAILED;
}

static void print_summary(const dash_npy_stack *st,
                          const dash_roots_report *rep) {
  char counts[256];
  size_t len = 0;
  counts[0] = '\0';
  for (int s = 0; s < DASH_BLOCK_STATUS_COUNT; s++) {
    if (rep->blocks_by_status[s] == 0 || len >= sizeof(counts))
      continue;
    int n =
        snprintf(counts + len, sizeof(counts) - len, "%s%llu %s",
                 len ? ", " : "", (unsigned long long)rep->blocks_by_status[s],
                 block_status_name((dash_block_status)s));
    if (n > 0)
      len += (size_t)n;
  }
  fprintf(stderr, "dash-roots: %zu block%s of %zux%zu, %s on %s, %.3f ms: %s\n",
          st->num_blocks, st->num_blocks == 1 ? "" : "s", st->block_size,
          st->block_size, dash_method_name(rep->method),
          dash_backend_name(rep->backend), rep->ms_total, counts);
}

int main(int argc, char **argv) {
  struct cli c = {NULL, NULL, NULL, DASH_ROOTS_OPTIONS_INIT};
  dash_npy_stack st = {NULL, 0, 0, 0, 0};
  dash_roots_plan *plan = NULL;
  dash_block_info *infos = NULL;
  dash_roots_report rep;
  struct report_file report = {NULL, NULL, NULL};
  struct timings t = {0, 0, 0};
  float *roots = NULL;
  char msg[512];
  int status = EXIT_FAILED;
  double t0;
  int rc;

  rc = parse_args(&c, argc, argv);
  if (rc != 0) {
    status = rc > 0 ? EXIT_SUCCESS : EXIT_USAGE;
    goto out;
  }

  if (c.report != NULL && report_open(&report, c.report) < 0)
    goto out;

  t0 = now_ms();
  rc = dash_npy_read_stack(&st, c.in, msg, sizeof(msg));
  t.read = now_ms() - t0;
  if (rc < 0) {
    error_line("%s: %s", c.in, msg);
    status = rc == DASH_E_NOMEM ? EXIT_FAILED : EXIT_USAGE;
    goto out;
  }

  t0 = now_ms();
  rc = dash_roots_plan_create(&plan, st.num_blocks, st.block_size, &c.opts);
  t.plan = now_ms() - t0;
  if (rc < 0) {
    error_line("%s: %s", dash_status_name(rc),
               *dash_last_error() ? dash_last_error() : dash_strerror(rc));
    status = plan_exit_code(rc);
    goto out;
  }

  size_t count = st.num_blocks * st.block_size * st.block_size;
  roots = malloc(count * sizeof(float));
  infos = calloc(st.num_blocks, sizeof(*infos));
  if (roots == NULL || infos == NULL) {
    error_line("cannot allocate %zu bytes for the roots",
               count * sizeof(float));
    goto out;
  }
  /* The library leaves blocks with non-finite input untouched; NaN there
   * tells whoever reads the file not to use them. */
  for (size_t i = 0; i < count; i++)
    roots[i] = NAN;

  rc = dash_roots_execute(plan, roots, st.data, infos, &rep);
  if (rc < 0) {
    error_line("computation failed: %s: %s", dash_status_name(rc),
               *dash_last_error() ? dash_last_error() : dash_strerror(rc));
    goto out;
  }

  size_t shape[3] = {st.num_blocks, st.block_size, st.block_size};
  t0 = now_ms();
  rc = st.ndim == 3
           ? dash_npy_write_f32(c.out, roots, shape, 3, msg, sizeof(msg))
           : dash_npy_write_f32(c.out, roots, shape + 1, 2, msg, sizeof(msg));
  t.write = now_ms() - t0;
  if (rc < 0) {
    error_line("%s: %s", c.out, msg);
    goto out;
  }
  if (c.report != NULL && report_commit(&report, dash_roots_plan_options(plan),
                                        &rep, infos, &st, &t) < 0)
    goto out;
  print_summary(&st, &rep);
  status = EXIT_SUCCESS;
out:
  report_discard(&report);
  free(roots);
  free(infos);
  dash_roots_plan_destroy(plan);
  dash_npy_stack_free(&st);
  return status;
}
