/* Inverse roots by batched symmetric eigendecomposition (cuSOLVER's
 * syevBatched) with Shampoo's eigenvalue heuristic: the method of choice
 * for accuracy, and the fallback of the iterations. As on the CPU, blocks
 * too ill-conditioned for an fp32 solve are solved again in fp64. */
#include <math.h>
#include <string.h>

#include "cuda.h"

/* Above this condition number (after the heuristic) an fp32 solve loses
 * too much at the bottom of the spectrum; see kernels/cpu/evd.c. */
static const double kF32MaxCond = 1e4;

/* Working space of one chunk, in bytes of fp64. */
static const size_t kChunkBytes = (size_t)512 << 20;

/* ---------------------------------------------------------------- kernels */

/* a[j] = in[slot_block[j]], widened to F. A symmetric row-major block is
 * its own column-major transpose, and its lower triangle (the one roots.h
 * trusts) is the column-major upper one. */
template <typename F>
__global__ void evd_gather_kernel(const float *in, const int *slot_block, int b,
                                  F *a) {
  const size_t nn = (size_t)b * b;
  const float *src = in + (size_t)slot_block[blockIdx.x] * nn;
  F *dst = a + blockIdx.x * nn;
  DASH_FOR_TILES_LEN(nn) {
    dst[e] = (F)src[e];
  }
}

/* Shampoo's heuristic on the ascending eigenvalues w: l = λ + shift + ε
 * with shift = −min(λ_min, 0), and the column factor l^(-1/(2p)) (0 for
 * l ≤ 0: a pseudo-inverse), so that X = (Q·D)(Q·D)ᵀ. The first thread of
 * each block also writes the largest l and the condition number. */
template <typename F>
__global__ void evd_factors_kernel(const F *w, F *d, int b, int p, double eps,
                                   double *top, double *cond) {
  const F *lam = w + (size_t)blockIdx.x * b;
  F *f = d + (size_t)blockIdx.x * b;
  const double shift = lam[0] < 0 ? -(double)lam[0] : 0.0;
  for (int k = blockIdx.y * blockDim.x + threadIdx.x; k < b;
       k += gridDim.y * blockDim.x) {
    double l = (double)lam[k] + shift + eps;
    f[k] = l > 0 ? (F)pow(l, -0.5 / p) : (F)0;
  }
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    double lo = (double)lam[0] + shift + eps;
    double hi = (double)lam[b - 1] + shift + eps;
    top[blockIdx.x] = hi;
    cond[blockIdx.x] = lo > 0 ? hi / lo : INFINITY;
  }
}

/* Column k of the column-major Q (contiguous) times d_k. */
template <typename F>
__global__ void evd_scale_kernel(F *q, const F *d, int b) {
  const size_t nn = (size_t)b * b;
  F *qs = q + blockIdx.x * nn;
  const F *ds = d + (size_t)blockIdx.x * b;
  DASH_FOR_TILES_LEN(nn) {
    qs[e] *= ds[e / b];
  }
}

/* ---------------------------------------------------------------- drivers */

static cudaDataType type_of(float *) {
  return CUDA_R_32F;
}
static cudaDataType type_of(double *) {
  return CUDA_R_64F;
}

int dash__cuda_evd_init(struct dash__cuda_plan *cp) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const size_t b = cp->b, nn = b * b;
  size_t chunk = kChunkBytes / (nn * sizeof(double));
  if (chunk < 1)
    chunk = 1;
  if (chunk > cp->n)
    chunk = cp->n;
  cp->evd_chunk = chunk;
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_a, chunk * nn * sizeof(double)));
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_x, chunk * nn * sizeof(double)));
  /* Eigenvalues, then the column factors. */
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_w, 2 * chunk * b * sizeof(double)));
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_info, chunk * sizeof(int)));
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_top, chunk * sizeof(double)));
  DASH_CUDA_TRY(cudaMalloc(&cp->ev_cond, chunk * sizeof(double)));
  {
    size_t dev32 = 0, host32 = 0, dev64 = 0, host64 = 0;
    DASH_CUDA_TRY(cusolverDnXsyevBatched_bufferSize(
        ctx->solver, ctx->solver_params, CUSOLVER_EIG_MODE_VECTOR,
        CUBLAS_FILL_MODE_UPPER, (int64_t)b, CUDA_R_32F, cp->ev_a, (int64_t)b,
        CUDA_R_32F, cp->ev_w, CUDA_R_32F, &dev32, &host32, (int64_t)chunk));
    DASH_CUDA_TRY(cusolverDnXsyevBatched_bufferSize(
        ctx->solver, ctx->solver_params, CUSOLVER_EIG_MODE_VECTOR,
        CUBLAS_FILL_MODE_UPPER, (int64_t)b, CUDA_R_64F, cp->ev_a, (int64_t)b,
        CUDA_R_64F, cp->ev_w, CUDA_R_64F, &dev64, &host64, (int64_t)chunk));
    cp->ev_work_bytes = dev32 > dev64 ? dev32 : dev64;
    cp->ev_hwork_bytes = host32 > host64 ? host32 : host64;
  }
  if (cp->ev_work_bytes > 0)
    DASH_CUDA_TRY(cudaMalloc(&cp->ev_work, cp->ev_work_bytes));
  if (cp->ev_hwork_bytes > 0) {
    cp->ev_hwork = malloc(cp->ev_hwork_bytes);
    if (cp->ev_hwork == NULL)
      return dash__fail(DASH_E_NOMEM, "EVD host workspace of %zu bytes",
                        cp->ev_hwork_bytes);
  }
  cp->h_ev_info = (int *)calloc(chunk, sizeof(int));
  cp->h_ev_top = (double *)calloc(chunk, sizeof(double));
  cp->h_ev_cond = (double *)calloc(chunk, sizeof(double));
  cp->ev_redo = (unsigned char *)calloc(chunk, 1);
  if (!cp->h_ev_info || !cp->h_ev_top || !cp->h_ev_cond || !cp->ev_redo)
    return dash__fail(DASH_E_NOMEM, "EVD host arrays");
