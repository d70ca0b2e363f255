/* Newton–Denman–Beavers on every live block at once. Each slot holds the
 * pair [Y; Z] (2·B² elements), so that compaction moves one range per
 * block. E = 1.5·I − 0.5·Z·Y is formed in the product itself, with β = 1
 * over C = 1.5·I. The updates are Y ← Y·E and Z ← E·Z, two batched
 * products: the one-product form [Y; Z]·E would compute Z·E, equal in
 * exact arithmetic but unstable once κ > 9 (its linearization at the fixed
 * point has an eigenvalue (1 − √(λ_j/λ_i))/2 beyond 1 in size), where
 * E·Z's has eigenvalues 0 and 1. Blocks leave the batch at the checks that
 * find them converged, every kCheckEvery steps, so the host waits on the
 * device only there. Residuals are kept by slot, so a check moves as many
 * numbers as there are live blocks. */
#include <math.h>
#include <string.h>

#include "cuda.h"

/* Steps between convergence checks. A check costs a pass over E and one
 * wait for the device; a block converged just after a check runs at most
 * this many steps more, which quadratic convergence keeps converged. */
static const int kCheckEvery = 2;

/* ---------------------------------------------------------------- kernels */

/* The first step of a run, elementwise: Y₀ = (src + ε_d·I)·inv_s into the
 * top half of the slot in `cur`, and E₀ = 1.5·I − 0.5·Y₀ into the bottom
 * half of the slot in `nxt`, where it is Z₁ (Z₀ = I, so Z₁ = E₀ with no
 * product). acc[slot] gets ‖I − E₀‖_F². */
template <typename T>
__global__ void ndb_start_kernel(const float *src, const int *slot_block, int b,
                                 float eps_diag, const float *inv_s, T *cur,
                                 T *nxt, double *acc) {
  const size_t nn = (size_t)b * b;
  const int i = slot_block[blockIdx.x];
  const float *a = src + (size_t)i * nn;
  const float sc = inv_s != NULL ? inv_s[i] : 1.0f;
  T *y = cur + blockIdx.x * 2 * nn;
  T *z = nxt + blockIdx.x * 2 * nn + nn;
  for (size_t tile = blockIdx.y; tile * kDashTile < nn; tile += gridDim.y) {
    float sum = 0.0f;
    size_t end = min((tile + 1) * kDashTile, nn);
    for (size_t e = tile * kDashTile + threadIdx.x; e < end;
         e += kDashThreads) {
      bool d = dash__on_diagonal(e, b);
      dash__store(y + e, (a[e] + (d ? eps_diag : 0.0f)) * sc);
      /* E₀ from the stored Y₀, so that it is exactly what the product
       * sees. */
      float v = dash__load(y + e);
      float ev = (d ? 1.5f : 0.0f) - 0.5f * v;
      dash__store(z + e, ev);
      float r = (d ? 1.0f : 0.0f) - ev;
      sum += r * r;
    }
    sum = dash__block_sum(sum);
    if (threadIdx.x == 0)
      atomicAdd(&acc[blockIdx.x], (double)sum);
    __syncthreads();
  }
}

/* ---------------------------------------------------------------- drivers */

/* Where a block that leaves a run goes. Only the last run writes the root
 * (Z·s^(-1/p)). Between the two runs of p = 4, a block whose first run
 * went well parks its Y ≈ (M/s)^(1/2) in `out` for the second run; one
 * whose first run diverged writes what the CPU backend writes (its Z
 * scaled), and the verdict rejects it. */
static void plan_exit(struct dash__cuda_plan *cp, size_t slot, int block,
                      int last_run, size_t *emits) {
  struct dash__cuda_block *bk = &cp->blk[block];
  const double tol = cp->plan->opts.tol;
  bk->converged &= tol == 0.0 || bk->r_last < tol;
  int good = isfinite(bk->r_last) && bk->r_last <= bk->r_first;
  if (!last_run && good) {
    dash__cuda_add_move(cp->h_moves, emits, slot, block, 0, 1.0f);
  } else {
    dash__cuda_add_move(cp->h_moves, emits, slot, block, 1,
                        cp->h_scale[cp->n + (size_t)block]);
    bk->active = 0;
  }
  bk->written = 1;
  cp->h_leave[slot] = 1;
}

/* r_first of every live slot into its block's record; valid until the
 * first compaction, which only a check (after this) can make. */
static void read_first(struct dash__cuda_plan *cp, size_t a, int *done) {
  if (*done)
    return;
  for (size_t j = 0; j < a; j++)
    cp->blk[cp->h_slot_block[j]].r_first = (float)sqrt(cp->h_r_first[j]);
  *done = 1;
}

/* E = 1.5·I − 0.5·Z·Y for the first a slots; with `resid`, also queues
 * ‖I − E‖_F² per slot into h_r_cur and records the check event. */
template <typename T>
static int form_e(struct dash__cuda_plan *cp, const T *cur, T *e, size_t a,
                  int resid) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const int b = (int)cp->b;
  const size_t nn = cp->b * cp->b;
  const cudaDataType ty = dash__cuda_type(cp->storage);
  if ((rc = dash__cu_set_identity<T>(ctx->stream, e, a, nn, b, 1.5f)) < 0)
    goto out;
  if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, -0.5f, cur + nn,
                          2 * (long long)nn, cur, 2 * (long long)nn, 1.0f, e,
                          (long long)nn, a)) < 0)
    goto out;
  if (resid) {
    DASH_CUDA_TRY(
        cudaMemsetAsync(cp->r_cur, 0, a * sizeof(double), ctx->stream));
    if ((rc = dash__cu_residual_fro<T>(ctx->stream, e, a, nn, b, cp->r_cur)) <
        0)
      goto out;
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_r_cur, cp->r_cur, a * sizeof(double),
                                  cudaMemcpyDeviceToHost, ctx->stream));
    DASH_CUDA_TRY(cudaEventRecord(ctx->check, ctx->stream));
  }
