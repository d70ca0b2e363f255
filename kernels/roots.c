/* The public entry points of roots.h: option checks, dispatch to a
 * backend, and the per-execution report. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

double dash__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int dash__all_finite(const float *x, size_t n) {
  /* Summing x·0 keeps the loop branch-free and vectorizable: the sum stays
   * 0 exactly when no element is NaN or Inf. */
  float acc = 0.0f;
  for (size_t i = 0; i < n; i++)
    acc += x[i] * 0.0f;
  return acc == 0.0f;
}

/* One table for each enum: value, short name, long name. */
struct name_row {
  int value;
  const char *name;
  const char *alias;
};

static const struct name_row method_names[] = {
    {DASH_METHOD_AUTO, "auto", "auto"},
    {DASH_METHOD_NEWTON_DB, "ndb", "newton_db"},
    {DASH_METHOD_COUPLED_NEWTON, "cn", "coupled_newton"},
    {DASH_METHOD_EVD, "evd", "eigh"},
    {DASH_METHOD_CHEBYSHEV, "cheb", "chebyshev"},
};
static const struct name_row scaling_names[] = {
    {DASH_SCALING_POWER_ITER, "pi", "power_iter"},
    {DASH_SCALING_POWER_ITER_MULTI, "pi-multi", "power_iter_multi"},
    {DASH_SCALING_FROBENIUS, "fro", "frobenius"},
};
static const struct name_row backend_names[] = {
    {DASH_BACKEND_AUTO, "auto", "auto"},
    {DASH_BACKEND_CPU, "cpu", "cpu"},
    {DASH_BACKEND_CUDA, "cuda", "gpu"},
};
static const struct name_row precision_names[] = {
    {DASH_PRECISION_FP32, "fp32", "float32"},
    {DASH_PRECISION_TF32, "tf32", "tf32"},
    {DASH_PRECISION_BF16, "bf16", "bfloat16"},
    {DASH_PRECISION_FP16, "fp16", "float16"},
};
static const struct name_row fallback_names[] = {
    {DASH_FALLBACK_NONE, "none", "none"},
    {DASH_FALLBACK_DIVERGED, "diverged", "diverged"},
    {DASH_FALLBACK_UNCONVERGED, "unconverged", "unconverged"},
};
static const struct name_row block_status_names[] = {
    {DASH_BLOCK_OK, "OK", "OK"},
    {DASH_BLOCK_NONFINITE_INPUT, "NONFINITE_INPUT", "NONFINITE_INPUT"},
    {DASH_BLOCK_NOT_CONVERGED, "NOT_CONVERGED", "NOT_CONVERGED"},
    {DASH_BLOCK_FALLBACK_EVD, "FALLBACK_EVD", "FALLBACK_EVD"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const struct name_row *rows, size_t n, int v) {
  for (size_t i = 0; i < n; i++)
    if (rows[i].value == v)
      return rows[i].name;
  return NULL;
}

static int parse_name(const struct name_row *rows, size_t n, const char *s,
                      const char *what, int *out) {
  if (s != NULL) {
    for (size_t i = 0; i < n; i++) {
      if (strcmp(s, rows[i].name) == 0 || strcmp(s, rows[i].alias) == 0) {
        *out = rows[i].value;
        return 0;
      }
    }
  }
  return dash__fail(DASH_E_INVALID, "unknown %s '%s'", what, s ? s : "(null)");
}

#define NAME_FUNCS(type, table, what)                      \
  const char *type##_name(type v) {                        \
    return name_of(table, COUNT(table), (int)v);           \
  }                                                        \
  int type##_parse(const char *s, type *out) {             \
    int v = 0;                                             \
    int rc = parse_name(table, COUNT(table), s, what, &v); \
    if (rc == 0)                                           \
      *out = (type)v;                                      \
    return rc;                                             \
  }

NAME_FUNCS(dash_method, method_names, "method")
NAME_FUNCS(dash_scaling, scaling_names, "scaling")
NAME_FUNCS(dash_backend, backend_names, "backend")
NAME_FUNCS(dash_precision, precision_names, "precision")
NAME_FUNCS(dash_fallback, fallback_names, "fallback")

