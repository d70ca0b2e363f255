/* dash-overlap: how much a refresh in flight in dashd slows a GPU trainer.
 *
 * A synthetic trainer runs on its own CUDA stream: each step is a chain of
 * --gemms square GEMMs of --gemm (forward and backward), an element-wise
 * update of the Shampoo statistics, and a small kernel that reads the
 * adopted inverse roots (the preconditioning). The statistics and the two
 * result slots are one cudaMalloc allocation with the buffers at offsets,
 * as PyTorch's caching allocator hands them out, registered with
 * dash_stack_create_cuda(). Phases of --steps steps alternate:
 *   baseline  no dash call at all;
 *   refresh   dash_step(s, step, stream) every --every steps and
 *             dash_sync(s, 0, &info) every step, so that with the daemon
 *             coalescing, a refresh is nearly always in flight.
 * Each step's GPU time is the time between cudaEvents recorded on the
 * trainer's stream at the start of consecutive steps, so it includes any
 * wait that dash_step() or dash_sync() queued on the stream. The CPU
 * never waits for the current step: the only host waits inside a phase
 * are on the start event of the step --run-ahead steps back, which bounds
 * how far the CPU queues ahead as a trainer's loss.item() does, and
 * leaves the GPU that many steps of queued work. Phase boundaries
 * synchronise the stream and wait until no refresh is in flight, so that
 * a baseline never shares the GPU with a refresh.
 *
 * stdout: JSON lines (config, one per phase, one per pair, summary);
 * stderr: progress. Exit 0 when measured, 1 on a failure, 2 when there is
 * no CUDA device here, 64 for a bad command line. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dash/dash.h"

#define EXIT_FAILED 1
#define EXIT_UNAVAILABLE 2
#define EXIT_USAGE 64

/* The pool's layout: the statistics start this far in, as a tensor carved
 * out of a cached segment does, and every buffer starts on 512 bytes,
 * PyTorch's block alignment. */
#define POOL_HEAD ((size_t)1 << 20)
#define POOL_ALIGN ((size_t)512)
/* How long a phase boundary waits for the daemon's last refresh. */
#define DRAIN_TIMEOUT_MS 60000.0
#define THREADS 256

/* ---------------------------------------------------------------- kernels */

/* Uniform in [-1, 1) from a counter-based hash (splitmix64): the same
 * numbers for a seed on every GPU, whatever the launch shape. */
__device__ static float hash_uniform(uint64_t seed, size_t i) {
  uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ static void fill_uniform_kernel(float *x, size_t count,
                                           uint64_t seed, float scale) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x)
    x[i] = scale * hash_uniform(seed, i);
}

/* Every B×B block of s becomes c·I. */
__global__ static void set_identity_kernel(float *s, size_t count, int b,
                                           float c) {
  const size_t bb = (size_t)b * b;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t e = i % bb;
    s[i] = e / b == e % b ? c : 0.0f;
  }
}

/* The statistics update: every element is read and written, as an EMA
 * would, and the diagonal moves by delta. The trainer alternates +delta
 * and -delta, so the spectrum (and the daemon's work) stays the same. */
__global__ static void update_stats_kernel(float *s, size_t count, int b,
                                           float delta) {
  const size_t bb = (size_t)b * b;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t e = i % bb;
    s[i] = s[i] + (e / b == e % b ? delta : 0.0f);
  }
}

/* Stands in for the preconditioning: reads each block's diagonal of the
 * held roots, so that the slot hand-over's ordering is part of each step. */
__global__ static void apply_roots_kernel(const float *root, size_t n, int b,
                                          float *out) {
  const size_t count = n * (size_t)b;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t blk = i / b, r = i % b;
    out[i] = root[(blk * b + r) * b + r];
  }
}

/* -------------------------------------------------------------- launchers */

static unsigned grid_for(size_t count) {
  size_t g = (count + THREADS - 1) / THREADS;
  return (unsigned)(g < 4096 ? (g > 0 ? g : 1) : 4096);
}

static cudaError_t fill_uniform(float *x, size_t count, uint64_t seed,
                                float scale, cudaStream_t st) {
  fill_uniform_kernel<<<grid_for(count), THREADS, 0, st>>>(x, count, seed,
                                                           scale);
  return cudaGetLastError();
}

static cudaError_t set_identity(float *s, size_t count, int b, float c,
                                cudaStream_t st) {
  set_identity_kernel<<<grid_for(count), THREADS, 0, st>>>(s, count, b, c);
  return cudaGetLastError();
}

static cudaError_t update_stats(float *s, size_t count, int b, float delta,
                                cudaStream_t st) {
  update_stats_kernel<<<grid_for(count), THREADS, 0, st>>>(s, count, b, delta);
  return cudaGetLastError();
}

static cudaError_t apply_roots(const float *root, size_t n, int b, float *out,
                               cudaStream_t st) {
  apply_roots_kernel<<<grid_for(n * (size_t)b), THREADS, 0, st>>>(root, n, b,
                                                                  out);
  return cudaGetLastError();
}

