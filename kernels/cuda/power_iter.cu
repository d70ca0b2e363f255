/* Power iteration for λ_max of every block at once, in bf16 as DASH does
 * it: the products read half the bytes of fp32, and λ̂ only sets a scale
 * that the safety factor c already pads. */
#include "cuda.h"

/* ---------------------------------------------------------------- kernels */

/* splitmix64 of the block's seed and the element index: start vectors
 * that depend only on the seed and the block, never on the launch. */
__device__ inline float start_value(uint64_t seed, size_t block, size_t e) {
  uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (block + 1));
  z += 0x9e3779b97f4a7c15ull * (e + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (float)((double)(z >> 11) * 0x1.0p-52 - 1.0);
}

__global__ void pi_start_kernel(float *w, size_t len, uint64_t seed) {
  float *x = w + blockIdx.x * len;
  DASH_FOR_TILES_LEN(len) {
    x[e] = start_value(seed, blockIdx.x, e);
  }
}

/* One block of threads per matrix block: w += δ·v (after a product),
 * then v = w with unit columns, and its bf16 copy for the next product.
 * A zero column is left as it is (factor 1), as on the CPU. */
__global__ void pi_normalize_kernel(float *w, float *v, __nv_bfloat16 *vh,
                                    const float *delta, int b, int k,
                                    int damp) {
  __shared__ float scale[256];
  const size_t len = (size_t)b * k;
  float *x = w + blockIdx.x * len;
  float *y = v + blockIdx.x * len;
  __nv_bfloat16 *yh = vh + blockIdx.x * len;
  if (damp) {
    const float d = delta[blockIdx.x];
    for (size_t e = threadIdx.x; e < len; e += blockDim.x)
      x[e] += d * y[e];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  for (int j = warp; j < k; j += warps) {
    float s = 0.0f;
    for (int r = lane; r < b; r += 32) {
      float t = x[(size_t)r * k + j];
      s += t * t;
    }
    for (int o = 16; o > 0; o >>= 1)
      s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0)
      scale[j] = s > 0.0f ? rsqrtf(s) : 1.0f;
  }
  __syncthreads();
  for (size_t e = threadIdx.x; e < len; e += blockDim.x) {
    float t = x[e] * scale[e % k];
    y[e] = t;
    yh[e] = __float2bfloat16_rn(t);
  }
}

/* λ̂ = the largest Rayleigh quotient vᵀ(Mv) over the columns, at least 0:
 * each one is a lower bound of λ_max. */
__global__ void pi_rayleigh_kernel(const float *v, const float *w, int b, int k,
                                   float *lam) {
  __shared__ unsigned int best;
  const size_t len = (size_t)b * k;
  const float *x = v + blockIdx.x * len;
  const float *y = w + blockIdx.x * len;
  if (threadIdx.x == 0)
    best = 0u;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  for (int j = warp; j < k; j += warps) {
    float s = 0.0f;
    for (int r = lane; r < b; r += 32)
      s += x[(size_t)r * k + j] * y[(size_t)r * k + j];
    for (int o = 16; o > 0; o >>= 1)
      s += __shfl_down_sync(0xffffffffu, s, o);
    /* Positive floats order like their bits. */
    if (lane == 0 && s > 0.0f)
      atomicMax(&best, __float_as_uint(s));
  }
  __syncthreads();
  if (threadIdx.x == 0)
    lam[blockIdx.x] = __uint_as_float(best);
}

/* -------------------------------------------------------------- launchers */

int dash__cuda_power_iter(struct dash__cuda_plan *cp) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const int b = (int)cp->b, k = cp->k;
  const size_t n = cp->n, len = cp->b * (size_t)k;
  const long long nn = (long long)cp->b * (long long)cp->b;
  const unsigned threads = 256;

  pi_start_kernel<<<dash__grid(n, len), kDashThreads, 0, ctx->stream>>>(
      cp->pw, len, o->seed);
  DASH_CUDA_LAUNCHED();
  pi_normalize_kernel<<<(unsigned)n, threads, 0, ctx->stream>>>(
      cp->pw, cp->pv, cp->vh, cp->delta, b, k, 0);
  DASH_CUDA_LAUNCHED();
  for (int s = 0; s < o->power_steps; s++) {
    /* W = (M + εI)·V with bf16 operands and fp32 results; the damping δ·V
     * is added by the normalization. */
    rc = dash__cu_gemm(ctx, CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, b, k,
                       b, 1.0f, cp->mh, nn, cp->vh, (long long)len, 0.0f,
                       cp->pw, (long long)len, n);
    if (rc < 0)
      goto out;
    pi_normalize_kernel<<<(unsigned)n, threads, 0, ctx->stream>>>(
        cp->pw, cp->pv, cp->vh, cp->delta, b, k, 1);
    DASH_CUDA_LAUNCHED();
  }
  rc = dash__cu_gemm(ctx, CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, b, k, b,
                     1.0f, cp->mh, nn, cp->vh, (long long)len, 0.0f, cp->pw,
                     (long long)len, n);
  if (rc < 0)
    goto out;
  pi_rayleigh_kernel<<<(unsigned)n, threads, 0, ctx->stream>>>(cp->pv, cp->pw,
                                                               b, k, cp->lam);
  DASH_CUDA_LAUNCHED();
out:
  return rc;
}