const char *dash_block_status_name(dash_block_status s) {
  return name_of(block_status_names, COUNT(block_status_names), (int)s);
}

int dash_roots_cuda_available(void) {
  return dash__cuda_device_count() > 0;
}

int dash_roots_cuda_select(const char *device) {
  dash__clear_error();
  if (device == NULL)
    return dash__fail(DASH_E_INVALID, "device is NULL");
  return dash__cuda_select(device);
}

int dash_roots_cuda_describe(char *buf, size_t len) {
  dash__clear_error();
  if (buf == NULL || len == 0)
    return dash__fail(DASH_E_INVALID, "buf is NULL or empty");
  buf[0] = '\0';
  return dash__cuda_describe(buf, len);
}

static int check_range_int(const char *field, int v, int lo, int hi) {
  if (v < lo || v > hi)
    return dash__fail(DASH_E_INVALID, "%s %d is out of range [%d, %d]", field,
                      v, lo, hi);
  return 0;
}

static int check_options(const dash_roots_options *o) {
  int rc;
  if (o->version < 1 || o->version > DASH_ROOTS_OPTIONS_VERSION)
    return dash__fail(DASH_E_INVALID,
                      "options version %u, this library knows 1 to %u "
                      "(start from DASH_ROOTS_OPTIONS_INIT)",
                      o->version, DASH_ROOTS_OPTIONS_VERSION);
  if (dash_method_name(o->method) == NULL)
    return dash__fail(DASH_E_INVALID, "method %d is unknown", (int)o->method);
  if (dash_scaling_name(o->scaling) == NULL)
    return dash__fail(DASH_E_INVALID, "scaling %d is unknown", (int)o->scaling);
  if (dash_backend_name(o->backend) == NULL)
    return dash__fail(DASH_E_INVALID, "backend %d is unknown", (int)o->backend);
  if (dash_precision_name(o->precision) == NULL)
    return dash__fail(DASH_E_INVALID, "precision %d is unknown",
                      (int)o->precision);
  if (dash_fallback_name(o->fallback) == NULL)
    return dash__fail(DASH_E_INVALID, "fallback %d is unknown",
                      (int)o->fallback);
  if ((rc = check_range_int("root", o->root, 1, 64)) < 0)
    return rc;
  if (o->method != DASH_METHOD_EVD && o->method != DASH_METHOD_AUTO &&
      o->root != 2 && o->root != 4)
    return dash__fail(DASH_E_UNSUPPORTED,
                      "root %d needs method evd; %s supports roots 2 and 4",
                      o->root, dash_method_name(o->method));
  if (!(o->eps >= 0.0) || !isfinite(o->eps))
    return dash__fail(DASH_E_INVALID, "eps %g must be finite and >= 0", o->eps);
  if (!(o->tol >= 0.0) || !isfinite(o->tol))
    return dash__fail(DASH_E_INVALID, "tol %g must be finite and >= 0", o->tol);
  if (!(o->power_scale >= 1.0) || !isfinite(o->power_scale))
    return dash__fail(DASH_E_INVALID, "power_scale %g must be finite and >= 1",
                      o->power_scale);
  if ((rc = check_range_int("max_steps", o->max_steps, 1, 1000)) < 0)
    return rc;
  if ((rc = check_range_int("power_steps", o->power_steps, 1, 1000)) < 0)
    return rc;
  if ((rc = check_range_int("power_vectors", o->power_vectors, 1, 256)) < 0)
    return rc;
  if ((rc = check_range_int("cheb_degree", o->cheb_degree, 1, 200)) < 0)
    return rc;
  if ((rc = check_range_int("threads", o->threads, 0, 4096)) < 0)
    return rc;
  if ((rc = check_range_int("stream_priority", o->stream_priority, 0, 1)) < 0)
    return rc;
  return 0;
}

/* The caller's options as this version of the library reads them: a
 * struct of an older version ends earlier, so only its own fields are
 * read, and the later ones keep their defaults. */