/* ---------------------------------------------------------------- options */

struct options {
  const char *socket;
  const char *label;
  int device;
  long blocks, block_size, root;
  dash_method method;
  dash_precision precision;
  double shift;
  long gemm, gemms;
  int tf32;
  int high_priority;
  long steps, warmup, pairs, every, run_ahead;
  long seed;
};

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: dash-overlap [options]\n"
      "Measures a synthetic GPU trainer's step time with a dashd refresh\n"
      "in flight against none: phases of baseline (no dash calls) and\n"
      "refresh (dash_step on the trainer's stream, dash_sync every step)\n"
      "alternate. Meant for a running dashd with backend cuda on this\n"
      "GPU or a peer of it (CUDA IPC); against backend cpu it measures\n"
      "the pinned-SHM path, whose dash_step waits for the stream.\n"
      "\n"
      "  --socket PATH        dashd's socket (default: libdash's default)\n"
      "  --device N           the trainer's GPU (default 0)\n"
      "  --blocks N           blocks of the stack (default 64)\n"
      "  --block-size B       block size (default 512)\n"
      "  --root P             p of the inverse root (default 4)\n"
      "  --method M           ndb, cn, evd, cheb or auto (default ndb)\n"
      "  --precision P        the daemon's fp32, tf32, bf16, fp16\n"
      "                       (default fp32)\n"
      "  --shift S            statistics A·Aᵀ/B + S·I per block, A uniform\n"
      "                       in [-1,1): the spectrum spans about 1.3/S\n"
      "                       (default 1e-3)\n"
      "  --gemm M             the trainer's GEMMs are MxM by MxM (default\n"
      "                       4096)\n"
      "  --gemms K            GEMMs per step (default 4)\n"
      "  --math T             tf32 or fp32 GEMMs (default tf32)\n"
      "  --trainer-priority P default or high: the trainer stream's CUDA\n"
      "                       priority; default (0) is also the lowest,\n"
      "                       as on PyTorch's streams (default default)\n"
      "  --steps S            measured steps per phase (default 200)\n"
      "  --warmup W           unmeasured steps with refresh first (default\n"
      "                       20)\n"
      "  --pairs N            baseline/refresh pairs (default 2)\n"
      "  --every E            dash_step every E steps (default 1)\n"
      "  --run-ahead K        steps the CPU may queue ahead of the GPU;\n"
      "                       0 = no limit (default 2)\n"
      "  --seed S             seed of the statistics and operands (default "
      "1)\n"
      "  --label TEXT         copied into every JSON record (default \"\")\n"
      "  --help               this text\n"
      "\n"
      "stdout: one JSON object per line: \"config\", one \"phase\" per\n"
      "phase, one \"pair\" per pair with ratio = refresh step time /\n"
      "baseline step time (means), and a \"summary\". Step times are GPU\n"
      "times between events on the trainer's stream; dash_step_us and\n"
      "dash_sync_us are the wall time of each call in the trainer.\n"
      "Exit: 0 measured, 1 failed, 2 no CUDA device, 64 bad usage.\n");
}

