/* Coupled Newton as Distributed Shampoo computes it, on every live block
 * at once: the baseline NewtonDB is measured against. */
#include <math.h>
#include <string.h>

#include "cuda.h"

/* Steps between convergence checks (see newton_db.cu). */
static const int kCheckEvery = 2;

/* ---------------------------------------------------------------- kernels */

/* M₀ = z·(A + εI), X₀ = z^(1/p)·I, and acc[slot] = max |M₀ − I|. */
template <typename T>
__global__ void cn_start_kernel(const float *in, const int *slot_block, int b,
                                float eps, const float *z, int p, T *x, T *m,
                                unsigned int *acc) {
  const size_t nn = (size_t)b * b;
  const int i = slot_block[blockIdx.x];
  const float *a = in + (size_t)i * nn;
  const float zi = z[i], xi = powf(zi, 1.0f / (float)p);
  T *xs = x + blockIdx.x * nn, *ms = m + blockIdx.x * nn;
  float worst = 0.0f;
  DASH_FOR_TILES_LEN(nn) {
    bool d = dash__on_diagonal(e, b);
    dash__store(ms + e, zi * (a[e] + (d ? eps : 0.0f)));
    dash__store(xs + e, d ? xi : 0.0f);
    float r = fabsf(dash__load(ms + e) - (d ? 1.0f : 0.0f));
    if (isnan(r))
      r = INFINITY;
    worst = fmaxf(worst, r);
  }
  for (int o = 16; o > 0; o >>= 1)
    worst = fmaxf(worst, __shfl_down_sync(0xffffffffu, worst, o));
  if ((threadIdx.x & 31) == 0 && worst > 0.0f)
    atomicMax(&acc[blockIdx.x], __float_as_uint(worst));
}

/* T = (1 − α)·I + α·M. */
template <typename T>
__global__ void cn_affine_kernel(const T *m, T *t, int b, float alpha) {
  const size_t nn = (size_t)b * b;
  const T *ms = m + blockIdx.x * nn;
  T *ts = t + blockIdx.x * nn;
  DASH_FOR_TILES_LEN(nn) {
    float v = alpha * dash__load(ms + e);
    dash__store(ts + e, dash__on_diagonal(e, b) ? v + (1.0f - alpha) : v);
  }
}

/* ---------------------------------------------------------------- drivers */

/* Reads max |M − I| of the live slots into the host mirror and waits. */
template <typename T>
static int measure(struct dash__cuda_plan *cp, const T *m, size_t a) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const size_t nn = cp->b * cp->b;
  DASH_CUDA_TRY(
      cudaMemsetAsync(cp->r_max, 0, a * sizeof(unsigned int), ctx->stream));
  if ((rc = dash__cu_residual_max<T>(ctx->stream, m, a, nn, (int)cp->b,
                                     cp->r_max)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_r_max, cp->r_max,
                                a * sizeof(unsigned int),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
out:
  return rc;
}

static float as_float(unsigned int bits) {
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

/* Marks the blocks whose residual ends them (all of them with `all`) and
 * queues their X for output. */
static size_t plan_exits(struct dash__cuda_plan *cp, size_t a, int steps,
                         int all) {
  const double tol = cp->plan->opts.tol;
  size_t emits = 0;
  memset(cp->h_leave, 0, a);
  for (size_t j = 0; j < a; j++) {
    int i = cp->h_slot_block[j];
    float r = as_float(cp->h_r_max[j]);
    int done = !isfinite(r) || (tol > 0.0 && r < tol);
    if (!done && !all)
      continue;
    struct dash__cuda_block *bk = &cp->blk[i];
    bk->steps = steps;
    bk->r_last = r;
    bk->converged = tol == 0.0 || r < tol;
    bk->active = 0;
    bk->written = 1;
    cp->h_leave[j] = 1;
    dash__cuda_add_move(cp->h_moves, &emits, j, i, 0, 1.0f);
  }
  return emits;
}

template <typename T>
static int cn(struct dash__cuda_plan *cp, const float *in, float *out) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const int b = (int)cp->b, p = o->root;
  const size_t n = cp->n, nn = cp->b * cp->b;
  const long long s1 = (long long)nn;
  const float alpha = -1.0f / (float)p;
  const cudaDataType ty = dash__cuda_type(cp->storage);
  /* Five B×B buffers per slot, carved out of the iteration buffers; the
   * pointers rotate as products land, Tm stays put. */
  T *x = (T *)cp->w, *m = (T *)cp->w + n * nn;
  T *tm = (T *)cp->t, *tp = (T *)cp->t + n * nn, *u = (T *)cp->e;
  size_t a = dash__cuda_active_slots(cp), emits;
  if (a == 0)
    return 0;
  if ((rc = dash__cuda_upload_slots(cp, a)) < 0)
    goto out;
  DASH_CUDA_TRY(
      cudaMemsetAsync(cp->r_max, 0, a * sizeof(unsigned int), ctx->stream));
  cn_start_kernel<T><<<dash__grid(a, nn), kDashThreads, 0, ctx->stream>>>(
      in, cp->slot_block, b, (float)o->eps, cp->z0, p, x, m, cp->r_max);
  DASH_CUDA_LAUNCHED();
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_r_max, cp->r_max,
                                a * sizeof(unsigned int),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  for (size_t j = 0; j < a; j++) {
    int i = cp->h_slot_block[j];
    cp->blk[i].r_first = cp->blk[i].r_last = as_float(cp->h_r_max[j]);
  }
  /* A block already within the tolerance takes no step, as on the CPU. */
  emits = plan_exits(cp, a, 0, 0);
  if (emits > 0) {
    T *bufs[2] = {x, m};
    if ((rc = dash__cuda_retire<T>(cp, &a, emits, x, nn, out, bufs, 2, nn)) < 0)
      goto out;
  }

  for (int k = 0; k < o->max_steps && a > 0; k++) {
    cn_affine_kernel<T>
        <<<dash__grid(a, nn), kDashThreads, 0, ctx->stream>>>(m, tm, b, alpha);
    DASH_CUDA_LAUNCHED();
    /* X ← X·T. */
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, x, s1, tm,
                            s1, 0.0f, u, s1, a)) < 0)
      goto out;
    dash__swap(&x, &u);
    /* M ← T^p·M, T^p by squaring. */
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, tm, s1, tm,
                            s1, 0.0f, tp, s1, a)) < 0)
      goto out;
    if (p == 4) {
      if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, tp, s1,
                              tp, s1, 0.0f, u, s1, a)) < 0)
        goto out;
      dash__swap(&tp, &u);
    }
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, tp, s1, m,
                            s1, 0.0f, u, s1, a)) < 0)
      goto out;
    dash__swap(&m, &u);
    const int last = k == o->max_steps - 1;
    if (!last && (o->tol == 0.0 || (k + 1) % kCheckEvery != 0))
      continue;
    if ((rc = measure<T>(cp, m, a)) < 0)
      goto out;
    emits = plan_exits(cp, a, k + 1, last);
    if (emits > 0) {
      T *bufs[2] = {x, m};
      if ((rc = dash__cuda_retire<T>(cp, &a, emits, x, nn, out, bufs, 2, nn)) <
          0)
        goto out;
    }
  }
out:
  return rc;
}

int dash__cuda_coupled_newton(struct dash__cuda_plan *cp, const float *in,
                              float *out) {
  switch (cp->storage) {
    case DASH_CUDA_BF16:
      return cn<__nv_bfloat16>(cp, in, out);
    case DASH_CUDA_F16:
      return cn<__half>(cp, in, out);
    default:
      return cn<float>(cp, in, out);
  }
}
