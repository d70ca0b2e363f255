/* Elementwise and per-block reduction kernels shared by the methods:
 * identity, residuals, diagonal shifts, copies between slots, and the
 * input statistics. Kernels first, launchers after. */
#include <math.h>

#include "cuda.h"

/* ---------------------------------------------------------------- kernels */

template <typename T>
__global__ void set_identity_kernel(T *m, size_t stride, int b, float c) {
  T *x = m + blockIdx.x * stride;
  const size_t nn = (size_t)b * b;
  DASH_FOR_TILES_LEN(nn) {
    dash__store(x + e, dash__on_diagonal(e, b) ? c : 0.0f);
  }
}

template <typename T>
__global__ void residual_fro_kernel(const T *m, size_t stride, int b,
                                    double *acc) {
  const T *x = m + blockIdx.x * stride;
  const size_t nn = (size_t)b * b;
  for (size_t tile = blockIdx.y; tile * kDashTile < nn; tile += gridDim.y) {
    float sum = 0.0f;
    size_t end = min((tile + 1) * kDashTile, nn);
    for (size_t e = tile * kDashTile + threadIdx.x; e < end;
         e += kDashThreads) {
      float d = (dash__on_diagonal(e, b) ? 1.0f : 0.0f) - dash__load(x + e);
      sum += d * d;
    }
    sum = dash__block_sum(sum);
    if (threadIdx.x == 0)
      atomicAdd(&acc[blockIdx.x], (double)sum);
    __syncthreads();
  }
}

template <typename T>
__global__ void residual_max_kernel(const T *m, size_t stride, int b,
                                    unsigned int *acc) {
  const T *x = m + blockIdx.x * stride;
  const size_t nn = (size_t)b * b;
  float worst = 0.0f;
  DASH_FOR_TILES_LEN(nn) {
    float d =
        fabsf(dash__load(x + e) - (dash__on_diagonal(e, b) ? 1.0f : 0.0f));
    /* NaN becomes +inf so that the maximum keeps it: non-negative floats
     * (+inf included) order like their bit patterns. */
    if (isnan(d))
      d = INFINITY;
    worst = fmaxf(worst, d);
  }
  for (int o = 16; o > 0; o >>= 1)
    worst = fmaxf(worst, __shfl_down_sync(0xffffffffu, worst, o));
  if ((threadIdx.x & 31) == 0 && worst > 0.0f)
    atomicMax(&acc[blockIdx.x], __float_as_uint(worst));
}

template <typename T>
__global__ void add_identity_kernel(T *m, size_t stride, int b,
                                    const int *slot_block, const float *coef,
                                    size_t cstride) {
  T *x = m + blockIdx.x * stride;
  const float c = coef[(size_t)slot_block[blockIdx.x] * cstride];
  for (size_t r = (size_t)blockIdx.y * kDashThreads + threadIdx.x;
       r < (size_t)b; r += (size_t)gridDim.y * kDashThreads) {
    T *d = x + r * ((size_t)b + 1);
    dash__store(d, dash__load(d) + c);
  }
}

template <typename T>
__global__ void emit_kernel(const T *src, size_t stride, float *out,
                            const struct dash__cuda_move *moves, int b,
                            int *bad) {
  const struct dash__cuda_move mv = moves[blockIdx.x];
  const size_t nn = (size_t)b * b;
  const T *from = src + (size_t)mv.src * stride + (mv.half ? nn : 0);
  float *to = out + (size_t)mv.dst * nn;
  bool finite = true;
  DASH_FOR_TILES_LEN(nn) {
    float v = dash__load(from + e) * mv.scale;
    finite &= isfinite(v);
    to[e] = v;
  }
  /* Every writer stores the same 1, so the race is benign. */
  if (!finite && bad != NULL)
    bad[mv.dst] = 1;
}

template <typename T>
__global__ void move_slots_kernel(T *buf, size_t stride,
                                  const struct dash__cuda_move *moves) {
  const struct dash__cuda_move mv = moves[blockIdx.x];
  const T *from = buf + (size_t)mv.src * stride;
  T *to = buf + (size_t)mv.dst * stride;
  DASH_FOR_TILES_LEN(stride) {
    to[e] = from[e];
  }
}

/* Sums of squares in double: fp32 would overflow for entries beyond
 * about 1e19, where the CPU backend (which sums in double) still gives a
 * finite scale. */
