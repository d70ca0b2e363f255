/* dash-bench: times the root library on synthetic Shampoo statistics and
 * measures each result against a float64 oracle.
 *
 * Nominal flop model (GEMM and LAPACK work only; the O(k·B²) scaling and
 * the O(B²) element-wise work are not counted):
 *   ndb   3 GEMMs of 2B³ per Newton step, summed over the steps each block
 *         really took (both NewtonDB runs for p = 4), less the 2 GEMMs
 *         the first step of each run skips (Z = I there);
 *   cn    per step, X·T and T^p·M by repeated products: 3 GEMMs of 2B³ for
 *         p = 2, 4 for p = 4, summed over the steps each block took;
 *   cheb  one GEMM of 2B³ per degree of the fit;
 *   evd   10B³: the conventional 9B³ of syevd with vectors, plus B³ for
 *         rebuilding Q·diag·Qᵀ as a syrk;
 *   a block that fell back to EVD adds the EVD count to its iterations'.
 * gflops = nominal flops / ms_min. The roofline is this machine's best
 * measured sgemm rate on B×B, with one thread per block across the N
 * blocks or one OpenBLAS-threaded sgemm after another, whichever is faster.
 *
 * With the CUDA backend the stack is copied to the device once, ms_min and
 * ms_median time dash_roots_execute_device on it, and ms_host_* time
 * dash_roots_execute from host memory (the PCIe copies included); the
 * accuracy is the device run's. The roofline is cuBLAS's
 * GemmStridedBatchedEx over the same N B×B products in the run's
 * precision (bench_cuda.c).
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_cuda.h"
#include "bench_ipc.h"
#include "dash/roots.h"
#include "spectra.h"

/* Exit codes: 2 means "this machine or build cannot run it", which a script
 * may treat as a skip; 64 is EX_USAGE from sysexits.h. */
#define EXIT_UNAVAILABLE 2
#define EXIT_USAGE 64

#define MAX_SHAPES 32
#define MAX_KAPPAS 32
#define MAX_CONFIGS 64
#define DEFAULT_METHODS "ndb,cn,evd,cheb,auto"
#define DEFAULT_SCALINGS "pi,pi-multi,fro"
#define DEFAULT_KAPPAS "1e2,1e4,1e6,1e8"
/* The EVD count of the flop model above, in units of B³. */
#define EVD_FLOPS_PER_B3 10.0

struct shape {
  size_t n, b;
};

/* One row of the table: a method with one scaling (none for EVD). */
struct config {
  dash_method method;
  dash_scaling scaling;
  int scaled;
};

struct bench {
  struct shape shapes[MAX_SHAPES];
  int nshapes;
  double kappas[MAX_KAPPAS];
  int nkappas;
  struct config configs[MAX_CONFIGS];
  int nconfigs;
  dash_roots_options opts;
  int repeat, warmup, json, skip_unavailable;
  uint64_t seed;
  const char *dump_dir;
  FILE *index;
  int index_entries;
  int done, total, skipped;
  double roofline; /* GFLOP/s of the shape being run, 0 when unknown */
  /* --precision's list, each run in turn on the same stack and oracle,
   * and cuBLAS's rate of the shape in each (CUDA). */
  dash_precision precisions[4];
  int nprec;
  double cuda_roof[4];
  /* The CUDA backend runs: the stack also lives on this device. */
  int cuda;
  char device[256], device_desc[320];
};

