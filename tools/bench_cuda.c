/* dash-bench's CUDA runtime and cuBLAS calls (bench_cuda.h). Built into
 * the CUDA plugin (libdash_cuda.so), never into dash-bench, which reaches
 * them through the plugin (bench_cuda_client.c) and so runs without the
 * CUDA libraries. Every call is checked; a failure leaves one line in
 * `err` and a dash_status. */
#include "bench_cuda.h"

#include <stdarg.h>
#include <stdio.h>

static char err[512];

const char *dash__bench_cuda_error(void) {
  return err;
}

static int fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, sizeof(err), fmt, ap);
  va_end(ap);
  return status;
}

#ifdef DASH_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Least work of one timed round of the roofline: small stacks repeat the
 * batched product back to back, so that the events' resolution (about
 * 0.5 us) and one launch's latency stay small beside the round (2e10 flops
 * take about 20 us at the bf16 peak of an H100, 0.4 ms at its fp32 rate).
 * Tiny stacks are launch-bound whatever is done, so the repeats stop at
 * ROOFLINE_MAX_PASSES. */
#define ROOFLINE_ROUND_FLOPS 2e10
#define ROOFLINE_MAX_PASSES 1000
/* A bound on the rounds, whatever the clock says. */
#define ROOFLINE_MAX_ROUNDS 100000
/* Host staging for filling the roofline's operands, in elements. */
#define FILL_CHUNK ((size_t)1 << 22)

/* "24.0 KiB", "965.0 MiB", "2.8 GiB": a size for a message. */
static const char *size_text(char *buf, size_t len, size_t bytes) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    u++;
  }
  snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