static int parse_long(const char *name, const char *text, long lo, long hi,
                      long *out) {
  char *end;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "dash-overlap: --%s %s: want an integer in %ld..%ld\n",
            name, text, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_options(int argc, char **argv, struct options *o) {
  static const struct option opts[] = {
      {"socket", required_argument, NULL, 's'},
      {"device", required_argument, NULL, 'd'},
      {"blocks", required_argument, NULL, 'n'},
      {"block-size", required_argument, NULL, 'b'},
      {"root", required_argument, NULL, 'p'},
      {"method", required_argument, NULL, 'm'},
      {"precision", required_argument, NULL, 'P'},
      {"shift", required_argument, NULL, 'S'},
      {"gemm", required_argument, NULL, 'g'},
      {"gemms", required_argument, NULL, 'k'},
      {"math", required_argument, NULL, 'T'},
      {"trainer-priority", required_argument, NULL, 'r'},
      {"steps", required_argument, NULL, 't'},
      {"warmup", required_argument, NULL, 'w'},
      {"pairs", required_argument, NULL, 'N'},
      {"every", required_argument, NULL, 'e'},
      {"run-ahead", required_argument, NULL, 'a'},
      {"seed", required_argument, NULL, 'z'},
      {"label", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  long dev = 0;
  int ch, idx = 0;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
    const char *name = opts[idx].name;
    int rc = 0;
    switch (ch) {
      case 's':
        o->socket = optarg;
        break;
      case 'l':
        o->label = optarg;
        break;
      case 'd':
        rc = parse_long(name, optarg, 0, 1023, &dev);
        o->device = (int)dev;
        break;
      case 'n':
        rc = parse_long(name, optarg, 1, 1 << 20, &o->blocks);
        break;
      case 'b':
        rc = parse_long(name, optarg, 1, 1 << 15, &o->block_size);
        break;
      case 'p':
        rc = parse_long(name, optarg, 1, 64, &o->root);
        break;
      case 'm':
        if (dash_method_parse(optarg, &o->method) < 0) {
          fprintf(stderr,
                  "dash-overlap: --method %s: want ndb, cn, evd, "
                  "cheb or auto\n",
                  optarg);
          rc = -1;
        }
        break;
      case 'P':
        if (dash_precision_parse(optarg, &o->precision) < 0) {
          fprintf(stderr,
                  "dash-overlap: --precision %s: want fp32, tf32, "
                  "bf16 or fp16\n",
                  optarg);
          rc = -1;
        }
        break;
      case 'S': {
        char *end;
        o->shift = strtod(optarg, &end);
        if (end == optarg || *end != '\0' || !(o->shift > 0.0) ||
            o->shift > 1e6) {
          fprintf(stderr,
                  "dash-overlap: --shift %s: want a number in "
                  "(0, 1e6]\n",
                  optarg);
          rc = -1;
        }
        break;
      }
      case 'g':
        rc = parse_long(name, optarg, 16, 1 << 15, &o->gemm);
        break;
      case 'k':
        rc = parse_long(name, optarg, 1, 256, &o->gemms);
        break;
      case 'T':
        if (strcmp(optarg, "tf32") == 0 || strcmp(optarg, "fp32") == 0) {
          o->tf32 = strcmp(optarg, "tf32") == 0;
        } else {
          fprintf(stderr, "dash-overlap: --math %s: want tf32 or fp32\n",
                  optarg);
          rc = -1;
        }
        break;
      case 'r':
        if (strcmp(optarg, "default") == 0 || strcmp(optarg, "high") == 0) {
          o->high_priority = strcmp(optarg, "high") == 0;
        } else {
          fprintf(stderr,
                  "dash-overlap: --trainer-priority %s: want default "
                  "or high\n",
                  optarg);
          rc = -1;
        }
        break;
      case 't':
        rc = parse_long(name, optarg, 1, 1000000, &o->steps);
        break;
      case 'w':
        rc = parse_long(name, optarg, 1, 1000000, &o->warmup);
        break;
      case 'N':
        rc = parse_long(name, optarg, 1, 1000, &o->pairs);
        break;
      case 'e':
        rc = parse_long(name, optarg, 1, 1000000, &o->every);
        break;
      case 'a':
        rc = parse_long(name, optarg, 0, 1000, &o->run_ahead);
        break;
      case 'z':
        rc = parse_long(name, optarg, 0, 2147483647L, &o->seed);
        break;
      case 'h':
        usage(stdout);
        exit(0);
      default:
        /* optind has moved past the word getopt_long stopped at. */
        fprintf(stderr,
                "dash-overlap: bad argument '%s', or a value missing "
                "(see --help)\n",
                argv[optind - 1]);
        return -1;
    }
    if (rc < 0)
      return -1;
  }
  if (optind < argc) {
    fprintf(stderr, "dash-overlap: unexpected argument '%s' (see --help)\n",
            argv[optind]);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- the bench */

struct bench {
  const struct options *o;
  size_t n, b, m;
  size_t count; /* N·B·B */
  cudaStream_t stream;
  int prio, prio_least, prio_greatest; /* the stream's, and CUDA's range */
  cublasHandle_t blas;
  /* The one allocation of the statistics and the result slots. */
  char *pool;
  size_t pool_bytes, stats_off, result_off;
  float *stats, *results;
  float *x, *w, *act[2]; /* the trainer's GEMM operands */
  float *applied;        /* what apply_roots writes, N·B floats */
  cudaEvent_t *start;    /* one per step and one at the end */
  long nevents;
  double *step_ms, *step_us, *sync_us; /* per step of a phase */
  dash_client *client;
  dash_stack *stack;
  dash_refresh_info info; /* of the last dash_sync() */
  uint64_t step;          /* the trainer's step, over every phase */
};

struct dist {
  double mean, p50, p95, max;
};

struct phase_result {
  long steps;
  struct dist step_ms;
  double wall_ms;
  long dash_calls;
  struct dist step_us, sync_us;
  uint64_t refreshes, adopted;
  double in_flight_share, compute_ms_mean, iterations_mean;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Mean, nearest-rank p50 and p95, and maximum; sorts v. */
static struct dist summarize(double *v, size_t n) {
  struct dist d = {NAN, NAN, NAN, NAN};
  if (n == 0)
    return d;
  double sum = 0.0;
  for (size_t i = 0; i < n; i++)
    sum += v[i];
  qsort(v, n, sizeof(*v), cmp_double);
  d.mean = sum / (double)n;
  d.p50 = v[(size_t)ceil(0.50 * (double)n) - 1];
  d.p95 = v[(size_t)ceil(0.95 * (double)n) - 1];
  d.max = v[n - 1];
  return d;
}

static int cuda_fail(const char *what, cudaError_t e) {
  fprintf(stderr, "dash-overlap: %s: %s (%s)\n", what, cudaGetErrorString(e),
          cudaGetErrorName(e));
  return -1;
}

static int blas_fail(const char *what, cublasStatus_t st) {
  fprintf(stderr, "dash-overlap: %s: %s\n", what, cublasGetStatusString(st));
  return -1;
}

static int dash_fail(const char *what, int rc) {
  fprintf(stderr, "dash-overlap: %s: %s (%s)\n", what, dash_last_error(),
          dash_strerror(rc));
  return -1;
}

#define CUDA_OR_FAIL(what, call)    \
  do {                              \
    cudaError_t e_ = (call);        \
    if (e_ != cudaSuccess)          \
      return cuda_fail((what), e_); \
  } while (0)

#define BLAS_OR_FAIL(what, call)     \
  do {                               \
    cublasStatus_t s_ = (call);      \
    if (s_ != CUBLAS_STATUS_SUCCESS) \
      return blas_fail((what), s_);  \
  } while (0)

static size_t round_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

static void *device_alloc(size_t bytes, const char *what) {
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    fprintf(stderr, "dash-overlap: cudaMalloc of %.1f MiB for %s: %s\n",
            (double)bytes / 1048576.0, what, cudaGetErrorString(e));
    return NULL;
  }
  return p;
}

/* Sizes from the command line, checked against overflow before anything
 * is allocated; the buffers; the SPD statistics, built on the GPU. */
static int setup_gpu(struct bench *bn) {
  const struct options *o = bn->o;
  size_t bb, stats_bytes, result_bytes, mm, mm_bytes;
  bn->n = (size_t)o->blocks;
  bn->b = (size_t)o->block_size;
  bn->m = (size_t)o->gemm;
  if (__builtin_mul_overflow(bn->b, bn->b, &bb) ||
      __builtin_mul_overflow(bb, bn->n, &bn->count) ||
      __builtin_mul_overflow(bn->count, sizeof(float), &stats_bytes) ||
      __builtin_mul_overflow(stats_bytes, (size_t)2, &result_bytes) ||
      __builtin_mul_overflow(bn->m, bn->m, &mm) ||
      __builtin_mul_overflow(mm, sizeof(float), &mm_bytes) ||
      stats_bytes > ((size_t)1 << 40) || mm_bytes > ((size_t)1 << 40)) {
    fprintf(stderr, "dash-overlap: the stack or the GEMMs are too large\n");
    return -1;
  }
  bn->stats_off = POOL_HEAD;
  bn->result_off = POOL_HEAD + round_up(stats_bytes, POOL_ALIGN) + POOL_ALIGN;
  bn->pool_bytes =
      bn->result_off + round_up(result_bytes, POOL_ALIGN) + POOL_HEAD;

  CUDA_OR_FAIL("cudaSetDevice", cudaSetDevice(o->device));
  CUDA_OR_FAIL(
      "cudaDeviceGetStreamPriorityRange",
      cudaDeviceGetStreamPriorityRange(&bn->prio_least, &bn->prio_greatest));
  /* A stream made without a priority (PyTorch's, for one) has 0, which
   * is `least`, the lowest: the priority dashd's stream has by default. */
  bn->prio = o->high_priority ? bn->prio_greatest : 0;
  CUDA_OR_FAIL("cudaStreamCreateWithPriority",
               cudaStreamCreateWithPriority(&bn->stream, cudaStreamNonBlocking,
                                            bn->prio));
  BLAS_OR_FAIL("cublasCreate", cublasCreate(&bn->blas));
  BLAS_OR_FAIL("cublasSetStream", cublasSetStream(bn->blas, bn->stream));

  const char *op = "a GEMM operand";
  if ((bn->pool = (char *)device_alloc(
           bn->pool_bytes, "the statistics and result slots")) == NULL ||
      (bn->x = (float *)device_alloc(mm_bytes, op)) == NULL ||
      (bn->w = (float *)device_alloc(mm_bytes, op)) == NULL ||
      (bn->act[0] = (float *)device_alloc(mm_bytes, op)) == NULL ||
      (bn->act[1] = (float *)device_alloc(mm_bytes, op)) == NULL ||
      (bn->applied = (float *)device_alloc(bn->n * bn->b * sizeof(float),
                                           "the applied roots")) == NULL)
    return -1;
  bn->stats = (float *)(bn->pool + bn->stats_off);
  bn->results = (float *)(bn->pool + bn->result_off);
  CUDA_OR_FAIL("cudaMemsetAsync",
               cudaMemsetAsync(bn->pool, 0, bn->pool_bytes, bn->stream));

  /* The operands: X uniform in [-1, 1), W with variance 1/M so that the
   * chain of products within a step keeps its scale. */
  uint64_t seed = (uint64_t)o->seed * 0x100000001B3ull;
  CUDA_OR_FAIL("fill X", fill_uniform(bn->x, mm, seed + 1, 1.0f, bn->stream));
  CUDA_OR_FAIL("fill W",
               fill_uniform(bn->w, mm, seed + 2,
                            (float)sqrt(3.0 / (double)bn->m), bn->stream));

  /* Statistics S_k = A_k·A_kᵀ/B + shift·I, A_k uniform in [-1, 1), drawn
   * into the first result slot, which the daemon overwrites anyway. */
  const float alpha = 1.0f / (float)bn->b, beta = 1.0f;
  const int b = (int)bn->b;
  CUDA_OR_FAIL("fill A", fill_uniform(bn->results, bn->count, seed + 3, 1.0f,
                                      bn->stream));
  CUDA_OR_FAIL("set shift·I", set_identity(bn->stats, bn->count, b,
                                           (float)o->shift, bn->stream));
  BLAS_OR_FAIL("cublasSgemmStridedBatched (statistics)",
               cublasSgemmStridedBatched(
                   bn->blas, CUBLAS_OP_N, CUBLAS_OP_T, b, b, b, &alpha,
                   bn->results, b, (long long)bb, bn->results, b, (long long)bb,
                   &beta, bn->stats, b, (long long)bb, (int)bn->n));
  CUDA_OR_FAIL("clear the result slots",
               cudaMemsetAsync(bn->results, 0, result_bytes, bn->stream));
  CUDA_OR_FAIL("cudaStreamSynchronize (setup)",
               cudaStreamSynchronize(bn->stream));

  bn->nevents = (o->steps > o->warmup ? o->steps : o->warmup) + 1;
  size_t ne = (size_t)bn->nevents;
  bn->start = (cudaEvent_t *)calloc(ne, sizeof(cudaEvent_t));
  bn->step_ms = (double *)calloc(ne, sizeof(double));
  bn->step_us = (double *)calloc(ne, sizeof(double));
  bn->sync_us = (double *)calloc(ne, sizeof(double));
  if (bn->start == NULL || bn->step_ms == NULL || bn->step_us == NULL ||
      bn->sync_us == NULL) {
    fprintf(stderr, "dash-overlap: out of memory\n");
    return -1;
  }
  for (long i = 0; i < bn->nevents; i++)
    CUDA_OR_FAIL("cudaEventCreate", cudaEventCreate(&bn->start[i]));
  return 0;
}

/* The forward and backward stand-in: act[k%2] = in·W, where in is X for
 * the first product and the previous product after it. */
static int enqueue_gemms(struct bench *bn) {
  const float one = 1.0f, zero = 0.0f;
  const int m = (int)bn->m;
  const cublasComputeType_t ct =
      bn->o->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  for (long k = 0; k < bn->o->gemms; k++) {
    const float *in = k == 0 ? bn->x : bn->act[(k - 1) % 2];
    BLAS_OR_FAIL(
        "cublasGemmEx",
        cublasGemmEx(bn->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, m, m, &one, in,
                     CUDA_R_32F, m, bn->w, CUDA_R_32F, m, &zero, bn->act[k % 2],
                     CUDA_R_32F, m, ct, CUBLAS_GEMM_DEFAULT));
  }
  return 0;
}

/* The roots in use: the adopted slot, or the statistics before the first
 * adoption (the warm-up's first steps). */
static const float *held_roots(const struct bench *bn) {
  const float *r = dash_stack_result_cuda(bn->stack);
  return r != NULL ? r : bn->stats;
}

/* Waits until no refresh is in flight in the daemon and adopts the last
 * one, then lets the stream drain: a phase boundary. */
static int drain(struct bench *bn) {
  double t0 = now_ms();
  for (;;) {
    int rc = dash_sync(bn->stack, 1000, &bn->info);
    if (rc < 0)
      return dash_fail("dash_sync at a phase boundary", rc);
    if (!bn->info.in_flight)
      break;
    if (now_ms() - t0 > DRAIN_TIMEOUT_MS) {
      fprintf(stderr,
              "dash-overlap: a refresh is still in flight after %.0f s\n",
              DRAIN_TIMEOUT_MS / 1e3);
      return -1;
    }
  }
  CUDA_OR_FAIL("cudaStreamSynchronize (phase boundary)",
               cudaStreamSynchronize(bn->stream));
  return 0;
}

/* One phase of `steps` steps, with the dash calls when `refresh`. */
static int run_phase(struct bench *bn, int refresh, long steps,
                     struct phase_result *r) {
  const struct options *o = bn->o;
  const float delta = (float)(o->shift * 1e-2);
  const int b = (int)bn->b;
  uint64_t gen0 = bn->info.generation, adopted = 0, in_flight = 0;
  double compute_sum = 0.0, iter_sum = 0.0;
  long calls = 0;

  memset(r, 0, sizeof(*r));
  r->steps = steps;
  double t0 = now_ms();
  for (long i = 0; i < steps; i++) {
    /* Bound the CPU's lead: step i - K has started, so the GPU still has
     * K steps of work queued while this one is enqueued. */
    if (o->run_ahead > 0 && i >= o->run_ahead)
      CUDA_OR_FAIL("cudaEventSynchronize (run-ahead)",
                   cudaEventSynchronize(bn->start[i - o->run_ahead]));
    CUDA_OR_FAIL("cudaEventRecord", cudaEventRecord(bn->start[i], bn->stream));
    if (enqueue_gemms(bn) < 0)
      return -1;
    CUDA_OR_FAIL("update_stats",
                 update_stats(bn->stats, bn->count, b,
                              (bn->step & 1) ? -delta : delta, bn->stream));
    if (refresh) {
      if ((uint64_t)(bn->step % (uint64_t)o->every) == 0) {
        double c0 = now_ms();
        int rc = dash_step(bn->stack, bn->step, bn->stream);
        bn->step_us[calls++] = (now_ms() - c0) * 1e3;
        if (rc < 0)
          return dash_fail("dash_step", rc);
      }
      double c0 = now_ms();
      int rc = dash_sync(bn->stack, 0, &bn->info);
      bn->sync_us[i] = (now_ms() - c0) * 1e3;
      if (rc < 0)
        return dash_fail("dash_sync", rc);
      if (rc == 1) {
        adopted++;
        compute_sum += bn->info.compute_ms;
        iter_sum += bn->info.max_iterations;
      }
      in_flight += bn->info.in_flight != 0;
    }
    CUDA_OR_FAIL("apply_roots", apply_roots(held_roots(bn), bn->n, b,
                                            bn->applied, bn->stream));
    bn->step++;
  }
  CUDA_OR_FAIL("cudaEventRecord",
               cudaEventRecord(bn->start[steps], bn->stream));
  CUDA_OR_FAIL("cudaStreamSynchronize (end of phase)",
               cudaStreamSynchronize(bn->stream));
  r->wall_ms = now_ms() - t0;
  for (long i = 0; i < steps; i++) {
    float ms = 0.0f;
    CUDA_OR_FAIL("cudaEventElapsedTime",
                 cudaEventElapsedTime(&ms, bn->start[i], bn->start[i + 1]));
    bn->step_ms[i] = ms;
  }
  r->step_ms = summarize(bn->step_ms, (size_t)steps);
  if (refresh) {
    r->dash_calls = calls;
    r->step_us = summarize(bn->step_us, (size_t)calls);
    r->sync_us = summarize(bn->sync_us, (size_t)steps);
    r->refreshes = bn->info.generation - gen0;
    r->adopted = adopted;
    r->in_flight_share = (double)in_flight / (double)steps;
    r->compute_ms_mean = adopted ? compute_sum / (double)adopted : NAN;
    r->iterations_mean = adopted ? iter_sum / (double)adopted : NAN;
  }
  return drain(bn);
}

/* ------------------------------------------------------------------ JSON */

static void json_string(const char *s) {
  putchar('"');
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c < 0x20)
      printf("\\u%04x", c);
    else
      putchar(c);
  }
  putchar('"');
}

static void json_num(const char *key, double v, int decimals) {
  if (isfinite(v))
    printf(",\"%s\":%.*f", key, decimals, v);
  else
    printf(",\"%s\":null", key);
}

static void json_dist(const char *prefix, const struct dist *d, int decimals) {
  char key[64];
  snprintf(key, sizeof(key), "%s_mean", prefix);
  json_num(key, d->mean, decimals);
  snprintf(key, sizeof(key), "%s_p50", prefix);
  json_num(key, d->p50, decimals);
  snprintf(key, sizeof(key), "%s_p95", prefix);
  json_num(key, d->p95, decimals);
  snprintf(key, sizeof(key), "%s_max", prefix);
  json_num(key, d->max, decimals);
}

static void json_begin(const struct options *o, const char *record) {
  printf("{\"record\":\"%s\",\"label\":", record);
  json_string(o->label);
}

static void json_end(void) {
  printf("}\n");
  fflush(stdout);
}

static void print_config(const struct bench *bn, const char *gpu,
                         int device_count) {
  const struct options *o = bn->o;
  json_begin(o, "config");
  printf(",\"device\":%d,\"gpu\":", o->device);
  json_string(gpu);
  printf(
      ",\"device_count\":%d,\"blocks\":%zu,\"block_size\":%zu"
      ",\"root\":%ld,\"method\":\"%s\",\"precision\":\"%s\"",
      device_count, bn->n, bn->b, o->root, dash_method_name(o->method),
      dash_precision_name(o->precision));
  json_num("shift", o->shift, 6);
  printf(
      ",\"gemm\":%zu,\"gemms\":%ld,\"math\":\"%s\""
      ",\"trainer_priority\":\"%s\",\"stream_priority\":%d"
      ",\"priority_lowest\":%d,\"priority_highest\":%d,\"steps\":%ld,"
      "\"warmup\":%ld"
      ",\"pairs\":%ld,\"every\":%ld,\"run_ahead\":%ld"
      ",\"pool_bytes\":%zu,\"stats_offset\":%zu,\"result_offset\":%zu",
      bn->m, o->gemms, o->tf32 ? "tf32" : "fp32",
      o->high_priority ? "high" : "default", bn->prio, bn->prio_least,
      bn->prio_greatest, o->steps, o->warmup, o->pairs, o->every, o->run_ahead,
      bn->pool_bytes, bn->stats_off, bn->result_off);
  json_end();
}

static void print_phase(const struct options *o, long pair, int refresh,
                        const struct phase_result *r) {
  json_begin(o, "phase");
  printf(",\"pair\":%ld,\"phase\":\"%s\",\"steps\":%ld", pair,
         refresh ? "refresh" : "baseline", r->steps);
  json_dist("step_ms", &r->step_ms, 4);
  json_num("wall_ms_per_step", r->wall_ms / (double)r->steps, 4);
  if (refresh) {
    printf(",\"dash_step_calls\":%ld", r->dash_calls);
    json_dist("dash_step_us", &r->step_us, 1);
    json_dist("dash_sync_us", &r->sync_us, 1);
    printf(",\"refreshes\":%llu,\"adopted\":%llu",
           (unsigned long long)r->refreshes, (unsigned long long)r->adopted);
    json_num("in_flight_share", r->in_flight_share, 3);
    json_num("compute_ms_mean", r->compute_ms_mean, 3);
    json_num("max_iterations_mean", r->iterations_mean, 1);
  }
  json_end();
  if (refresh)
    fprintf(stderr,
            "dash-overlap: pair %ld refresh:  step %.3f ms (p50 %.3f, p95 "
            "%.3f); dash_step p50 %.1f us, p95 %.1f, max %.1f; %llu "
            "refreshes, in flight %.0f%% of steps\n",
            pair, r->step_ms.mean, r->step_ms.p50, r->step_ms.p95,
            r->step_us.p50, r->step_us.p95, r->step_us.max,
            (unsigned long long)r->refreshes, 100.0 * r->in_flight_share);
  else
    fprintf(stderr,
            "dash-overlap: pair %ld baseline: step %.3f ms (p50 %.3f, p95 "
            "%.3f)\n",
            pair, r->step_ms.mean, r->step_ms.p50, r->step_ms.p95);
}

/* ------------------------------------------------------------------- main */

static int run(struct bench *bn) {
  const struct options *o = bn->o;
  struct phase_result base, with;
  double *ratios = (double *)calloc((size_t)o->pairs, sizeof(double));
  double *all_step_us = NULL;
  size_t all_calls = 0;
  uint64_t refreshes = 0;
  double in_flight = 0.0;
  int rc = -1;

  /* Every dash_step's time over all refresh phases, for the summary. */
  all_step_us = (double *)calloc((size_t)(o->pairs * o->steps), sizeof(double));
  if (ratios == NULL || all_step_us == NULL) {
    fprintf(stderr, "dash-overlap: out of memory\n");
    goto out;
  }
  /* The warm-up: cuBLAS's heuristics, the GPU's clocks, and the daemon's
   * first refresh (its plan, the IPC mappings) before anything is timed. */
  fprintf(stderr, "dash-overlap: warm-up, %ld steps with refresh\n", o->warmup);
  if (run_phase(bn, 1, o->warmup, &with) < 0)
    goto out;
  if (bn->info.generation == 0) {
    fprintf(stderr, "dash-overlap: no refresh finished in the warm-up\n");
    goto out;
  }
  fprintf(stderr,
          "dash-overlap: warm-up done: step %.3f ms, %llu refreshes, the "
          "last computed in %.1f ms\n",
          with.step_ms.mean, (unsigned long long)bn->info.generation,
          bn->info.compute_ms);
  for (long p = 1; p <= o->pairs; p++) {
    if (run_phase(bn, 0, o->steps, &base) < 0)
      goto out;
    print_phase(o, p, 0, &base);
    if (run_phase(bn, 1, o->steps, &with) < 0)
      goto out;
    print_phase(o, p, 1, &with);
    memcpy(all_step_us + all_calls, bn->step_us,
           (size_t)with.dash_calls * sizeof(double));
    all_calls += (size_t)with.dash_calls;
    refreshes += with.refreshes;
    in_flight += with.in_flight_share;
    ratios[p - 1] = with.step_ms.mean / base.step_ms.mean;
    json_begin(o, "pair");
    printf(",\"pair\":%ld", p);
    json_num("baseline_ms", base.step_ms.mean, 4);
    json_num("refresh_ms", with.step_ms.mean, 4);
    json_num("ratio", ratios[p - 1], 4);
    json_num("ratio_p50", with.step_ms.p50 / base.step_ms.p50, 4);
    json_end();
    fprintf(stderr, "dash-overlap: pair %ld: ratio %.4f (p50 %.4f)\n", p,
            ratios[p - 1], with.step_ms.p50 / base.step_ms.p50);
  }
  {
    struct dist rd = summarize(ratios, (size_t)o->pairs);
    struct dist sd = summarize(all_step_us, all_calls);
    json_begin(o, "summary");
    printf(",\"pairs\":%ld", o->pairs);
    json_num("ratio_min", ratios[0], 4);
    json_num("ratio_median", rd.p50, 4);
    json_num("ratio_max", rd.max, 4);
    json_num("dash_step_us_p50", sd.p50, 1);
    json_num("dash_step_us_p95", sd.p95, 1);
    json_num("dash_step_us_max", sd.max, 1);
    printf(",\"refreshes\":%llu", (unsigned long long)refreshes);
    json_num("in_flight_share", in_flight / (double)o->pairs, 3);
    json_end();
    fprintf(stderr,
            "dash-overlap: ratio min %.4f median %.4f max %.4f; dash_step "
            "p50 %.1f us, p95 %.1f, max %.1f\n",
            ratios[0], rd.p50, rd.max, sd.p50, sd.p95, sd.max);
  }
  rc = 0;
out:
  free(all_step_us);
  free(ratios);
  return rc;
}

static void teardown(struct bench *bn) {
  if (bn->stream != NULL)
    (void)cudaStreamSynchronize(bn->stream);
  /* The stack goes first: its buffers must stay allocated until then. */
  dash_stack_destroy(bn->stack);
  dash_disconnect(bn->client);
  for (long i = 0; bn->start != NULL && i < bn->nevents; i++)
    if (bn->start[i] != NULL)
      (void)cudaEventDestroy(bn->start[i]);
  cudaFree(bn->applied);
  cudaFree(bn->act[1]);
  cudaFree(bn->act[0]);
  cudaFree(bn->w);
  cudaFree(bn->x);
  cudaFree(bn->pool);
  if (bn->blas != NULL)
    cublasDestroy(bn->blas);
  if (bn->stream != NULL)
    (void)cudaStreamDestroy(bn->stream);
  free(bn->sync_us);
  free(bn->step_us);
  free(bn->step_ms);
  free(bn->start);
}

int main(int argc, char **argv) {
  struct options o;
  struct bench bn;
  cudaDeviceProp prop;
  int count = 0, status = EXIT_FAILED, rc;

  memset(&o, 0, sizeof(o));
  o.label = "";
  o.blocks = 64;
  o.block_size = 512;
  o.root = 4;
  o.method = DASH_METHOD_NEWTON_DB;
  o.precision = DASH_PRECISION_FP32;
  o.shift = 1e-3;
  o.gemm = 4096;
  o.gemms = 4;
  o.tf32 = 1;
  o.steps = 200;
  o.warmup = 20;
  o.pairs = 2;
  o.every = 1;
  o.run_ahead = 2;
  o.seed = 1;
  if (parse_options(argc, argv, &o) < 0)
    return EXIT_USAGE;

  memset(&bn, 0, sizeof(bn));
  bn.o = &o;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    fprintf(stderr, "dash-overlap: no CUDA device (cudaGetDeviceCount: %s)\n",
            e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return EXIT_UNAVAILABLE;
  }
  if (o.device >= count) {
    fprintf(stderr, "dash-overlap: no CUDA device %d: this machine has %d\n",
            o.device, count);
    return EXIT_UNAVAILABLE;
  }
  if ((e = cudaGetDeviceProperties(&prop, o.device)) != cudaSuccess) {
    cuda_fail("cudaGetDeviceProperties", e);
    return EXIT_FAILED;
  }
  fprintf(stderr,
          "dash-overlap: device %d (%s); stack %ldx%ld root %ld %s %s; "
          "trainer %ld GEMMs of %ld^3 in %s per step\n",
          o.device, prop.name, o.blocks, o.block_size, o.root,
          dash_method_name(o.method), dash_precision_name(o.precision), o.gemms,
          o.gemm, o.tf32 ? "tf32" : "fp32");

  if (setup_gpu(&bn) < 0)
    goto out;
  if ((rc = dash_connect(o.socket, &bn.client)) < 0) {
    dash_fail("cannot reach dashd (is it running? see --socket)", rc);
    goto out;
  }
  {
    dash_stack_options so = DASH_STACK_OPTIONS_INIT;
    so.num_blocks = bn.n;
    so.block_size = bn.b;
    so.root = (int)o.root;
    so.method = o.method;
    so.precision = o.precision;
    if ((rc = dash_stack_create_cuda(bn.client, &so, o.device, bn.stats,
                                     bn.results, &bn.stack)) < 0) {
      dash_fail(rc == DASH_E_UNSUPPORTED
                    ? "dash_stack_create_cuda (dashd computes on a GPU "
                      "that cannot reach this one?)"
                    : "dash_stack_create_cuda",
                rc);
      goto out;
    }
  }
  print_config(&bn, prop.name, count);
  if (run(&bn) == 0)
    status = 0;
out:
  teardown(&bn);
  return status;
}