out:
  return rc;
}

/* One NewtonDB run over the active blocks: from `in` (+εI, /s) for the
 * first run, from the parked square roots in `out` for the second. */
template <typename T>
static int ndb_run(struct dash__cuda_plan *cp, const float *src, int first_run,
                   int last_run, float *out) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const int b = (int)cp->b;
  const size_t nn = cp->b * cp->b;
  const long long s2 = 2 * (long long)nn, s1 = (long long)nn;
  const cudaDataType ty = dash__cuda_type(cp->storage);
  T *cur = (T *)cp->w, *nxt = (T *)cp->t, *e = (T *)cp->e;
  size_t a = dash__cuda_active_slots(cp), emits = 0;
  int steps, first_read = 0;
  if (a == 0)
    return 0;
  if ((rc = dash__cuda_upload_slots(cp, a)) < 0)
    goto out;
  DASH_CUDA_TRY(
      cudaMemsetAsync(cp->r_first, 0, a * sizeof(double), ctx->stream));
  ndb_start_kernel<T><<<dash__grid(a, nn), kDashThreads, 0, ctx->stream>>>(
      src, cp->slot_block, b, first_run ? (float)o->eps : 0.0f,
      first_run ? cp->inv_s : NULL, cur, nxt, cp->r_first);
  DASH_CUDA_LAUNCHED();
  /* Y₁ = Y₀·E₀, E₀ being Z₁ in the bottom half of nxt. */
  if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, cur, s2,
                          nxt + nn, s2, 0.0f, nxt, s2, a)) < 0)
    goto out;
  dash__swap(&cur, &nxt);
  steps = 1;
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_r_first, cp->r_first, a * sizeof(double),
                                cudaMemcpyDeviceToHost, ctx->stream));

  for (int k = 1; k < o->max_steps && a > 0; k++) {
    const int check = o->tol > 0.0 && k % kCheckEvery == 0;
    const int want = check || (k == o->max_steps - 1 && o->tol == 0.0);
    if ((rc = form_e<T>(cp, cur, e, a, want)) < 0)
      goto out;
    /* Y ← Y·E and Z ← E·Z, queued before the host waits, so the device
     * works on them while the host reads the residuals. */
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, cur, s2, e,
                            s1, 0.0f, nxt, s2, a)) < 0)
      goto out;
    if ((rc = dash__cu_gemm(ctx, ty, ty, cp->compute, b, b, b, 1.0f, e, s1,
                            cur + nn, s2, 0.0f, nxt + nn, s2, a)) < 0)
      goto out;
    dash__swap(&cur, &nxt);
    steps = k + 1;
    if (!check)
      continue;
    DASH_CUDA_TRY(cudaEventSynchronize(ctx->check));
    read_first(cp, a, &first_read);
    /* Converged blocks leave after the update that used their E, like
     * the CPU's; a non-finite residual ends a block at once. */
    emits = 0;
    memset(cp->h_leave, 0, a);
    for (size_t j = 0; j < a; j++) {
      float r = (float)sqrt(cp->h_r_cur[j]);
      if (isfinite(r) && r >= o->tol)
        continue;
      struct dash__cuda_block *bk = &cp->blk[cp->h_slot_block[j]];
      bk->steps += steps;
      bk->r_last = r;
      plan_exit(cp, j, cp->h_slot_block[j], last_run, &emits);
    }
    if (emits > 0) {
      T *bufs[1] = {cur};
      if ((rc = dash__cuda_retire<T>(cp, &a, emits, cur, 2 * nn, out, bufs, 1,
                                     2 * nn)) < 0)
        goto out;
    }
  }

  if (a > 0) {
    /* The step limit. With a tolerance, the residual of the returned
     * iterate is measured with one more product, as on the CPU; without
     * one, the last step's residual stands (the first's after one step). */
    if (o->tol > 0.0 && (rc = form_e<T>(cp, cur, e, a, 1)) < 0)
      goto out;
    DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    read_first(cp, a, &first_read);
    emits = 0;
    memset(cp->h_leave, 0, a);
    for (size_t j = 0; j < a; j++) {
      struct dash__cuda_block *bk = &cp->blk[cp->h_slot_block[j]];
      bk->steps += steps;
      bk->r_last = o->max_steps == 1 && o->tol == 0.0
                       ? bk->r_first
                       : (float)sqrt(cp->h_r_cur[j]);
      plan_exit(cp, j, cp->h_slot_block[j], last_run, &emits);
    }
    T *bufs[1] = {cur};
    if ((rc = dash__cuda_retire<T>(cp, &a, emits, cur, 2 * nn, out, bufs, 1,
                                   2 * nn)) < 0)
      goto out;
  }
out:
  return rc;
}

template <typename T>
static int ndb(struct dash__cuda_plan *cp, const float *in, float *out) {
  const int p = cp->plan->opts.root;
  int rc = ndb_run<T>(cp, in, 1, p == 2, out);
  if (rc == 0 && p == 4) {
    /* (M/s)^(1/2) has its eigenvalues in (0, 1] as well, so a second run
     * on it gives (M/s)^(-1/4). */
    rc = ndb_run<T>(cp, out, 0, 1, out);
  }
  return rc;
}

int dash__cuda_newton_db(struct dash__cuda_plan *cp, const float *in,
                         float *out) {
  switch (cp->storage) {
    case DASH_CUDA_BF16:
      return ndb<__nv_bfloat16>(cp, in, out);
    case DASH_CUDA_F16:
      return ndb<__half>(cp, in, out);
    default:
      return ndb<float>(cp, in, out);
  }
}