/* Per-shape buffers, allocated once and shared by every configuration. */
struct stack {
  size_t n, b, elems;
  float *in, *out;
  double *oracle;
  dash_block_info *info;
  double *times;
  void *d_in, *d_out; /* device memory when bn->cuda, else NULL */
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

static void kappa_label(char *buf, size_t len, double k) {
  double e = log10(k);
  if (fabs(e - round(e)) < 1e-9 && e >= 0.0 && e < 100.0)
    snprintf(buf, len, "1e%d", (int)round(e));
  else
    snprintf(buf, len, "%g", k);
}

/* JSON has no NaN or Inf; an unusable number becomes null. */
static void json_num(FILE *f, const char *key, double v) {
  if (isfinite(v))
    fprintf(f, "\"%s\": %.6g", key, v);
  else
    fprintf(f, "\"%s\": null", key);
}

static void json_str(FILE *f, const char *key, const char *s) {
  fprintf(f, "\"%s\": \"", key);
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

/* The least and the median of `n` times, sorting them. */
static void summarize(double *times, int n, double *min, double *median) {
  qsort(times, (size_t)n, sizeof(double), cmp_double);
  *min = times[0];
  *median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
}

/* ---- command line ---------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: dash-bench [options]\n"
          "Times dash_roots_execute on synthetic Shampoo statistics of a\n"
          "chosen condition number and compares each result with a float64\n"
          "oracle.\n"
          "\n"
          "  --shape NxB         a stack of N blocks of BxB (repeatable)\n"
          "  --blocks N          with --block-size, one more shape (default\n"
          "  --block-size B        16x256 when no shape is given)\n"
          "  --root P            p of A^(-1/p) (default 4)\n"
          "  --kappa K[,K...]    condition numbers (repeatable; default\n"
          "                      %s)\n"
          "  --methods LIST      of ndb, cn, evd, cheb, auto; METHOD/SCALING\n"
          "                      pins a scaling (default %s)\n"
          "  --scalings LIST     of pi, pi-multi, fro, run by every method\n"
          "                      without a pinned one; evd runs once\n"
          "                      (default %s)\n"
          "  --steps S           Newton step limit (default 10)\n"
          "  --tol T             early-exit tolerance (default 1e-3)\n"
          "  --eps E             ridge epsilon (default 1e-10)\n"
          "  --fallback F        none, diverged or unconverged (default\n"
          "                      diverged)\n"
          "  --repeat R          timed executions (default 5)\n"
          "  --warmup W          untimed executions first (default 1)\n"
          "  --threads T         CPU threads, 0 = every core (default 0)\n"
          "  --backend B         cpu, cuda or auto (default cpu)\n"
          "  --precision P[,P..] fp32, tf32, bf16, fp16, each run on the\n"
          "                      same stacks (default fp32)\n"
          "  --seed S            seed of the synthetic statistics (default 1)\n"
          "  --dump-dir DIR      write every stack and its oracle as .npy,\n"
          "                      with DIR/index.json, for bench/peer_numpy.py\n"
          "  --json              one JSON object per line per measurement\n"
          "  --skip-unavailable  exit 0, not 2, when the backend or a method\n"
          "                      is unavailable\n"
          "  --ipc               measure the daemon's round trips instead\n"
          "                      (dash-bench --ipc --help)\n"
          "  --help              this text\n"
          "\n"
          "gflops = nominal flops / ms_min, counting GEMM and LAPACK work:\n"
          "ndb 3 GEMMs of 2B^3 per step taken, less 2 per NewtonDB run;\n"
          "cn 3 (p = 2) or 4 (p = 4) GEMMs per step taken; cheb one GEMM\n"
          "per degree; evd 10B^3 (9B^3 syevd, B^3 rebuild); an EVD\n"
          "fallback adds 10B^3. roofline%% is gflops over the best sgemm\n"
          "rate measured on BxB here.\n"
          "\n"
          "With the CUDA backend (--backend cuda, or auto with a device)\n"
          "each stack is copied to the device once: ms_min and ms_median\n"
          "time dash_roots_execute_device on it, host_ms (ms_host_min and\n"
          "ms_host_median in JSON) times dash_roots_execute from host\n"
          "memory, PCIe copies included, and rel_err is the device run's.\n"
          "roofline%% is then over cuBLAS GemmStridedBatchedEx on the same\n"
          "N BxB products in the run's precision, timed with CUDA events.\n"
          "The device is the current one (CUDA_VISIBLE_DEVICES picks it),\n"
          "named above the table and as device_name in JSON.\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 backend or method\n"
          "unavailable, 64 bad command line.\n",
          DEFAULT_KAPPAS, DEFAULT_METHODS, DEFAULT_SCALINGS);
}

static int bad_value(const char *opt, const char *v, const char *why) {
  fprintf(stderr, "dash-bench: %s '%s': %s\n", opt, v, why);
  return -1;
}

static int parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi,
                     uint64_t *out) {
  char *end;
  /* strtoull accepts a sign and wraps negatives; refuse them first. */
  if (*s == '\0' || *s == '-' || *s == '+')
    return bad_value(opt, s, "not a non-negative integer");
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (*end != '\0')
    return bad_value(opt, s, "not a non-negative integer");
  if (errno == ERANGE || v < lo || v > hi) {
    fprintf(stderr, "dash-bench: %s '%s': out of range [%llu, %llu]\n", opt, s,
            (unsigned long long)lo, (unsigned long long)hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out) {
  uint64_t v;
  if (parse_u64(opt, s, (uint64_t)lo, (uint64_t)hi, &v) < 0)
    return -1;
  *out = (int)v;
  return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi,
                        double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v))
    return bad_value(opt, s, "not a finite number");
  if (v < lo || v > hi) {
    fprintf(stderr, "dash-bench: %s '%s': out of range [%g, %g]\n", opt, s, lo,
            hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int add_shape(struct bench *bn, const char *opt, size_t n, size_t b) {
  if (bn->nshapes == MAX_SHAPES) {
    fprintf(stderr, "dash-bench: %s: at most %d shapes\n", opt, MAX_SHAPES);
    return -1;
  }
  /* The library enforces its limits too; checking here keeps our own
   * buffers (4 + 4 + 8 bytes per element) from overflowing size_t. */
  uint64_t bytes = (uint64_t)n * b * b * sizeof(float);
  if (bytes > DASH_ROOTS_MAX_BYTES || (uint64_t)n * b * b > SIZE_MAX / 16) {
    fprintf(stderr, "dash-bench: %s: a %zux%zu stack is too large\n", opt, n,
            b);
    return -1;
  }
  bn->shapes[bn->nshapes].n = n;
  bn->shapes[bn->nshapes].b = b;
  bn->nshapes++;
  return 0;
}

static int parse_shape(struct bench *bn, const char *opt, const char *s) {
  char buf[64];
  uint64_t n, b;
  if (strlen(s) >= sizeof(buf))
    return bad_value(opt, s, "too long");
  strcpy(buf, s);
  char *x = strchr(buf, 'x');
  if (x == NULL)
    return bad_value(opt, s, "expected NxB, e.g. 64x128");
  *x = '\0';
  if (parse_u64(opt, buf, 1, DASH_ROOTS_MAX_BLOCKS, &n) < 0 ||
      parse_u64(opt, x + 1, 1, DASH_ROOTS_MAX_BLOCK_SIZE, &b) < 0)
    return -1;
  return add_shape(bn, opt, (size_t)n, (size_t)b);
}

static int parse_kappas(struct bench *bn, const char *opt, const char *s) {
  char buf[512];
  if (strlen(s) >= sizeof(buf))
    return bad_value(opt, s, "too long");
  strcpy(buf, s);
  for (char *save, *t = strtok_r(buf, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    if (bn->nkappas == MAX_KAPPAS)
      return bad_value(opt, s, "too many condition numbers");
    if (parse_double(opt, t, 1.0, 1e15, &bn->kappas[bn->nkappas]) < 0)
      return -1;
    bn->nkappas++;
  }
  return 0;
}

/* "fp32" or "fp32,tf32,bf16": each precision runs every configuration on
 * the same stacks, so the oracles are built once. */
static int parse_precisions(struct bench *bn, const char *opt, const char *s) {
  char buf[64], *save = NULL;
  if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf))
    return bad_value(opt, s, "too long");
  bn->nprec = 0;
  for (char *t = strtok_r(buf, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    dash_precision p;
    if (dash_precision_parse(t, &p) < 0)
      return bad_value(opt, t, "expected fp32, tf32, bf16 or fp16");
    for (int i = 0; i < bn->nprec; i++)
      if (bn->precisions[i] == p)
        return bad_value(opt, t, "listed twice");
    bn->precisions[bn->nprec++] = p;
  }
  if (bn->nprec == 0)
    return bad_value(opt, s, "expected fp32, tf32, bf16 or fp16");
  bn->opts.precision = bn->precisions[0];
  return 0;
}

static int add_config(struct bench *bn, dash_method m, dash_scaling sc,
                      int scaled) {
  for (int i = 0; i < bn->nconfigs; i++) {
    const struct config *c = &bn->configs[i];
    if (c->method == m && c->scaled == scaled && (!scaled || c->scaling == sc))
      return 0;
  }
  if (bn->nconfigs == MAX_CONFIGS) {
    fprintf(stderr, "dash-bench: at most %d method/scaling pairs\n",
            MAX_CONFIGS);
    return -1;
  }
  bn->configs[bn->nconfigs].method = m;
  bn->configs[bn->nconfigs].scaling = sc;
  bn->configs[bn->nconfigs].scaled = scaled;
  bn->nconfigs++;
  return 0;
}

/* Expands "ndb,cn/pi,evd" over the scaling list into table rows. */
static int parse_configs(struct bench *bn, const char *methods,
                         const char *scalings) {
  char mbuf[512], sbuf[256];
  dash_scaling sc[8];
  int nsc = 0;

  if (strlen(methods) >= sizeof(mbuf) || strlen(scalings) >= sizeof(sbuf)) {
    fprintf(stderr, "dash-bench: --methods or --scalings is too long\n");
    return -1;
  }
  strcpy(sbuf, scalings);
  for (char *save, *t = strtok_r(sbuf, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    if (nsc == (int)(sizeof(sc) / sizeof(sc[0])))
      return bad_value("--scalings", scalings, "too many scalings");
    if (dash_scaling_parse(t, &sc[nsc]) < 0)
      return bad_value("--scalings", t, "expected pi, pi-multi or fro");
    nsc++;
  }
  strcpy(mbuf, methods);
  for (char *save, *t = strtok_r(mbuf, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    dash_method m;
    dash_scaling pinned;
    char *slash = strchr(t, '/');
    if (slash != NULL)
      *slash = '\0';
    if (dash_method_parse(t, &m) < 0)
      return bad_value("--methods", t, "expected ndb, cn, evd, cheb or auto");
    if (slash != NULL && dash_scaling_parse(slash + 1, &pinned) < 0)
      return bad_value("--methods", slash + 1,
                       "expected a scaling pi, pi-multi or fro");
    if (m == DASH_METHOD_EVD) {
      if (add_config(bn, m, DASH_SCALING_POWER_ITER, 0) < 0)
        return -1;
    } else if (slash != NULL) {
      if (add_config(bn, m, pinned, 1) < 0)
        return -1;
    } else {
      if (nsc == 0)
        return bad_value("--scalings", scalings, "no scaling given");
      for (int i = 0; i < nsc; i++)
        if (add_config(bn, m, sc[i], 1) < 0)
          return -1;
    }
  }
  if (bn->nconfigs == 0)
    return bad_value("--methods", methods, "no method given");
  return 0;
}

static int parse_fallback(const char *v, dash_fallback *out) {
  if (strcmp(v, "none") == 0)
    *out = DASH_FALLBACK_NONE;
  else if (strcmp(v, "diverged") == 0)
    *out = DASH_FALLBACK_DIVERGED;
  else if (strcmp(v, "unconverged") == 0)
    *out = DASH_FALLBACK_UNCONVERGED;
  else
    return bad_value("--fallback", v, "expected none, diverged or unconverged");
  return 0;
}

/* The options that take a value. */
static const char *const valued_options[] = {
    "--shape",     "--blocks",   "--block-size", "--root",    "--kappa",
    "--methods",   "--scalings", "--steps",      "--tol",     "--eps",
    "--fallback",  "--repeat",   "--warmup",     "--threads", "--backend",
    "--precision", "--seed",     "--dump-dir"};

static int takes_value(const char *name) {
  for (size_t k = 0; k < sizeof(valued_options) / sizeof(*valued_options); k++)
    if (strcmp(name, valued_options[k]) == 0)
      return 1;
  return 0;
}

/* Applies one option that takes a value; 0, or -1 after a message. */
static int apply_option(struct bench *bn, const char *name, const char *v,
                        const char **methods, const char **scalings,
                        uint64_t *blocks, uint64_t *block_size) {
  dash_roots_options *o = &bn->opts;
  if (strcmp(name, "--shape") == 0)
    return parse_shape(bn, name, v);
  if (strcmp(name, "--blocks") == 0)
    return parse_u64(name, v, 1, DASH_ROOTS_MAX_BLOCKS, blocks);
  if (strcmp(name, "--block-size") == 0)
    return parse_u64(name, v, 1, DASH_ROOTS_MAX_BLOCK_SIZE, block_size);
  if (strcmp(name, "--root") == 0)
    return parse_int(name, v, 1, 64, &o->root);
  if (strcmp(name, "--kappa") == 0)
    return parse_kappas(bn, name, v);
  if (strcmp(name, "--methods") == 0) {
    *methods = v;
    return 0;
  }
  if (strcmp(name, "--scalings") == 0) {
    *scalings = v;
    return 0;
  }
  if (strcmp(name, "--steps") == 0)
    return parse_int(name, v, 1, 1000, &o->max_steps);
  if (strcmp(name, "--tol") == 0)
    return parse_double(name, v, 0.0, 1e300, &o->tol);
  if (strcmp(name, "--eps") == 0)
    return parse_double(name, v, 0.0, 1e300, &o->eps);
  if (strcmp(name, "--fallback") == 0)
    return parse_fallback(v, &o->fallback);
  if (strcmp(name, "--repeat") == 0)
    return parse_int(name, v, 1, 1000000, &bn->repeat);
  if (strcmp(name, "--warmup") == 0)
    return parse_int(name, v, 0, 1000000, &bn->warmup);
  if (strcmp(name, "--threads") == 0)
    return parse_int(name, v, 0, 4096, &o->threads);
  if (strcmp(name, "--backend") == 0)
    return dash_backend_parse(v, &o->backend) < 0
               ? bad_value(name, v, "expected cpu, cuda or auto")
               : 0;
  if (strcmp(name, "--precision") == 0)
    return parse_precisions(bn, name, v);
  if (strcmp(name, "--seed") == 0)
    return parse_u64(name, v, 0, UINT64_MAX, &bn->seed);
  if (strcmp(name, "--dump-dir") == 0) {
    bn->dump_dir = v;
    return 0;
  }
  fprintf(stderr, "dash-bench: unknown option '%s' (see --help)\n", name);
  return -1;
}

/* 0 to run, 1 after --help, -1 on a bad command line. */
static int parse_args(struct bench *bn, int argc, char **argv) {
  const char *methods = DEFAULT_METHODS, *scalings = DEFAULT_SCALINGS;
  uint64_t blocks = 0, block_size = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    char name[32];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (strcmp(a, "--json") == 0) {
      bn->json = 1;
      continue;
    }
    if (strcmp(a, "--skip-unavailable") == 0) {
      bn->skip_unavailable = 1;
      continue;
    }
    /* Every other option takes a value: "--opt=v" or "--opt v". */
    const char *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (len >= sizeof(name)) {
      fprintf(stderr, "dash-bench: unknown argument '%s' (see --help)\n", a);
      return -1;
    }
    memcpy(name, a, len);
    name[len] = '\0';
    if (!takes_value(name)) {
      fprintf(stderr, "dash-bench: unknown argument '%s' (see --help)\n", a);
      return -1;
    }
    if (eq != NULL) {
      v = eq + 1;
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      fprintf(stderr, "dash-bench: %s needs a value (see --help)\n", name);
      return -1;
    }
    if (apply_option(bn, name, v, &methods, &scalings, &blocks, &block_size) <
        0)
      return -1;
  }
  if (blocks || block_size || bn->nshapes == 0) {
    if (add_shape(bn, "--blocks/--block-size", blocks ? blocks : 16,
                  block_size ? block_size : 256) < 0)
      return -1;
  }
  if (bn->nkappas == 0 && parse_kappas(bn, "--kappa", DEFAULT_KAPPAS) < 0)
    return -1;
  return parse_configs(bn, methods, scalings);
}

/* ---- the sgemm roofline ---------------------------------------------- */

/* Least time spent on each way of measuring the roofline. */
#define ROOFLINE_MIN_MS 200
/* Least work of one worker in one round: small blocks repeat their
 * products, so that thread start-up and call overhead, which the roofline
 * is not about, stay small beside the arithmetic. */
#define ROOFLINE_ROUND_FLOPS 5e7

struct gemm_job {
  const float *a, *b;
  float *c;
  int size;
  size_t count;
};

static void *gemm_worker(void *arg) {
  struct gemm_job *j = arg;
  for (size_t i = 0; i < j->count; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->size, j->size,
                j->size, 1.0f, j->a, j->size, j->b, j->size, 0.0f, j->c,
                j->size);
  return NULL;
}

/* Runs every job at once, the calling thread taking the first as the
 * library's CPU backend does; returns ms, or -1 if a thread did not start. */
static double time_parallel(struct gemm_job *jobs, pthread_t *tids,
                            int workers) {
  int started = 1;
  double t0 = now_ms();
  for (; started < workers; started++)
    if (pthread_create(&tids[started], NULL, gemm_worker, &jobs[started]) != 0)
      break;
  gemm_worker(&jobs[0]);
  for (int w = 1; w < started; w++)
    pthread_join(tids[w], NULL);
  return started == workers ? now_ms() - t0 : -1.0;
}

/* Best sgemm GFLOP/s on b×b over n products (repeated for small blocks)
 * with `threads` threads: one thread per block (OpenBLAS single-threaded)
 * or one threaded sgemm after another. 0 when it cannot be measured. */
static double measure_roofline(size_t n, size_t b, int threads, int rounds,
                               double *per_block, double *threaded) {
  int workers = threads < 1 ? 1 : threads;
  if ((size_t)workers > n)
    workers = (int)n;
  size_t bb = b * b;
  float *mem = NULL;
  struct gemm_job *jobs = NULL;
  pthread_t *tids = NULL;
  double best_p = INFINITY, best_t = INFINITY;
  double gemm_flops = 2.0 * (double)b * (double)b * (double)b;
  size_t per_worker = (n + (size_t)workers - 1) / (size_t)workers;
  double inner = ceil(ROOFLINE_ROUND_FLOPS / (gemm_flops * per_worker));
  size_t passes = inner > 1.0 ? (size_t)inner : 1;
  double flops = gemm_flops * (double)n * (double)passes;
  int saved = openblas_get_num_threads();
  struct gemm_job all;

  *per_block = *threaded = 0.0;
  mem = malloc((size_t)workers * 3 * bb * sizeof(*mem));
  jobs = calloc((size_t)workers, sizeof(*jobs));
  tids = calloc((size_t)workers, sizeof(*tids));
  if (!mem || !jobs || !tids)
    goto out;
  /* Values in [0.5, 1.5) keep denormals and overflow away. */
  for (size_t i = 0; i < (size_t)workers * 3 * bb; i++)
    mem[i] = 0.5f + (float)(i % 1021) / 1021.0f;
  for (int w = 0; w < workers; w++) {
    jobs[w].a = mem + (size_t)w * 3 * bb;
    jobs[w].b = jobs[w].a + bb;
    jobs[w].c = mem + (size_t)w * 3 * bb + 2 * bb;
    jobs[w].size = (int)b;
    jobs[w].count =
        (n / (size_t)workers + ((size_t)w < n % (size_t)workers)) * passes;
  }
  /* The first round warms up; then at least `rounds` rounds and
   * ROOFLINE_MIN_MS in all, since one round of small blocks takes about a
   * millisecond and a shared machine is noisy. The threaded way goes
   * first: OpenBLAS 0.3.21 runs single-threaded sgemm of B <= 320 about
   * 3x slower in a process that has not yet made a threaded call. */
  openblas_set_num_threads(threads < 1 ? 1 : threads);
  all = jobs[0];
  all.count = n * passes;
  for (int r = 0, spent = 0; r <= rounds || spent < ROOFLINE_MIN_MS; r++) {
    double t0 = now_ms();
    gemm_worker(&all);
    double ms = now_ms() - t0;
    if (r > 0 && ms < best_t)
      best_t = ms;
    spent += (int)ceil(ms);
  }
  openblas_set_num_threads(1);
  for (int r = 0, spent = 0; r <= rounds || spent < ROOFLINE_MIN_MS; r++) {
    double ms = time_parallel(jobs, tids, workers);
    if (ms < 0)
      goto out;
    if (r > 0 && ms < best_p)
      best_p = ms;
    spent += (int)ceil(ms);
  }
  *per_block = flops / (best_p * 1e6);
  *threaded = flops / (best_t * 1e6);
out:
  openblas_set_num_threads(saved);
  free(mem);
  free(jobs);
  free(tids);
  return fmax(*per_block, *threaded);
}

/* ---- .npy dumps ------------------------------------------------------ */

/* Writes an N×B×B array of floats of `elem` bytes (4 or 8) as .npy
 * version 1.0. The descriptor names the host's byte order, so the file is
 * right on either. */
static int write_npy(const char *path, const void *data, int elem, size_t n,
                     size_t b) {
  const uint16_t one = 1;
  char order = *(const unsigned char *)&one == 1 ? '<' : '>';
  char header[256];
  int len = snprintf(header, sizeof(header),
                     "{'descr': '%cf%d', 'fortran_order': False, "
                     "'shape': (%zu, %zu, %zu), }",
                     order, elem, n, b, b);
  int rc = -1;
  FILE *f = NULL;

  if (len < 0 || (size_t)len + 64 >= sizeof(header))
    return -1;
  /* Pad with spaces and a newline so the data starts 64-byte aligned. */
  while ((10 + len + 1) % 64 != 0)
    header[len++] = ' ';
  header[len++] = '\n';
  /* Magic, version 1.0, then the header length, little-endian. */
  const unsigned char pre[10] = {0x93,
                                 'N',
                                 'U',
                                 'M',
                                 'P',
                                 'Y',
                                 1,
                                 0,
                                 (unsigned char)(len & 0xff),
                                 (unsigned char)(len >> 8)};
  f = fopen(path, "wb");
  if (f == NULL)
    goto out;
  if (fwrite(pre, 1, sizeof(pre), f) != sizeof(pre) ||
      fwrite(header, 1, (size_t)len, f) != (size_t)len ||
      fwrite(data, (size_t)elem, n * b * b, f) != n * b * b)
    goto out;
  rc = 0;
out:
  if (f != NULL && fclose(f) != 0)
    rc = -1;
  if (rc < 0)
    fprintf(stderr, "dash-bench: writing %s: %s\n", path, strerror(errno));
  return rc;
}

static int index_path(char *buf, size_t len, const char *dir, int tmp) {
  int w = snprintf(buf, len, "%s/index.json%s", dir, tmp ? ".tmp" : "");
  return w < 0 || (size_t)w >= len ? -1 : 0;
}

static int dump_open(struct bench *bn) {
  char path[4096];
  if (mkdir(bn->dump_dir, 0777) < 0 && errno != EEXIST) {
    fprintf(stderr, "dash-bench: mkdir %s: %s\n", bn->dump_dir,
            strerror(errno));
    return -1;
  }
  if (index_path(path, sizeof(path), bn->dump_dir, 1) < 0)
    return -1;
  bn->index = fopen(path, "w");
  if (bn->index == NULL) {
    fprintf(stderr, "dash-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fprintf(bn->index, "{\"root\": %d, \"eps\": %.17g, \"seed\": %llu,\n",
          bn->opts.root, bn->opts.eps, (unsigned long long)bn->seed);
  fprintf(bn->index, " \"entries\": [");
  return 0;
}

/* Finishes the index; it appears under its real name only when whole. */
static int dump_close(struct bench *bn, int ok) {
  char tmp[4096], path[4096];
  int rc = 0;
  if (bn->index == NULL)
    return 0;
  fprintf(bn->index, "\n ]}\n");
  if (fclose(bn->index) != 0)
    rc = -1;
  bn->index = NULL;
  if (index_path(tmp, sizeof(tmp), bn->dump_dir, 1) < 0 ||
      index_path(path, sizeof(path), bn->dump_dir, 0) < 0)
    return -1;
  if (!ok || rc < 0) {
    remove(tmp);
    return rc;
  }
  if (rename(tmp, path) < 0) {
    fprintf(stderr, "dash-bench: rename %s: %s\n", tmp, strerror(errno));
    return -1;
  }
  return 0;
}

static int dump_stack(struct bench *bn, const struct stack *st, double kappa) {
  char label[32], sname[96], oname[96], path[4096];
  kappa_label(label, sizeof(label), kappa);
  snprintf(sname, sizeof(sname), "stack_%zux%zu_k%s.npy", st->n, st->b, label);
  snprintf(oname, sizeof(oname), "oracle_%zux%zu_k%s.npy", st->n, st->b, label);
  if ((size_t)snprintf(path, sizeof(path), "%s/%s", bn->dump_dir, sname) >=
          sizeof(path) ||
      write_npy(path, st->in, 4, st->n, st->b) < 0)
    return -1;
  if ((size_t)snprintf(path, sizeof(path), "%s/%s", bn->dump_dir, oname) >=
          sizeof(path) ||
      write_npy(path, st->oracle, 8, st->n, st->b) < 0)
    return -1;
  fprintf(bn->index,
          "%s\n  {\"N\": %zu, \"B\": %zu, \"kappa\": %.17g, "
          "\"stack\": \"%s\", \"oracle\": \"%s\"}",
          bn->index_entries ? "," : "", st->n, st->b, kappa, sname, oname);
  bn->index_entries++;
  return 0;
}

/* ---- measurements ---------------------------------------------------- */

static double nominal_flops(dash_method m, const dash_roots_options *o,
                            const dash_block_info *info, size_t n, size_t b) {
  double b3 = (double)b * (double)b * (double)b, total = 0.0;
  double per_step = 0.0;
  if (m == DASH_METHOD_NEWTON_DB)
    per_step = 3.0 * 2.0 * b3;
  if (m == DASH_METHOD_COUPLED_NEWTON)
    per_step = (o->root == 2 ? 3.0 : 4.0) * 2.0 * b3;
  for (size_t i = 0; i < n; i++) {
    if (info[i].status == DASH_BLOCK_NONFINITE_INPUT)
      continue;
    if (m == DASH_METHOD_EVD)
      total += EVD_FLOPS_PER_B3 * b3;
    else if (m == DASH_METHOD_CHEBYSHEV)
      total += (double)o->cheb_degree * 2.0 * b3;
    else if (m == DASH_METHOD_NEWTON_DB && info[i].iterations > 0)
      /* The first step of each NewtonDB run has Z = I and makes 1 GEMM
       * instead of 3; p = 4 makes two runs when the first one did not
       * diverge, which a converged or unconverged block shows. */
      total += ((double)info[i].iterations * 3.0 -
                2.0 * (o->root == 4 && info[i].iterations > 1 ? 2.0 : 1.0)) *
               2.0 * b3;
    else
      total += (double)info[i].iterations * per_step;
    if (m != DASH_METHOD_EVD && info[i].status == DASH_BLOCK_FALLBACK_EVD)
      total += EVD_FLOPS_PER_B3 * b3;
  }
  return total;
}

/* ‖X − O‖_F/‖O‖_F over the whole stack and the largest per block, all in
 * double. */
static void rel_errors(const struct stack *st, double *total,
                       double *max_block) {
  size_t bb = st->b * st->b;
  double num = 0.0, den = 0.0;
  *max_block = 0.0;
  for (size_t i = 0; i < st->n; i++) {
    double bn = 0.0, bd = 0.0;
    const float *x = st->out + i * bb;
    const double *o = st->oracle + i * bb;
    for (size_t k = 0; k < bb; k++) {
      double d = (double)x[k] - o[k];
      bn += d * d;
      bd += o[k] * o[k];
    }
    double e = sqrt(bn) / sqrt(bd);
    /* fmax drops NaN; a NaN block must show. */
    if (!(e <= *max_block))
      *max_block = e;
    num += bn;
    den += bd;
  }
  *total = sqrt(num) / sqrt(den);
}

/* One measured configuration, printed once the shape's roofline is
 * known. */
struct row {
  const struct config *cfg;
  dash_roots_options ran; /* the plan's, AUTO resolved */
  dash_roots_report report;
  size_t n, b;
  double kappa, ms_min, ms_median, flops, gflops;
  double rel_err, max_block;
  /* CUDA: dash_roots_execute from host memory; NaN when not measured. */
  double ms_host_min, ms_host_median;
};

static const char *scaling_label(const struct row *r) {
  return r->cfg->scaled ? dash_scaling_name(r->cfg->scaling) : "none";
}

static int gemm_bound(dash_method m) {
  return m == DASH_METHOD_NEWTON_DB || m == DASH_METHOD_COUPLED_NEWTON ||
         m == DASH_METHOD_CHEBYSHEV;
}

/* The CUDA backend's table has one more column, host_ms, after
 * ms_median. */
static void print_header(const struct bench *bn) {
  if (bn->cuda)
    printf("# device: %s\n", bn->device_desc);
  printf("%-9s %-8s %-9s %-5s %10s %10s %s%8s %9s %9s %9s %5s %s\n", "method",
         "scaling", "shape", "kappa", "ms_min", "ms_median",
         bn->cuda ? "   host_ms " : "", "GFLOP/s", "roofline%", "rel_err",
         "max_blk", "iters", "ok/nc/fb/nf");
}

static void print_row(const struct bench *bn, const struct row *r) {
  const double roof_rate =
      bn->cuda ? bn->cuda_roof[r->ran.precision & 3] : bn->roofline;
  double roof_pct = roof_rate > 0 && gemm_bound(r->report.method)
                        ? 100.0 * r->gflops / roof_rate
                        : NAN;
  char method[32], shape[48], kappa[32], roof[16];
  const uint64_t *by = r->report.blocks_by_status;
  if (r->cfg->method == DASH_METHOD_AUTO)
    snprintf(method, sizeof(method), "auto:%s",
             dash_method_name(r->report.method));
  else
    snprintf(method, sizeof(method), "%s", dash_method_name(r->cfg->method));
  /* Several precisions in one table: the label says which. */
  if (bn->nprec > 1 || r->ran.precision != DASH_PRECISION_FP32) {
    size_t used = strlen(method);
    snprintf(method + used, sizeof(method) - used, "@%s",
             dash_precision_name(r->ran.precision));
  }
  snprintf(shape, sizeof(shape), "%zux%zu", r->n, r->b);
  kappa_label(kappa, sizeof(kappa), r->kappa);
  if (isfinite(roof_pct))
    snprintf(roof, sizeof(roof), "%.1f%%", roof_pct);
  else
    snprintf(roof, sizeof(roof), "-");
  if (!bn->json) {
    char host[32] = "";
    if (bn->cuda && isfinite(r->ms_host_median))
      snprintf(host, sizeof(host), "%10.3f ", r->ms_host_median);
    else if (bn->cuda)
      snprintf(host, sizeof(host), "%10s ", "-");
    printf(
        "%-9s %-8s %-9s %-5s %10.3f %10.3f %s%8.2f %9s %9.2e %9.2e %5d "
        "%llu/%llu/%llu/%llu\n",
        method, scaling_label(r), shape, kappa, r->ms_min, r->ms_median, host,
        r->gflops, roof, r->rel_err, r->max_block, r->report.max_iterations,
        (unsigned long long)by[DASH_BLOCK_OK],
        (unsigned long long)by[DASH_BLOCK_NOT_CONVERGED],
        (unsigned long long)by[DASH_BLOCK_FALLBACK_EVD],
        (unsigned long long)by[DASH_BLOCK_NONFINITE_INPUT]);
    fflush(stdout);
    return;
  }
  printf(
      "{\"record\": \"root\", \"method\": \"%s\", \"resolved_method\": "
      "\"%s\", \"scaling\": \"%s\", \"backend\": \"%s\", "
      "\"precision\": \"%s\", ",
      dash_method_name(r->cfg->method), dash_method_name(r->report.method),
      scaling_label(r), dash_backend_name(r->report.backend),
      dash_precision_name(r->ran.precision));
  if (bn->cuda) {
    json_str(stdout, "device_name", bn->device);
    printf(", ");
  }
  printf("\"N\": %zu, \"B\": %zu, \"root\": %d, ", r->n, r->b, r->ran.root);
  json_num(stdout, "kappa", r->kappa);
  printf(", ");
  json_num(stdout, "eps", r->ran.eps);
  printf(", \"steps\": %d, ", r->ran.max_steps);
  json_num(stdout, "tol", r->ran.tol);
  printf(", \"threads\": %d, \"repeat\": %d, ", r->ran.threads, bn->repeat);
  json_num(stdout, "ms_min", r->ms_min);
  printf(", ");
  json_num(stdout, "ms_median", r->ms_median);
  printf(", ");
  if (bn->cuda) {
    json_num(stdout, "ms_host_min", r->ms_host_min);
    printf(", ");
    json_num(stdout, "ms_host_median", r->ms_host_median);
    printf(", ");
  }
  json_num(stdout, "flops", r->flops);
  printf(", ");
  json_num(stdout, "gflops", r->gflops);
  printf(", ");
  json_num(stdout, "roofline_gflops", roof_rate > 0 ? roof_rate : NAN);
  printf(", ");
  json_num(stdout, "roofline_pct", roof_pct);
  printf(", ");
  json_num(stdout, "rel_err", r->rel_err);
  printf(", ");
  json_num(stdout, "max_rel_err_block", r->max_block);
  printf(", \"max_iterations\": %d, \"blocks_by_status\": {",
         r->report.max_iterations);
  for (int s = 0; s < DASH_BLOCK_STATUS_COUNT; s++)
    printf("%s\"%s\": %llu", s ? ", " : "",
           dash_block_status_name((dash_block_status)s),
           (unsigned long long)by[s]);
  printf("}}\n");
  fflush(stdout);
}

static int unavailable(int rc) {
  return rc == DASH_E_UNSUPPORTED || rc == DASH_E_NO_DEVICE;
}

/* Times dash_roots_execute on the host stack: bn->warmup runs, then
 * bn->repeat timed ones into st->times. 0 or the failed call's status. */
static int time_host(struct bench *bn, struct stack *st, dash_roots_plan *plan,
                     dash_block_info *info, dash_roots_report *report) {
  int rc;
  for (int w = 0; w < bn->warmup; w++)
    if ((rc = dash_roots_execute(plan, st->out, st->in, info, report)) < 0)
      return rc;
  for (int k = 0; k < bn->repeat; k++) {
    double t0 = now_ms();
    rc = dash_roots_execute(plan, st->out, st->in, info, report);
    st->times[k] = now_ms() - t0;
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Times a CUDA plan both ways into *r: first the host round trip
 * (dash_roots_execute on host memory, whose results are not kept), then
 * dash_roots_execute_device on the stack already on the device, whose
 * result is copied back once for the accuracy and whose diagnostics are
 * kept. A failure of our own CUDA calls sets *why. */
static int time_device(struct bench *bn, struct stack *st,
                       dash_roots_plan *plan, struct row *r, const char **why) {
  int rc;
  if ((rc = time_host(bn, st, plan, NULL, NULL)) < 0)
    return rc;
  summarize(st->times, bn->repeat, &r->ms_host_min, &r->ms_host_median);
  for (int w = 0; w < bn->warmup; w++)
    if ((rc = dash_roots_execute_device(plan, st->d_out, st->d_in, st->info,
                                        &r->report, NULL)) < 0)
      return rc;
  for (int k = 0; k < bn->repeat; k++) {
    /* The call returns once its results are written; synchronizing around
     * it keeps anything else out of the time and any straggler in it. */
    if ((rc = dash__bench_cuda_sync()) < 0) {
      *why = dash__bench_cuda_error();
      return rc;
    }
    double t0 = now_ms();
    rc = dash_roots_execute_device(plan, st->d_out, st->d_in, st->info,
                                   &r->report, NULL);
    if (rc < 0)
      return rc;
    if ((rc = dash__bench_cuda_sync()) < 0) {
      *why = dash__bench_cuda_error();
      return rc;
    }
    st->times[k] = now_ms() - t0;
  }
  summarize(st->times, bn->repeat, &r->ms_min, &r->ms_median);
  if ((rc = dash__bench_cuda_download(st->out, st->d_out,
                                      st->elems * sizeof(*st->out))) < 0) {
    *why = dash__bench_cuda_error();
    return rc;
  }
  return 0;
}

/* Plans, warms up, times and checks one configuration on the current
 * stack into *r, and sets *measured. Returns 0, or a negative status when
 * the run must stop. */
static int run_config(struct bench *bn, struct stack *st,
                      const struct config *cfg, double kappa, struct row *rp,
                      int *measured) {
  dash_roots_plan *plan = NULL;
  dash_roots_options o = bn->opts;
  struct row r;
  char label[32];
  const char *why = NULL;
  int rc;

  *measured = 0;
  memset(&r, 0, sizeof(r));
  r.cfg = cfg;
  r.n = st->n;
  r.b = st->b;
  r.kappa = kappa;
  o.method = cfg->method;
  o.scaling = cfg->scaling;
  kappa_label(label, sizeof(label), kappa);
  bn->done++;
  fprintf(stderr, "[%d/%d] %s/%s %zux%zu \xce\xba=%s ...", bn->done, bn->total,
          dash_method_name(cfg->method),
          cfg->scaled ? dash_scaling_name(cfg->scaling) : "none", st->n, st->b,
          label);
  fflush(stderr);

  rc = dash_roots_plan_create(&plan, st->n, st->b, &o);
  if (rc < 0) {
    fprintf(stderr, " %s: %s\n", unavailable(rc) ? "skipped" : "failed",
            dash_last_error());
    if (unavailable(rc)) {
      bn->skipped++;
      rc = 0;
    }
    goto out;
  }
  r.ran = *dash_roots_plan_options(plan);
  r.ms_host_min = r.ms_host_median = NAN;
  if (r.ran.backend == DASH_BACKEND_CUDA && st->d_in != NULL) {
    if ((rc = time_device(bn, st, plan, &r, &why)) < 0)
      goto out;
  } else {
    if ((rc = time_host(bn, st, plan, st->info, &r.report)) < 0)
      goto out;
    summarize(st->times, bn->repeat, &r.ms_min, &r.ms_median);
  }
  r.flops = nominal_flops(r.report.method, &r.ran, st->info, st->n, st->b);
  r.gflops = r.flops / (r.ms_min * 1e6);
  rel_errors(st, &r.rel_err, &r.max_block);
  if (isfinite(r.ms_host_median))
    fprintf(stderr, " %.3f ms (host round trip %.3f ms), rel_err %.2e\n",
            r.ms_median, r.ms_host_median, r.rel_err);
  else
    fprintf(stderr, " %.3f ms, rel_err %.2e\n", r.ms_median, r.rel_err);
  *rp = r;
  *measured = 1;
  rc = 0;
out:
  /* A plan that cannot be made has said why above. */
  if (rc < 0 && why != NULL)
    fprintf(stderr, " failed: %s\n", why);
  else if (rc < 0 && plan != NULL)
    fprintf(stderr, " failed: %s: %s\n", dash_status_name(rc),
            dash_last_error());
  dash_roots_plan_destroy(plan);
  return rc;
}

static void stack_free(struct stack *st) {
  free(st->in);
  free(st->out);
  free(st->oracle);
  free(st->info);
  free(st->times);
  dash__bench_cuda_free(st->d_in);
  dash__bench_cuda_free(st->d_out);
  st->d_in = st->d_out = NULL;
}

/* Measures the sgemm roofline of the stack's shape; called before and
 * after the shape's runs, the best of both counts, since a single short
 * measurement on a shared machine is easily disturbed. */
static void roofline_update(struct bench *bn, const struct stack *st,
                            double *per_block, double *threaded) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  int threads =
      bn->opts.threads ? bn->opts.threads : (online > 0 ? (int)online : 1);
  double p, t;
  fprintf(stderr, "sgemm roofline %zux%zu on %d threads ...", st->n, st->b,
          threads);
  fflush(stderr);
  measure_roofline(st->n, st->b, threads, bn->repeat > 5 ? bn->repeat : 5, &p,
                   &t);
  *per_block = fmax(*per_block, p);
  *threaded = fmax(*threaded, t);
  bn->roofline = fmax(*per_block, *threaded);
  fprintf(stderr, " %.1f GFLOP/s (best so far %.1f)\n", fmax(p, t),
          bn->roofline);
}

static void print_roofline(const struct bench *bn, const struct stack *st,
                           double per_block, double threaded) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  int threads =
      bn->opts.threads ? bn->opts.threads : (online > 0 ? (int)online : 1);
  if (bn->json)
    printf(
        "{\"record\": \"roofline\", \"N\": %zu, \"B\": %zu, "
        "\"threads\": %d, \"gflops_thread_per_block\": %.6g, "
        "\"gflops_threaded\": %.6g, \"gflops\": %.6g}\n",
        st->n, st->b, threads, per_block, threaded, bn->roofline);
  else
    printf(
        "# sgemm %zux%zu on %d threads: thread per block %.1f "
        "GFLOP/s, threaded %.1f GFLOP/s; roofline %.1f\n",
        st->b, st->b, threads, per_block, threaded, bn->roofline);
}

/* The CUDA counterpart of roofline_update(): cuBLAS on the stack's shape
 * in the run's precision, before and after the shape's runs, the best of
 * both counting. 0, or a status after a message. */
static int cuda_roofline_update(struct bench *bn, const struct stack *st) {
  for (int q = 0; q < bn->nprec; q++) {
    dash_precision p = bn->precisions[q];
    double g;
    fprintf(stderr, "cuBLAS %s roofline %zux%zu on %s ...",
            dash_precision_name(p), st->n, st->b, bn->device);
    fflush(stderr);
    int rc = dash__bench_cuda_roofline(
        st->n, st->b, p, bn->repeat > 5 ? bn->repeat : 5, ROOFLINE_MIN_MS, &g);
    if (rc < 0) {
      fprintf(stderr, " failed: %s\n", dash__bench_cuda_error());
      return rc;
    }
    bn->cuda_roof[p & 3] = fmax(bn->cuda_roof[p & 3], g);
    fprintf(stderr, " %.1f GFLOP/s (best so far %.1f)\n", g,
            bn->cuda_roof[p & 3]);
  }
  return 0;
}

static void print_cuda_roofline(const struct bench *bn,
                                const struct stack *st) {
  for (int q = 0; q < bn->nprec; q++) {
    dash_precision p = bn->precisions[q];
    double g = bn->cuda_roof[p & 3];
    if (bn->json) {
      printf(
          "{\"record\": \"roofline\", \"method\": "
          "\"cublasGemmStridedBatchedEx\", \"backend\": \"cuda\", ");
      json_str(stdout, "device_name", bn->device);
      printf(", \"precision\": \"%s\", \"N\": %zu, \"B\": %zu, ",
             dash_precision_name(p), st->n, st->b);
      json_num(stdout, "gflops", g > 0 ? g : NAN);
      printf("}\n");
    } else {
      printf(
          "# cuBLAS GemmStridedBatchedEx %s, %zu products of %zux%zu on %s: "
          "roofline %.1f GFLOP/s\n",
          dash_precision_name(p), st->n, st->b, st->b, bn->device, g);
    }
  }
}

static int run_shape(struct bench *bn, const struct shape *sh) {
  struct stack st;
  struct row *rows = NULL;
  int nrows = 0, rc = DASH_E_NOMEM;
  double per_block = 0.0, threaded = 0.0;
  /* The CPU's roofline means nothing to another backend. */
  int cpu = !bn->cuda;

  memset(&st, 0, sizeof(st));
  st.n = sh->n;
  st.b = sh->b;
  st.elems = sh->n * sh->b * sh->b; /* checked in add_shape() */
  st.in = malloc(st.elems * sizeof(*st.in));
  st.out = calloc(st.elems, sizeof(*st.out));
  st.oracle = malloc(st.elems * sizeof(*st.oracle));
  st.info = calloc(st.n, sizeof(*st.info));
  st.times = calloc((size_t)bn->repeat, sizeof(*st.times));
  rows = calloc((size_t)bn->nkappas * (size_t)bn->nconfigs * (size_t)bn->nprec,
                sizeof(*rows));
  if (!st.in || !st.out || !st.oracle || !st.info || !st.times || !rows) {
    fprintf(stderr, "dash-bench: out of memory for a %zux%zu stack\n", st.n,
            st.b);
    goto out;
  }

  bn->roofline = 0.0;
  memset(bn->cuda_roof, 0, sizeof(bn->cuda_roof));
  if (cpu)
    roofline_update(bn, &st, &per_block, &threaded);
  /* The roofline's operands are gone before the stack is on the device. */
  if (bn->cuda) {
    size_t bytes = st.elems * sizeof(*st.in);
    if ((rc = cuda_roofline_update(bn, &st)) < 0)
      goto out;
    if ((rc = dash__bench_cuda_alloc(&st.d_in, bytes)) < 0 ||
        (rc = dash__bench_cuda_alloc(&st.d_out, bytes)) < 0) {
      fprintf(stderr, "dash-bench: a %zux%zu stack on the device: %s\n", st.n,
              st.b, dash__bench_cuda_error());
      goto out;
    }
  }
  for (int k = 0; k < bn->nkappas; k++) {
    spectra_params sp = SPECTRA_PARAMS_INIT;
    char label[32];
    sp.kappa = bn->kappas[k];
    sp.seed = bn->seed;
    kappa_label(label, sizeof(label), sp.kappa);
    fprintf(stderr, "stack %zux%zu \xce\xba=%s and its oracle ...", st.n, st.b,
            label);
    fflush(stderr);
    double t0 = now_ms();
    if ((rc = spectra_build(st.in, st.n, st.b, &sp)) < 0 ||
        (rc = spectra_oracle(st.oracle, st.in, st.n, st.b, bn->opts.root,
                             bn->opts.eps)) < 0) {
      fprintf(stderr, " failed: %s\n", dash_strerror(rc));
      goto out;
    }
    fprintf(stderr, " %.2f s\n", (now_ms() - t0) / 1e3);
    if (bn->dump_dir != NULL && dump_stack(bn, &st, sp.kappa) < 0) {
      rc = DASH_E_IO;
      goto out;
    }
    /* Once per stack: every device-resident run reads this copy. */
    if (bn->cuda && (rc = dash__bench_cuda_upload(
                         st.d_in, st.in, st.elems * sizeof(*st.in))) < 0) {
      fprintf(stderr, "dash-bench: the %zux%zu stack to the device: %s\n", st.n,
              st.b, dash__bench_cuda_error());
      goto out;
    }
    for (int q = 0; q < bn->nprec; q++) {
      bn->opts.precision = bn->precisions[q];
      for (int c = 0; c < bn->nconfigs; c++) {
        int measured;
        rc = run_config(bn, &st, &bn->configs[c], sp.kappa, &rows[nrows],
                        &measured);
        if (rc < 0)
          goto out;
        nrows += measured;
      }
    }
  }
  if (cpu)
    roofline_update(bn, &st, &per_block, &threaded);
  if (bn->cuda) {
    dash__bench_cuda_free(st.d_in);
    dash__bench_cuda_free(st.d_out);
    st.d_in = st.d_out = NULL;
    if ((rc = cuda_roofline_update(bn, &st)) < 0)
      goto out;
  }
  rc = 0;
out:
  /* Whatever was measured is printed, even when a later run failed. */
  if (cpu && nrows > 0)
    print_roofline(bn, &st, per_block, threaded);
  if (bn->cuda && nrows > 0)
    print_cuda_roofline(bn, &st);
  for (int i = 0; i < nrows; i++)
    print_row(bn, &rows[i]);
  fflush(stdout);
  free(rows);
  stack_free(&st);
  return rc;
}

int main(int argc, char **argv) {
  static const dash_roots_options defaults = DASH_ROOTS_OPTIONS_INIT;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--ipc") == 0)
      return dash__bench_ipc(argc, argv);
  struct bench *bn = calloc(1, sizeof(*bn));
  int status = EXIT_FAILURE, rc = 0;

  if (bn == NULL) {
    fprintf(stderr, "dash-bench: out of memory\n");
    return EXIT_FAILURE;
  }
  bn->opts = defaults;
  bn->repeat = 5;
  bn->warmup = 1;
  bn->seed = 1;
  rc = parse_args(bn, argc, argv);
  if (rc != 0) {
    status = rc > 0 ? EXIT_SUCCESS : EXIT_USAGE;
    goto out;
  }
  if (bn->nprec == 0) {
    bn->precisions[0] = bn->opts.precision;
    bn->nprec = 1;
  }
  if (bn->opts.backend == DASH_BACKEND_CUDA && !dash_roots_cuda_available()) {
    /* The library says why: no plugin, no driver, no device. */
    char text[8];
    if (dash_roots_cuda_describe(text, sizeof(text)) < 0)
      fprintf(stderr, "dash-bench: skipped: no CUDA device (%s)\n",
              dash_last_error());
    else
      fprintf(stderr, "dash-bench: skipped: no CUDA device\n");
    status = bn->skip_unavailable ? EXIT_SUCCESS : EXIT_UNAVAILABLE;
    goto out;
  }
  /* AUTO picks CUDA exactly when a device is present (roots.h). */
  bn->cuda =
      bn->opts.backend == DASH_BACKEND_CUDA ||
      (bn->opts.backend == DASH_BACKEND_AUTO && dash_roots_cuda_available());
  if (bn->cuda && (rc = dash__bench_cuda_device(bn->device, sizeof(bn->device),
                                                bn->device_desc,
                                                sizeof(bn->device_desc))) < 0) {
    fprintf(stderr, "dash-bench: %s%s\n", unavailable(rc) ? "skipped: " : "",
            dash__bench_cuda_error());
    status = !unavailable(rc)       ? EXIT_FAILURE
             : bn->skip_unavailable ? EXIT_SUCCESS
                                    : EXIT_UNAVAILABLE;
    goto out;
  }
  bn->total = bn->nshapes * bn->nkappas * bn->nconfigs * bn->nprec;
  if (bn->dump_dir != NULL && dump_open(bn) < 0)
    goto out;
  if (!bn->json)
    print_header(bn);
  for (int s = 0; s < bn->nshapes; s++)
    if ((rc = run_shape(bn, &bn->shapes[s])) < 0)
      break;
  if (dump_close(bn, rc == 0) < 0 && rc == 0)
    rc = DASH_E_IO;
  if (rc < 0)
    status = EXIT_FAILURE;
  else if (bn->skipped > 0 && !bn->skip_unavailable)
    status = EXIT_UNAVAILABLE;
  else
    status = EXIT_SUCCESS;
  if (bn->skipped > 0)
    fprintf(stderr, "dash-bench: %d configuration%s unavailable\n", bn->skipped,
            bn->skipped == 1 ? "" : "s");
out:
  free(bn);
  return status;
}