/* Records a failed CUDA runtime call: "what: message (cudaErrorName)". */
static int cuda_fail(cudaError_t e, const char *what) {
  int status = e == cudaErrorMemoryAllocation ? DASH_E_NOMEM
               : e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver
                   ? DASH_E_NO_DEVICE
                   : DASH_E_CUDA;
  fail(status, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
  /* Clears the error unless it is sticky, so that cleanup calls work. */
  (void)cudaGetLastError();
  return status;
}

static int cublas_fail(cublasStatus_t s, const char *what) {
  return fail(s == CUBLAS_STATUS_ALLOC_FAILED ? DASH_E_NOMEM : DASH_E_CUDA,
              "%s: %s (%s)", what, cublasGetStatusString(s),
              cublasGetStatusName(s));
}

/* Both jump to the function's one cleanup label with rc set. */
#define TRY_CUDA(call, what)      \
  do {                            \
    cudaError_t e_ = (call);      \
    if (e_ != cudaSuccess) {      \
      rc = cuda_fail(e_, (what)); \
      goto out;                   \
    }                             \
  } while (0)
#define TRY_CUBLAS(call, what)         \
  do {                                 \
    cublasStatus_t s_ = (call);        \
    if (s_ != CUBLAS_STATUS_SUCCESS) { \
      rc = cublas_fail(s_, (what));    \
      goto out;                        \
    }                                  \
  } while (0)

int dash__bench_cuda_device(char *name, size_t name_len, char *desc,
                            size_t desc_len) {
  struct cudaDeviceProp prop;
  int dev = 0, rc = 0;

  TRY_CUDA(cudaGetDevice(&dev), "cudaGetDevice");
  TRY_CUDA(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  prop.name[sizeof(prop.name) - 1] = '\0';
  if (name != NULL && name_len > 0)
    snprintf(name, name_len, "%s", prop.name);
  if (desc != NULL && desc_len > 0)
    snprintf(desc, desc_len, "%s (device %d, sm_%d%d, %d SMs, %.1f GiB)",
             prop.name, dev, prop.major, prop.minor, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
out:
  return rc;
}

int dash__bench_cuda_alloc(void **dev, size_t bytes) {
  char what[96], size[32];
  void *p = NULL;
  int rc = 0;

  *dev = NULL;
  snprintf(what, sizeof(what), "cudaMalloc of %s",
           size_text(size, sizeof(size), bytes));
  TRY_CUDA(cudaMalloc(&p, bytes), what);
  TRY_CUDA(cudaMemset(p, 0, bytes), "cudaMemset");
  TRY_CUDA(cudaDeviceSynchronize(), "cudaDeviceSynchronize after cudaMemset");
  *dev = p;
  p = NULL;
out:
  if (p != NULL)
    (void)cudaFree(p);
  return rc;
}

void dash__bench_cuda_free(void *dev) {
  /* Nothing useful is left to do with a failure to free. */
  if (dev != NULL)
    (void)cudaFree(dev);
}

int dash__bench_cuda_upload(void *dev, const void *host, size_t bytes) {
  char what[96], size[32];
  int rc = 0;

  snprintf(what, sizeof(what), "cudaMemcpy of %s to the device",
           size_text(size, sizeof(size), bytes));
  TRY_CUDA(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice), what);
  /* From pageable memory the copy may still be in flight on return. */
  TRY_CUDA(cudaDeviceSynchronize(), what);
out:
  return rc;
}

int dash__bench_cuda_download(void *host, const void *dev, size_t bytes) {
  char what[96], size[32];
  int rc = 0;

  snprintf(what, sizeof(what), "cudaMemcpy of %s to the host",
           size_text(size, sizeof(size), bytes));
  TRY_CUDA(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  TRY_CUDA(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), what);
out:
  return rc;
}

int dash__bench_cuda_sync(void) {
  int rc = 0;
  TRY_CUDA(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
out:
  return rc;
}

/* fp32 to bf16 or fp16 by truncation, for the roofline's operands only:
 * they lie in [0.5, 1.5), normal in every format, so neither rounding nor
 * the exponent's range needs care. */
static uint16_t to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  return (uint16_t)(u >> 16);
}

static uint16_t to_fp16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  int e = (int)((u >> 23) & 0xff) - 127 + 15;
  return (uint16_t)(((u >> 16) & 0x8000) | ((uint32_t)e << 10) |
                    ((u >> 13) & 0x3ff));
}

/* Fills `count` elements of `elem` bytes at dev with values in [0.5, 1.5)
 * in the format of `type`, through one host chunk copied over and over. */
static int fill_operands(void *dev, size_t count, size_t elem,
                         cudaDataType type) {
  size_t chunk = count < FILL_CHUNK ? count : FILL_CHUNK;
  unsigned char *host = malloc(chunk * elem);
  int rc = 0;

  if (host == NULL) {
    rc = fail(DASH_E_NOMEM, "out of host memory for the roofline's operands");
    goto out;
  }
  for (size_t i = 0; i < chunk; i++) {
    float v = 0.5f + (float)(i % 1021) / 1021.0f;
    uint16_t h;
    if (type == CUDA_R_32F) {
      memcpy(host + i * elem, &v, sizeof(v));
      continue;
    }
    h = type == CUDA_R_16BF ? to_bf16(v) : to_fp16(v);
    memcpy(host + i * elem, &h, sizeof(h));
  }
  for (size_t done = 0; done < count; done += chunk) {
    size_t now = count - done < chunk ? count - done : chunk;
    TRY_CUDA(cudaMemcpy((unsigned char *)dev + done * elem, host, now * elem,
                        cudaMemcpyHostToDevice),
             "cudaMemcpy of the roofline's operands");
  }
  TRY_CUDA(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the fill");
out:
  free(host);
  return rc;
}

int dash__bench_cuda_roofline(size_t n, size_t b, dash_precision precision,
                              int rounds, double min_ms, double *gflops) {
  cudaDataType type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  size_t elem = sizeof(float);
  cublasHandle_t handle = NULL;
  cudaEvent_t start = NULL, stop = NULL;
  void *ab = NULL, *c = NULL;
  /* alpha and beta are in the compute type's scale type: fp32 for every
   * CUBLAS_COMPUTE_32F variant. */
  const float alpha = 1.0f, beta = 0.0f;
  double call_flops, inner, best = INFINITY, spent = 0.0;
  size_t total;
  long long stride;
  int ib, batch, passes;
  char what[160], size[32];
  int rc = 0;

  *gflops = 0.0;
  switch (precision) {
    case DASH_PRECISION_FP32:
      break;
    case DASH_PRECISION_TF32:
      compute = CUBLAS_COMPUTE_32F_FAST_TF32;
      break;
    case DASH_PRECISION_BF16:
      type = CUDA_R_16BF;
      elem = 2;
      break;
    case DASH_PRECISION_FP16:
      type = CUDA_R_16F;
      elem = 2;
      break;
    default:
      rc = fail(DASH_E_INVALID, "roofline: unknown precision %d",
                (int)precision);
      goto out;
  }
  /* dash-bench's shape limits keep both far inside an int and n·b·b
   * elements far inside a size_t; checked all the same. */
  if (n == 0 || b == 0 || n > INT_MAX || b > INT_MAX ||
      b > SIZE_MAX / b / n / elem / 3) {
    rc =
        fail(DASH_E_INVALID, "roofline: a %zux%zu stack is out of range", n, b);
    goto out;
  }
  ib = (int)b;
  batch = (int)n;
  stride = (long long)(b * b);
  total = n * b * b;
  call_flops = 2.0 * (double)b * (double)b * (double)b * (double)n;
  inner = ceil(ROOFLINE_ROUND_FLOPS / call_flops);
  passes = inner > ROOFLINE_MAX_PASSES ? ROOFLINE_MAX_PASSES
           : inner > 1.0               ? (int)inner
                                       : 1;

  snprintf(what, sizeof(what), "cudaMalloc of %s for the roofline",
           size_text(size, sizeof(size), 3 * total * elem));
  /* A and B are one allocation: B starts where A's n blocks end. */
  TRY_CUDA(cudaMalloc(&ab, 2 * total * elem), what);
  TRY_CUDA(cudaMalloc(&c, total * elem), what);
  if ((rc = fill_operands(ab, 2 * total, elem, type)) < 0)
    goto out;
  TRY_CUBLAS(cublasCreate(&handle), "cublasCreate");
  TRY_CUDA(cudaEventCreate(&start), "cudaEventCreate");
  TRY_CUDA(cudaEventCreate(&stop), "cudaEventCreate");
  /* The plugin has no roots.c, so no dash_precision_name(). */
  static const char *const names[] = {"fp32", "tf32", "bf16", "fp16"};
  snprintf(what, sizeof(what),
           "cublasGemmStridedBatchedEx (%s, %zu products of %zux%zu)",
           names[(unsigned)precision & 3u], n, b, b);
  /* Square products with every leading dimension b: the same work in
   * cuBLAS's column-major view as in our row-major one. Round 0 warms up
   * (cuBLAS picks its kernel, the clocks rise) and is not counted. */
  for (int r = 0; r < ROOFLINE_MAX_ROUNDS && (r <= rounds || spent < min_ms);
       r++) {
    float ms = 0.0f;
    TRY_CUDA(cudaEventRecord(start, NULL), "cudaEventRecord");
    /* Batches of at most 65535, as the library issues them. */
    for (int p = 0; p < passes; p++)
      for (int done = 0; done < batch; done += 65535) {
        int count = batch - done < 65535 ? batch - done : 65535;
        size_t off = (size_t)done * (size_t)stride * elem;
        TRY_CUBLAS(cublasGemmStridedBatchedEx(
                       handle, CUBLAS_OP_N, CUBLAS_OP_N, ib, ib, ib, &alpha,
                       (unsigned char *)ab + off, type, ib, stride,
                       (unsigned char *)ab + total * elem + off, type, ib,
                       stride, &beta, (unsigned char *)c + off, type, ib,
                       stride, count, compute, CUBLAS_GEMM_DEFAULT),
                   what);
      }
    TRY_CUDA(cudaEventRecord(stop, NULL), "cudaEventRecord");
    TRY_CUDA(cudaEventSynchronize(stop), what);
    TRY_CUDA(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (r > 0 && ms > 0.0f && ms < best)
      best = ms;
    spent += ms;
  }
  if (!(best < INFINITY)) {
    rc = fail(DASH_E_CUDA, "%s: no round took measurable time", what);
    goto out;
  }
  *gflops = call_flops * (double)passes / (best * 1e6);
out:
  if (start != NULL)
    (void)cudaEventDestroy(start);
  if (stop != NULL)
    (void)cudaEventDestroy(stop);
  if (handle != NULL)
    (void)cublasDestroy(handle);
  (void)cudaFree(ab);
  (void)cudaFree(c);
  return rc;
}

#endif
