/* The CUDA backend's context: device discovery, handles, the plan's
 * stream, error mapping and the row-major batched GEMM every method uses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cuda.h"

/* Why the last cudaGetDeviceCount on this thread found no device: "" or
 * the runtime's reason (no driver, a driver older than this runtime). */
static __thread char t_no_device[160];

int dash__cuda_device_count(void) {
  int count = 0;
  /* No driver, no device or a broken install all mean "no CUDA here";
   * callers say why with no_device_reason(). */
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(t_no_device, sizeof(t_no_device), "%s (%s)", cudaGetErrorString(e),
             cudaGetErrorName(e));
    return 0;
  }
  t_no_device[0] = '\0';
  return count;
}

/* "no CUDA device is present", with the runtime's reason when it gave
 * one. */
static const char *no_device_reason(char *buf, size_t len) {
  if (t_no_device[0] != '\0')
    snprintf(buf, len, "no CUDA device is usable: %s", t_no_device);
  else
    snprintf(buf, len, "no CUDA device is present");
  return buf;
}

void dash__cuda_uuid_text(const cudaUUID_t *id, char *buf, size_t len) {
  const unsigned char *u = (const unsigned char *)id->bytes;
  snprintf(buf, len,
           "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x",
           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
           u[11], u[12], u[13], u[14], u[15]);
}

int dash__cuda_describe(char *buf, size_t len) {
  int device = 0;
  cudaDeviceProp prop;
  char why[224];
  if (dash__cuda_device_count() <= 0)
    return dash__fail(DASH_E_NO_DEVICE, "%s",
                      no_device_reason(why, sizeof(why)));
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return dash__fail(DASH_E_NO_DEVICE, "CUDA device %d does not answer",
                      device);
  }
  char uuid[64];
  dash__cuda_uuid_text(&prop.uuid, uuid, sizeof(uuid));
  snprintf(buf, len, "%s (%s)", prop.name, uuid);
  return 0;
}

int dash__cuda_select(const char *device) {
  int count, found = -1, matches = 0;
  char why[224];
  if (device == NULL || device[0] == '\0')
    return dash__fail(DASH_E_INVALID, "device name is empty");
  size_t len = strlen(device);
  int ordinal = strspn(device, "0123456789") == len && len <= 5;
  int uuid = strncmp(device, "GPU-", 4) == 0 && len >= 12 &&
             strspn(device + 4, "0123456789abcdefABCDEF-") == len - 4;
  if (!ordinal && !uuid)
    return dash__fail(DASH_E_INVALID,
                      "device '%s' is neither an ordinal nor GPU-UUID "
                      "(at least 8 characters after GPU-)",
                      device);
  count = dash__cuda_device_count();
  if (count <= 0)
    return dash__fail(DASH_E_NO_DEVICE, "device %s: %s", device,
                      no_device_reason(why, sizeof(why)));
  if (ordinal) {
    long n = strtol(device, NULL, 10);
    if (n >= count)
      return dash__fail(DASH_E_NO_DEVICE,
                        "device %ld: only %d CUDA device(s) are visible", n,
                        count);
    found = (int)n;
  } else {
    for (int i = 0; i < count; i++) {
      cudaDeviceProp prop;
      char text[64];
      if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
        (void)cudaGetLastError();
        continue;
      }
      dash__cuda_uuid_text(&prop.uuid, text, sizeof(text));
      if (strncasecmp(text, device, len) == 0) {
        found = i;
        matches++;
      }
    }
    if (matches > 1)
      return dash__fail(DASH_E_INVALID, "device %s names %d GPUs", device,
                        matches);
    if (found < 0)
      return dash__fail(DASH_E_NO_DEVICE, "no visible GPU has the UUID %s",
                        device);
  }
  cudaError_t e = cudaSetDevice(found);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return dash__fail(DASH_E_NO_DEVICE, "device %s: cudaSetDevice(%d): %s",
                      device, found, cudaGetErrorString(e));
  }
  return 0;
}

int dash__cuda_sticky(cudaError_t e) {
  /* The errors after which the context is corrupt: every later call in
   * the process fails with them (CUDA runtime documentation). */
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorContained:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorMpsClientTerminated:
    case cudaErrorExternalDevice:
      return 1;
    default:
      return 0;
  }
}

int dash__cuda_status(cudaError_t e, const char *expr, const char *file,
                      int line) {
  if (e == cudaSuccess)
    return 0;
  if (dash__cuda_sticky(e))
    return dash__fail(DASH_E_DEVICE_LOST, "%s failed at %s:%d: %s (%s)", expr,
                      file, line, cudaGetErrorName(e), cudaGetErrorString(e));
  /* A failed call leaves its error as the "last error"; clear it so the
   * next launch check does not report it again. Sticky errors stay. */
  (void)cudaGetLastError();
  int status = e == cudaErrorMemoryAllocation ? DASH_E_NOMEM : DASH_E_CUDA;
  return dash__fail(status, "%s failed at %s:%d: %s (%s)", expr, file, line,
                    cudaGetErrorName(e), cudaGetErrorString(e));
}

int dash__cuda_status(cublasStatus_t e, const char *expr, const char *file,
                      int line) {
  if (e == CUBLAS_STATUS_SUCCESS)
    return 0;
  int status = e == CUBLAS_STATUS_ALLOC_FAILED ? DASH_E_NOMEM : DASH_E_CUDA;
  return dash__fail(status, "%s failed at %s:%d: %s", expr, file, line,
                    cublasGetStatusName(e));
}

