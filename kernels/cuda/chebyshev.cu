/* Chebyshev approximation of A^(-1/p) on every block at once, evaluated
 * with Clenshaw's recurrence: degree products and no convergence to wait
 * for, so no block ever leaves the batch early. */
#include <math.h>

#include "cuda.h"

/* ---------------------------------------------------------------- kernels */

/* S = (2/s)·A − I maps the spectrum [0, s] onto [−1, 1]; b_d = c_d·I and
 * b_{d+1} = 0 start the recurrence. */
template <typename T>
__global__ void cheb_start_kernel(const float *in, const int *slot_block, int b,
                                  const float *inv_s, const float *coef,
                                  size_t cstride, int degree, T *s, T *x,
                                  T *q) {
  const size_t nn = (size_t)b * b;
  const int i = slot_block[blockIdx.x];
  const float *a = in + (size_t)i * nn;
  const float two_over_s = 2.0f * inv_s[i];
  const float top = coef[(size_t)i * cstride + degree];
  T *ss = s + blockIdx.x * nn, *xs = x + blockIdx.x * nn;
  T *qs = q + blockIdx.x * nn;
  DASH_FOR_TILES_LEN(nn) {
    bool d = dash__on_diagonal(e, b);
    dash__store(ss + e, two_over_s * a[e] - (d ? 1.0f : 0.0f));
    dash__store(xs + e, d ? top : 0.0f);
    dash__store(qs + e, 0.0f);
  }
}

/* The degree-d interpolant of (u + e)^(-1/p) on [0, 1] at the Chebyshev
 * nodes of the first kind, as the CPU backend fits it, with e = ε/s of the
 * block: f(t) ≈ c₀/2 + Σ c_k T_k(t), t = 2u − 1. One thread per live
 * block, in double; coef[0] is stored halved, ready for the last step of
 * Clenshaw's recurrence. */
__global__ void cheb_fit_kernel(const int *slot_block, size_t slots,
                                const float *inv_s, double eps, int d, int p,
                                float *coef) {
  const double kPi = 3.14159265358979323846;
  size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= slots)
    return;
  const int i = slot_block[j];
  const double e = eps * (double)inv_s[i];
  const int n = d + 1;
  float *c = coef + (size_t)i * n;
  /* f at the nodes once (at most 201 values), then the cosine sums. */
  double f[201];
  for (int q = 0; q < n; q++) {
    double theta = kPi * (q + 0.5) / n;
    f[q] = pow(0.5 * (cos(theta) + 1.0) + e, -1.0 / p);
  }
  for (int k = 0; k <= d; k++) {
    double acc = 0.0;
    for (int q = 0; q < n; q++)
      acc += f[q] * cos(k * (kPi * (q + 0.5) / n));
    c[k] = (float)(2.0 * acc / n * (k == 0 ? 0.5 : 1.0));
  }
}

/* ---------------------------------------------------------------- drivers */

template <typename T>
static int cheb(struct dash__cuda_plan *cp, const float *in, float *out) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const int b = (int)cp->b, d = o->cheb_degree;
  const size_t n = cp->n, nn = cp->b * cp->b, cs = (size_t)d + 1;
  const long long s1 = (long long)nn;
  const cudaDataType ty = dash__cuda_type(cp->storage);
  T *s = (T *)cp->w, *x = (T *)cp->w + n * nn, *q = (T *)cp->t;
  size_t a = dash__cuda_active_slots(cp), emits = 0;
  if (a == 0)
    return 0;
  if ((rc = dash__cuda_upload_slots(cp, a)) < 0)
    goto out;
  cheb_fit_kernel<<<(unsigned)((a + 127) / 128), 128, 0, ctx->stream>>>(
      cp->slot_block, a, cp->inv_s, o->eps, d, o->root, cp->coef);
  DASH_CUDA_LAUNCHED();
  cheb_start_kernel<T><<<dash__grid(a, nn), kDashThreads, 0, ctx->stream>>>(
      in, cp->slot_block, b, cp->inv_s, cp->coef, cs, d, s, x, q);
  DASH_CUDA_LAUNCHED();
  /* b_k = c_k·I + 2·S·b_{k+1} − b_{k+2}, with x = b_{k+1}, q = b_{k+2}. */
  for (int k = d - 1; k >= 1; k--) {
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 2.0f, s, s1, x,
                            s1, -1.0f, q, s1, a)) < 0)
      goto out;
    if ((rc = dash__cu_add_identity<T>(ctx->stream, q, a, nn, b, cp->slot_block,
                                       cp->coef + k, cs)) < 0)
      goto out;
    dash__swap(&x, &q);
  }
  /* f = c₀/2·I + S·b₁ − b₂. */
  if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, s, s1, x, s1,
                          -1.0f, q, s1, a)) < 0)
    goto out;
  if ((rc = dash__cu_add_identity<T>(ctx->stream, q, a, nn, b, cp->slot_block,
                                     cp->coef, cs)) < 0)
    goto out;
  for (size_t j = 0; j < a; j++) {
    int i = cp->h_slot_block[j];
    dash__cuda_add_move(cp->h_moves, &emits, j, i, 0,
                        cp->h_scale[n + (size_t)i]);
    cp->h_leave[j] = 1;
    cp->blk[i].active = 0;
    cp->blk[i].written = 1;
    cp->blk[i].converged = 1;
  }
  {
    T *bufs[1] = {q};
    rc = dash__cuda_retire<T>(cp, &a, emits, q, nn, out, bufs, 1, nn);
  }
out:
  return rc;
}

int dash__cuda_chebyshev(struct dash__cuda_plan *cp, const float *in,
                         float *out) {
  switch (cp->storage) {
    case DASH_CUDA_BF16:
      return cheb<__nv_bfloat16>(cp, in, out);
    case DASH_CUDA_F16:
      return cheb<__half>(cp, in, out);
    default:
      return cheb<float>(cp, in, out);
  }
}