static int read_options(const dash_roots_options *opts, dash_roots_options *o) {
  static const dash_roots_options defaults = DASH_ROOTS_OPTIONS_INIT;
  *o = defaults;
  if (opts == NULL)
    return 0;
  if (opts->version == 1) {
    memcpy(o, opts, offsetof(dash_roots_options, stream_priority));
    o->version = DASH_ROOTS_OPTIONS_VERSION;
    return 0;
  }
  if (opts->version != DASH_ROOTS_OPTIONS_VERSION)
    return dash__fail(DASH_E_INVALID,
                      "options version %u, this library knows 1 to %u "
                      "(start from DASH_ROOTS_OPTIONS_INIT)",
                      opts->version, DASH_ROOTS_OPTIONS_VERSION);
  *o = *opts;
  return 0;
}

int dash_roots_check_shape(size_t n, size_t b) {
  if (n == 0)
    return dash__fail(DASH_E_INVALID,
                      "num_blocks N = 0: a stack needs at least one block");
  if (b == 0)
    return dash__fail(DASH_E_INVALID,
                      "block_size B = 0: blocks are at least 1x1");
  if (n > DASH_ROOTS_MAX_BLOCKS)
    return dash__fail(DASH_E_TOO_LARGE,
                      "num_blocks N = %zu exceeds the limit %u "
                      "(DASH_ROOTS_MAX_BLOCKS)",
                      n, (unsigned)DASH_ROOTS_MAX_BLOCKS);
  if (b > DASH_ROOTS_MAX_BLOCK_SIZE)
    return dash__fail(DASH_E_TOO_LARGE,
                      "block_size B = %zu exceeds the limit %d "
                      "(DASH_ROOTS_MAX_BLOCK_SIZE)",
                      b, DASH_ROOTS_MAX_BLOCK_SIZE);
  /* Both factors are bounded above, so this product cannot overflow
   * 64 bits: 2^24 · 2^28 · 4 = 2^54. */
  uint64_t bytes = (uint64_t)n * b * b * sizeof(float);
  if (bytes > DASH_ROOTS_MAX_BYTES)
    return dash__fail(DASH_E_TOO_LARGE,
                      "%zu blocks of %zux%zu are %llu bytes, which exceeds "
                      "the limit of %llu (DASH_ROOTS_MAX_BYTES)",
                      n, b, b, (unsigned long long)bytes,
                      (unsigned long long)DASH_ROOTS_MAX_BYTES);
  if (bytes > SIZE_MAX / 4)
    return dash__fail(DASH_E_TOO_LARGE,
                      "%llu bytes exceeds what this address space can hold",
                      (unsigned long long)bytes);
  return 0;
}

static int resolve_backend(dash_roots_options *o) {
  int devices = dash__cuda_device_count();
  if (o->backend == DASH_BACKEND_AUTO)
    o->backend = devices > 0 ? DASH_BACKEND_CUDA : DASH_BACKEND_CPU;
  if (o->backend == DASH_BACKEND_CUDA && devices <= 0) {
    const char *why = "";
    if (dash__cuda_load_plugin(&why) == NULL)
      return dash__fail(DASH_E_NO_DEVICE, "backend cuda: no CUDA backend (%s)",
                        why);
    /* The plugin says why: no device, or none usable (the driver). */
    char text[8], why_dev[300];
    if (dash__cuda_describe(text, sizeof(text)) < 0) {
      snprintf(why_dev, sizeof(why_dev), "%s", dash_last_error());
      return dash__fail(DASH_E_NO_DEVICE, "backend cuda: %s", why_dev);
    }
    return dash__fail(DASH_E_NO_DEVICE,
                      "backend cuda: no CUDA device is present");
  }
  return 0;
}

static int is_cuda(const struct dash_roots_plan *plan) {
  return plan->opts.backend == DASH_BACKEND_CUDA;
}