out:
  return rc;
}

/* One pass over at most evd_chunk blocks, whose indices are the first m
 * entries of h_slot_block: decompose in F, rebuild, and emit the blocks
 * that need nothing more. A block the fp32 pass cannot serve gets
 * redo[j] = 1; one the fp64 pass cannot serve is left unwritten. */
template <typename F>
static int evd_pass(struct dash__cuda_plan *cp, size_t m, const float *in,
                    float *out, float *lam_max, unsigned char *redo) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const int b = (int)cp->b;
  const size_t nn = cp->b * cp->b;
  const int is64 = sizeof(F) == sizeof(double);
  F *a = (F *)cp->ev_a, *x = (F *)cp->ev_x;
  F *w = (F *)cp->ev_w, *d = (F *)cp->ev_w + cp->evd_chunk * cp->b;
  const cudaDataType ty = type_of(a);
  size_t emits = 0;
  unsigned tiles = (unsigned)((cp->b + kDashThreads - 1) / kDashThreads);
  if (tiles > 65535)
    tiles = 65535;

  if ((rc = dash__cuda_upload_slots(cp, m)) < 0)
    goto out;
  evd_gather_kernel<F><<<dash__grid(m, nn), kDashThreads, 0, ctx->stream>>>(
      in, cp->slot_block, b, a);
  DASH_CUDA_LAUNCHED();
  DASH_CUDA_TRY(cusolverDnXsyevBatched(
      ctx->solver, ctx->solver_params, CUSOLVER_EIG_MODE_VECTOR,
      CUBLAS_FILL_MODE_UPPER, (int64_t)b, ty, a, (int64_t)b, ty, w, ty,
      cp->ev_work, cp->ev_work_bytes, cp->ev_hwork, cp->ev_hwork_bytes,
      cp->ev_info, (int64_t)m));
  evd_factors_kernel<F>
      <<<dim3((unsigned)m, tiles, 1), kDashThreads, 0, ctx->stream>>>(
          w, d, b, o->root, o->eps, cp->ev_top, cp->ev_cond);
  DASH_CUDA_LAUNCHED();
  evd_scale_kernel<F>
      <<<dash__grid(m, nn), kDashThreads, 0, ctx->stream>>>(a, d, b);
  DASH_CUDA_LAUNCHED();
  if ((rc = dash__cu_gemm_nt(ctx, ty, b, a, x, m)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_ev_info, cp->ev_info, m * sizeof(int),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_ev_top, cp->ev_top, m * sizeof(double),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_ev_cond, cp->ev_cond, m * sizeof(double),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));

  for (size_t j = 0; j < m; j++) {
    int i = cp->h_slot_block[j];
    int ok = cp->h_ev_info[j] == 0 && isfinite(cp->h_ev_top[j]);
    if (!is64 && (!ok || cp->h_ev_cond[j] > kF32MaxCond)) {
      redo[j] = 1;
      continue;
    }
    if (!ok)
      continue;
    /* Remember the path for the next refresh of this block; a block whose
     * statistics became well-conditioned goes back to fp32. */
    cp->use_f64[i] = is64 && cp->h_ev_cond[j] > kF32MaxCond;
    lam_max[i] = (float)cp->h_ev_top[j];
    cp->blk[i].written = 1;
    dash__cuda_add_move(cp->h_moves, &emits, j, i, 0, 1.0f);
  }
  if (emits > 0) {
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->moves, cp->h_moves,
                                  emits * sizeof(*cp->moves),
                                  cudaMemcpyHostToDevice, ctx->stream));
    if ((rc = dash__cu_emit<F>(ctx->stream, x, nn, out, cp->moves, emits, b,
                               cp->bad_out)) < 0)
      goto out;
  }
out:
  return rc;
}

int dash__cuda_evd(struct dash__cuda_plan *cp, const float *in, float *out,
                   float *lam_max) {
  int rc = 0;
  const size_t n = cp->n, chunk = cp->evd_chunk;
  unsigned char *redo = cp->ev_redo;
  int *list = cp->ev_list;
  size_t count = 0;
  for (size_t i = 0; i < n; i++)
    if (cp->blk[i].evd)
      list[count++] = (int)i;
  /* Blocks that needed fp64 last time go there at once; the rest try
   * fp32 first. */
  for (int wide = 0; wide <= 1; wide++) {
    size_t done = 0;
    while (done < count) {
      size_t m = 0;
      while (done < count && m < chunk) {
        int i = list[done++];
        if ((cp->use_f64[i] != 0) == (wide != 0))
          cp->h_slot_block[m++] = i;
      }
      if (m == 0)
        continue;
      memset(redo, 0, chunk);
      rc = wide ? evd_pass<double>(cp, m, in, out, lam_max, redo)
                : evd_pass<float>(cp, m, in, out, lam_max, redo);
      if (rc < 0)
        goto out;
      if (!wide)
        for (size_t j = 0; j < m; j++)
          if (redo[j])
            cp->use_f64[cp->h_slot_block[j]] = 1;
    }
  }
out:
  return rc;
}