__global__ void stats_kernel(const float *in, int b, float eps, double *sumsq,
                             double *trace, int *nonfinite, __nv_bfloat16 *mh) {
  const size_t nn = (size_t)b * b;
  const float *a = in + blockIdx.x * nn;
  __nv_bfloat16 *h = mh ? mh + blockIdx.x * nn : NULL;
  for (size_t tile = blockIdx.y; tile * kDashTile < nn; tile += gridDim.y) {
    double sq = 0.0, tr = 0.0;
    bool finite = true;
    size_t end = min((tile + 1) * kDashTile, nn);
    for (size_t e = tile * kDashTile + threadIdx.x; e < end;
         e += kDashThreads) {
      float v = a[e];
      bool diag = dash__on_diagonal(e, b);
      finite &= isfinite(v);
      sq += (double)v * v;
      if (diag)
        tr += v;
      if (h != NULL)
        h[e] = __float2bfloat16_rn(diag ? v + eps : v);
    }
    if (!finite)
      nonfinite[blockIdx.x] = 1;
    sq = dash__block_sum(sq);
    __syncthreads();
    tr = dash__block_sum(tr);
    if (threadIdx.x == 0) {
      atomicAdd(&sumsq[blockIdx.x], sq);
      atomicAdd(&trace[blockIdx.x], tr);
    }
    __syncthreads();
  }
}

/* -------------------------------------------------------------- launchers */

template <typename T>
int dash__cu_set_identity(cudaStream_t s, T *m, size_t slots, size_t stride,
                          int b, float c) {
  int rc = 0;
  if (slots == 0)
    return 0;
  set_identity_kernel<T>
      <<<dash__grid(slots, (size_t)b * b), kDashThreads, 0, s>>>(m, stride, b,
                                                                 c);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

template <typename T>
int dash__cu_residual_fro(cudaStream_t s, const T *m, size_t slots,
                          size_t stride, int b, double *acc) {
  int rc = 0;
  if (slots == 0)
    return 0;
  residual_fro_kernel<T>
      <<<dash__grid(slots, (size_t)b * b), kDashThreads, 0, s>>>(m, stride, b,
                                                                 acc);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

template <typename T>
int dash__cu_residual_max(cudaStream_t s, const T *m, size_t slots,
                          size_t stride, int b, unsigned int *acc) {
  int rc = 0;
  if (slots == 0)
    return 0;
  residual_max_kernel<T>
      <<<dash__grid(slots, (size_t)b * b), kDashThreads, 0, s>>>(m, stride, b,
                                                                 acc);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

template <typename T>
int dash__cu_add_identity(cudaStream_t s, T *m, size_t slots, size_t stride,
                          int b, const int *slot_block, const float *coef,
                          size_t cstride) {
  int rc = 0;
  if (slots == 0)
    return 0;
  size_t tiles = ((size_t)b + kDashThreads - 1) / kDashThreads;
  dim3 grid((unsigned)slots, (unsigned)(tiles > 65535 ? 65535 : tiles), 1);
  add_identity_kernel<T>
      <<<grid, kDashThreads, 0, s>>>(m, stride, b, slot_block, coef, cstride);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

template <typename T>
int dash__cu_emit(cudaStream_t s, const T *src, size_t stride, float *out,
                  const struct dash__cuda_move *moves, size_t count, int b,
                  int *bad) {
  int rc = 0;
  if (count == 0)
    return 0;
  emit_kernel<T><<<dash__grid(count, (size_t)b * b), kDashThreads, 0, s>>>(
      src, stride, out, moves, b, bad);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

template <typename T>
int dash__cu_move_slots(cudaStream_t s, T *buf, size_t stride,
                        const struct dash__cuda_move *moves, size_t count) {
  int rc = 0;
  if (count == 0)
    return 0;
  move_slots_kernel<T>
      <<<dash__grid(count, stride), kDashThreads, 0, s>>>(buf, stride, moves);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

int dash__cu_stats(cudaStream_t s, const float *in, size_t n, int b, double eps,
                   double *sumsq, double *trace, int *nonfinite,
                   __nv_bfloat16 *mh) {
  int rc = 0;
  stats_kernel<<<dash__grid(n, (size_t)b * b), kDashThreads, 0, s>>>(
      in, b, (float)eps, sumsq, trace, nonfinite, mh);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}

/* The storage types every launcher is used with. */
#define DASH_INSTANTIATE(T)                                                  \
  template int dash__cu_set_identity<T>(cudaStream_t, T *, size_t, size_t,   \
                                        int, float);                         \
  template int dash__cu_residual_fro<T>(cudaStream_t, const T *, size_t,     \
                                        size_t, int, double *);              \
  template int dash__cu_residual_max<T>(cudaStream_t, const T *, size_t,     \
                                        size_t, int, unsigned int *);        \
  template int dash__cu_add_identity<T>(cudaStream_t, T *, size_t, size_t,   \
                                        int, const int *, const float *,     \
                                        size_t);                             \
  template int dash__cu_emit<T>(cudaStream_t, const T *, size_t, float *,    \
                                const struct dash__cuda_move *, size_t, int, \
                                int *);                                      \
  template int dash__cu_move_slots<T>(cudaStream_t, T *, size_t,             \
                                      const struct dash__cuda_move *, size_t);
DASH_INSTANTIATE(float)
DASH_INSTANTIATE(double)
DASH_INSTANTIATE(__nv_bfloat16)
DASH_INSTANTIATE(__half)