int dash_roots_plan_create(dash_roots_plan **out, size_t num_blocks,
                           size_t block_size, const dash_roots_options *opts) {
  struct dash_roots_plan *plan = NULL;
  int rc;

  dash__clear_error();
  if (out == NULL)
    return dash__fail(DASH_E_INVALID, "out is NULL");
  dash_roots_options o;
  if ((rc = read_options(opts, &o)) < 0 || (rc = check_options(&o)) < 0)
    return rc;
  if ((rc = dash_roots_check_shape(num_blocks, block_size)) < 0)
    return rc;
  if ((rc = resolve_backend(&o)) < 0)
    return rc;

  plan = calloc(1, sizeof(*plan));
  if (plan == NULL)
    return dash__fail(DASH_E_NOMEM, "plan");
  plan->opts = o;
  plan->n = num_blocks;
  plan->b = block_size;
  plan->infos = calloc(num_blocks, sizeof(*plan->infos));
  if (plan->infos == NULL) {
    free(plan);
    return dash__fail(DASH_E_NOMEM, "block infos for %zu blocks", num_blocks);
  }
  rc = is_cuda(plan) ? dash__cuda_plan_init(plan) : dash__cpu_plan_init(plan);
  if (rc < 0) {
    free(plan->infos);
    free(plan);
    return rc;
  }
  *out = plan;
  return 0;
}

const dash_roots_options *dash_roots_plan_options(const dash_roots_plan *p) {
  return p ? &p->opts : NULL;
}

static int overlaps(const float *a, const float *b, size_t n) {
  uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  size_t bytes = n * sizeof(float);
  return pa < pb + bytes && pb < pa + bytes;
}

static int execute(dash_roots_plan *plan, float *out, const float *in,
                   dash_block_info *info, dash_roots_report *report,
                   int on_device, void *stream) {
  dash__clear_error();
  if (plan == NULL || out == NULL || in == NULL)
    return dash__fail(DASH_E_INVALID, "plan, out and in must not be NULL");
  if (!on_device && is_cuda(plan) && plan->opts.device_only)
    return dash__fail(DASH_E_INVALID,
                      "this plan was made with device_only: give it device "
                      "buffers (dash_roots_execute_device)");
  if (on_device && !is_cuda(plan))
    return dash__fail(DASH_E_INVALID,
                      "dash_roots_execute_device needs a plan of backend "
                      "cuda; this one is %s",
                      dash_backend_name(plan->opts.backend));
  size_t total = plan->n * plan->b * plan->b;
  if (overlaps(out, in, total))
    return dash__fail(DASH_E_INVALID, "out and in overlap");

  /* The report is built from per-block infos; callers who pass none get
   * the plan's own array. */
  dash_block_info *infos = info ? info : plan->infos;
  double t0 = dash__now_ms();
  int rc = is_cuda(plan)
               ? dash__cuda_execute(plan, out, in, infos, on_device, stream)
               : dash__cpu_execute(plan, out, in, infos);
  double t1 = dash__now_ms();
  if (rc == 0 && report != NULL) {
    memset(report, 0, sizeof(*report));
    report->method = plan->opts.method;
    report->scaling = plan->opts.scaling;
    report->backend = plan->opts.backend;
    report->ms_total = t1 - t0;
    for (size_t i = 0; i < plan->n; i++) {
      if (infos[i].iterations > report->max_iterations)
        report->max_iterations = infos[i].iterations;
      if ((unsigned)infos[i].status < DASH_BLOCK_STATUS_COUNT)
        report->blocks_by_status[infos[i].status]++;
    }
  }
  return rc;
}

int dash_roots_execute(dash_roots_plan *plan, float *out, const float *in,
                       dash_block_info *info, dash_roots_report *report) {
  return execute(plan, out, in, info, report, 0, NULL);
}

int dash_roots_execute_device(dash_roots_plan *plan, float *out,
                              const float *in, dash_block_info *info,
                              dash_roots_report *report, void *stream) {
  return execute(plan, out, in, info, report, 1, stream);
}

void dash_roots_plan_destroy(dash_roots_plan *plan) {
  if (plan == NULL)
    return;
  if (is_cuda(plan))
    dash__cuda_plan_free(plan);
  else
    dash__cpu_plan_free(plan);
  free(plan->infos);
  free(plan);
}

int dash_roots_compute(float *out, const float *in, size_t num_blocks,
                       size_t block_size, const dash_roots_options *opts,
                       dash_block_info *info, dash_roots_report *report) {
  dash_roots_plan *plan;
  int rc = dash_roots_plan_create(&plan, num_blocks, block_size, opts);
  if (rc < 0)
    return rc;
  rc = dash_roots_execute(plan, out, in, info, report);
  dash_roots_plan_destroy(plan);
  return rc;
}