int dash__cuda_status(cusolverStatus_t e, const char *expr, const char *file,
                      int line) {
  if (e == CUSOLVER_STATUS_SUCCESS)
    return 0;
  int status = e == CUSOLVER_STATUS_ALLOC_FAILED ? DASH_E_NOMEM : DASH_E_CUDA;
  return dash__fail(status, "%s failed at %s:%d: cusolver status %d", expr,
                    file, line, (int)e);
}

/* cuBLAS's recommended workspace on Hopper; handing it over at creation
 * keeps cuBLAS from allocating on the first product. */
static const size_t kBlasWorkspace = (size_t)32 << 20;

int dash__cuda_ctx_init(struct dash__cuda_ctx *ctx, int priority) {
  int rc = 0, least = 0, greatest = 0;
  DASH_CUDA_TRY(cudaGetDevice(&ctx->device));
  /* Numerically lower is higher priority: `least` is the lowest. */
  DASH_CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  DASH_CUDA_TRY(cudaStreamCreateWithPriority(
      &ctx->stream, cudaStreamNonBlocking, priority ? greatest : least));
  DASH_CUDA_TRY(cudaEventCreateWithFlags(&ctx->check, cudaEventDisableTiming));
  DASH_CUDA_TRY(cudaEventCreateWithFlags(&ctx->caller, cudaEventDisableTiming));
  DASH_CUDA_TRY(cublasCreate(&ctx->blas));
  DASH_CUDA_TRY(cublasSetStream(ctx->blas, ctx->stream));
  DASH_CUDA_TRY(cudaMalloc(&ctx->blas_workspace, kBlasWorkspace));
  ctx->blas_workspace_bytes = kBlasWorkspace;
  DASH_CUDA_TRY(
      cublasSetWorkspace(ctx->blas, ctx->blas_workspace, kBlasWorkspace));
  DASH_CUDA_TRY(cusolverDnCreate(&ctx->solver));
  DASH_CUDA_TRY(cusolverDnSetStream(ctx->solver, ctx->stream));
  DASH_CUDA_TRY(cusolverDnCreateParams(&ctx->solver_params));
out:
  return rc;
}

void dash__cuda_ctx_free(struct dash__cuda_ctx *ctx) {
  /* Teardown cannot report anything useful; work still queued finishes
   * before the stream goes. */
  if (ctx->stream)
    (void)cudaStreamSynchronize(ctx->stream);
  if (ctx->solver_params)
    cusolverDnDestroyParams(ctx->solver_params);
  if (ctx->solver)
    cusolverDnDestroy(ctx->solver);
  if (ctx->blas)
    cublasDestroy(ctx->blas);
  cudaFree(ctx->blas_workspace);
  if (ctx->check)
    cudaEventDestroy(ctx->check);
  if (ctx->caller)
    cudaEventDestroy(ctx->caller);
  if (ctx->stream)
    cudaStreamDestroy(ctx->stream);
  (void)cudaGetLastError();
}

cudaDataType dash__cuda_type(enum dash__cuda_storage s) {
  switch (s) {
    case DASH_CUDA_BF16:
      return CUDA_R_16BF;
    case DASH_CUDA_F16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

static size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_16BF:
    case CUDA_R_16F:
      return 2;
    case CUDA_R_64F:
      return 8;
    default:
      return 4;
  }
}

/* cuBLAS takes the batch count as an int and some of its kernels put it
 * on a grid dimension; chunks of this many stay clear of both limits. */
static const size_t kMaxBatch = 65535;

int dash__cu_gemm(struct dash__cuda_ctx *ctx, cudaDataType ab, cudaDataType c,
                  cublasComputeType_t compute, int m, int n, int k, float alpha,
                  const void *a, long long sa, const void *b, long long sb,
                  float beta, void *cm, long long sc, size_t batch) {
  int rc = 0;
  const size_t ab_size = type_size(ab), c_size = type_size(c);
  for (size_t done = 0; done < batch; done += kMaxBatch) {
    size_t count = batch - done < kMaxBatch ? batch - done : kMaxBatch;
    const char *pa = (const char *)a + done * (size_t)sa * ab_size;
    const char *pb = (const char *)b + done * (size_t)sb * ab_size;
    char *pc = (char *)cm + done * (size_t)sc * c_size;
    /* Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ on the same memory:
     * cuBLAS's first operand is B (n×k column-major, ld n) and its
     * second is A (k×m column-major, ld k). */
    DASH_CUDA_TRY(cublasGemmStridedBatchedEx(
        ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, pb, ab, n, sb, pa,
        ab, k, sa, &beta, pc, c, n, sc, (int)count, compute,
        CUBLAS_GEMM_DEFAULT));
  }
out:
  return rc;
}

int dash__cu_gemm_nt(struct dash__cuda_ctx *ctx, cudaDataType type, int b,
                     const void *w, void *x, size_t batch) {
  int rc = 0;
  const int f64 = type == CUDA_R_64F;
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void *one = f64 ? (const void *)&one_d : (const void *)&one_f;
  const void *zero = f64 ? (const void *)&zero_d : (const void *)&zero_f;
  const cublasComputeType_t compute =
      f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
  const long long nn = (long long)b * b;
  const size_t bytes = (size_t)nn * type_size(type);
  for (size_t done = 0; done < batch; done += kMaxBatch) {
    size_t count = batch - done < kMaxBatch ? batch - done : kMaxBatch;
    const char *pw = (const char *)w + done * bytes;
    char *px = (char *)x + done * bytes;
    DASH_CUDA_TRY(cublasGemmStridedBatchedEx(
        ctx->blas, CUBLAS_OP_N, CUBLAS_OP_T, b, b, b, one, pw, type, b, nn, pw,
        type, b, nn, zero, px, type, b, nn, (int)count, compute,
        CUBLAS_GEMM_DEFAULT));
  }
out:
  return rc;
}
