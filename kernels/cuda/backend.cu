/* The CUDA backend of roots.h: per-plan device state, and the execution
 * driver (statistics, scaling, the method, the per-block verdict and the
 * EVD fallback), which mirrors kernels/cpu/backend.c block for block. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

/* ------------------------------------------------------------------ state */

static int is_iterative(dash_method m) {
  return m == DASH_METHOD_NEWTON_DB || m == DASH_METHOD_COUPLED_NEWTON ||
         m == DASH_METHOD_CHEBYSHEV;
}

static void state_free(struct dash__cuda_plan *cp) {
  /* Nothing queued may still use what is freed below. */
  if (cp->ctx.stream)
    (void)cudaStreamSynchronize(cp->ctx.stream);
  void *device[] = {
      cp->w,       cp->t,       cp->e,     cp->mh,         cp->vh,
      cp->pv,      cp->pw,      cp->sumsq, cp->trace,      cp->nonfinite,
      cp->bad_out, cp->r_first, cp->r_cur, cp->r_max,      cp->lam,
      cp->delta,   cp->inv_s,   cp->coef,  cp->slot_block, cp->moves,
      cp->ev_a,    cp->ev_x,    cp->ev_w,  cp->ev_info,    cp->ev_top,
      cp->ev_cond, cp->ev_work, cp->d_in,  cp->d_out};
  void *pinned[] = {cp->h_sumsq,     cp->h_trace,   cp->h_r_first, cp->h_r_cur,
                    cp->h_nonfinite, cp->h_bad_out, cp->h_r_max,   cp->h_lam};
  void *host[] = {cp->h_slot_block, cp->h_leave,   cp->h_src,   cp->h_dst,
                  cp->h_moves,      cp->h_scale,   cp->h_had,   cp->h_s,
                  cp->ev_hwork,     cp->ev_list,   cp->ev_redo, cp->h_ev_info,
                  cp->h_ev_top,     cp->h_ev_cond, cp->use_f64, cp->blk};
  for (size_t i = 0; i < sizeof(device) / sizeof(device[0]); i++)
    cudaFree(device[i]);
  for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++)
    cudaFreeHost(pinned[i]);
  for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++)
    free(host[i]);
  dash__cuda_ctx_free(&cp->ctx);
  (void)cudaGetLastError();
  free(cp);
}

/* Allocation helpers: sizes are products of limits roots.c has checked
 * (N·B²·8 < 2^60), so they cannot overflow size_t. */
#define DEV(ptr, bytes) DASH_CUDA_TRY(cudaMalloc((void **)&(ptr), (bytes)))
#define PINNED(ptr, bytes) \
  DASH_CUDA_TRY(cudaMallocHost((void **)&(ptr), (bytes)))
#define HOST(ptr, count)                                                    \
  do {                                                                      \
    if (((ptr) = (decltype(ptr))calloc((count), sizeof(*(ptr)))) == NULL) { \
      rc = dash__fail(DASH_E_NOMEM, "CUDA backend host state");             \
      goto out;                                                             \
    }                                                                       \
  } while (0)

int dash__cuda_plan_init(struct dash_roots_plan *plan) {
  int rc = 0;
  dash_roots_options *o = &plan->opts;
  struct dash__cuda_plan *cp = (struct dash__cuda_plan *)calloc(1, sizeof(*cp));
  if (cp == NULL)
    return dash__fail(DASH_E_NOMEM, "CUDA backend state");
  /* Until measurements on a GPU say otherwise, AUTO means the method
   * whose accuracy needs no conditions. */
  if (o->method == DASH_METHOD_AUTO)
    o->method = DASH_METHOD_EVD;
  cp->plan = plan;
  cp->n = plan->n;
  cp->b = plan->b;
  switch (o->precision) {
    case DASH_PRECISION_BF16:
      cp->storage = DASH_CUDA_BF16;
      cp->elem = 2;
      break;
    case DASH_PRECISION_FP16:
      cp->storage = DASH_CUDA_F16;
      cp->elem = 2;
      break;
    default:
      cp->storage = DASH_CUDA_F32;
      cp->elem = 4;
      break;
  }
  cp->compute = o->precision == DASH_PRECISION_TF32
                    ? CUBLAS_COMPUTE_32F_FAST_TF32
                    : CUBLAS_COMPUTE_32F;
  cp->k = o->scaling == DASH_SCALING_POWER_ITER_MULTI ? o->power_vectors : 1;

  {
    const size_t n = cp->n, b = cp->b, nn = b * b, k = (size_t)cp->k;
    const int iterative = is_iterative(o->method);
    const int power = iterative && o->scaling != DASH_SCALING_FROBENIUS;
    if ((rc = dash__cuda_ctx_init(&cp->ctx, o->stream_priority)) < 0)
      goto out;
    if (iterative) {
      DEV(cp->w, 2 * n * nn * cp->elem);
      DEV(cp->t, 2 * n * nn * cp->elem);
      DEV(cp->e, n * nn * cp->elem);
    }
    if (power) {
      DEV(cp->mh, n * nn * sizeof(__nv_bfloat16));
      DEV(cp->vh, n * b * k * sizeof(__nv_bfloat16));
      DEV(cp->pv, n * b * k * sizeof(float));
      DEV(cp->pw, n * b * k * sizeof(float));
    }
    DEV(cp->sumsq, n * sizeof(double));
    DEV(cp->trace, n * sizeof(double));
    DEV(cp->nonfinite, n * sizeof(int));
    DEV(cp->bad_out, n * sizeof(int));
    DEV(cp->r_first, n * sizeof(double));
    DEV(cp->r_cur, n * sizeof(double));
    DEV(cp->r_max, n * sizeof(unsigned int));
    DEV(cp->lam, n * sizeof(float));
    DEV(cp->delta, n * sizeof(float));
    /* inv_s, out_scale and z0 are one array, uploaded at once. */
    DEV(cp->inv_s, 3 * n * sizeof(float));
    cp->out_scale = cp->inv_s + n;
    cp->z0 = cp->inv_s + 2 * n;
    if (o->method == DASH_METHOD_CHEBYSHEV)
      DEV(cp->coef, n * ((size_t)o->cheb_degree + 1) * sizeof(float));
    /* Staging for host buffers: made here, so that an execution from host
     * memory allocates nothing (and cannot fail for memory) later. */
    if (!o->device_only) {
      DEV(cp->d_in, n * nn * sizeof(float));
      DEV(cp->d_out, n * nn * sizeof(float));
    }
    DEV(cp->slot_block, n * sizeof(int));
    DEV(cp->moves, 2 * n * sizeof(struct dash__cuda_move));
    PINNED(cp->h_sumsq, n * sizeof(double));
    PINNED(cp->h_trace, n * sizeof(double));
    PINNED(cp->h_r_first, n * sizeof(double));
    PINNED(cp->h_r_cur, n * sizeof(double));
    PINNED(cp->h_nonfinite, n * sizeof(int));
    PINNED(cp->h_bad_out, n * sizeof(int));
    PINNED(cp->h_r_max, n * sizeof(unsigned int));
    PINNED(cp->h_lam, n * sizeof(float));
    HOST(cp->h_slot_block, n);
    HOST(cp->h_leave, n);
    HOST(cp->h_src, n);
    HOST(cp->h_dst, n);
    HOST(cp->h_moves, 2 * n);
    HOST(cp->h_scale, 3 * n);
    HOST(cp->h_had, n);
    HOST(cp->ev_list, n);
    HOST(cp->h_s, n);
    HOST(cp->use_f64, n);
    HOST(cp->blk, n);
    if (o->method == DASH_METHOD_EVD || o->fallback != DASH_FALLBACK_NONE)
      if ((rc = dash__cuda_evd_init(cp)) < 0)
        goto out;
  }
  plan->backend = cp;
  cp = NULL;
out:
  if (cp != NULL) {
    if (rc == DASH_E_NOMEM) {
      static const char *const names[] = {"fp32", "tf32", "bf16", "fp16"};
      char why[256];
      snprintf(why, sizeof(why), "%s", dash__cuda_last_message());
      rc = dash__fail(DASH_E_NOMEM,
                      "CUDA workspace for %zu blocks of %zux%zu in %s: %s",
                      plan->n, plan->b, plan->b, names[o->precision & 3], why);
    }
    state_free(cp);
  }
  return rc;
}

void dash__cuda_plan_free(struct dash_roots_plan *plan) {
  struct dash__cuda_plan *cp = (struct dash__cuda_plan *)plan->backend;
  if (cp == NULL)
    return;
  const int device = cp->ctx.device;
  int prev = -1;
  if (cudaGetDevice(&prev) == cudaSuccess && prev != device)
    (void)cudaSetDevice(device);
  state_free(cp);
  if (prev >= 0 && prev != device && cudaSetDevice(prev) != cudaSuccess)
    (void)cudaGetLastError();
  plan->backend = NULL;
}

/* ---------------------------------------------------------------- helpers */

size_t dash__cuda_active_slots(struct dash__cuda_plan *cp) {
  size_t a = 0;
  for (size_t i = 0; i < cp->n; i++)
    if (cp->blk[i].active)
      cp->h_slot_block[a++] = (int)i;
  return a;
}

int dash__cuda_upload_slots(struct dash__cuda_plan *cp, size_t a) {
  int rc = 0;
  if (a > 0)
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->slot_block, cp->h_slot_block,
                                  a * sizeof(int), cudaMemcpyHostToDevice,
                                  cp->ctx.stream));
out:
  return rc;
}

template <typename T>
int dash__cuda_retire(struct dash__cuda_plan *cp, size_t *a, size_t emits,
                      const T *emit_src, size_t emit_stride, float *out,
                      T *const *bufs, int nbufs, size_t stride) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  struct dash__cuda_move *compact = cp->h_moves + cp->n;
  size_t live = 0, count = 0;
  if (emits > 0) {
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->moves, cp->h_moves,
                                  emits * sizeof(*cp->moves),
                                  cudaMemcpyHostToDevice, ctx->stream));
    if ((rc = dash__cu_emit<T>(ctx->stream, emit_src, emit_stride, out,
                               cp->moves, emits, (int)cp->b, cp->bad_out)) < 0)
      goto out;
  }
  live = dash__slots_compact(cp->h_leave, *a, cp->h_slot_block, cp->h_src,
                             cp->h_dst, &count);
  for (size_t i = 0, made = 0; i < count; i++)
    dash__cuda_add_move(compact, &made, (size_t)cp->h_src[i], cp->h_dst[i], 0,
                        1.0f);
  if (count > 0) {
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->moves + cp->n, compact,
                                  count * sizeof(*cp->moves),
                                  cudaMemcpyHostToDevice, ctx->stream));
    for (int i = 0; i < nbufs; i++)
      if ((rc = dash__cu_move_slots<T>(ctx->stream, bufs[i], stride,
                                       cp->moves + cp->n, count)) < 0)
        goto out;
  }
  *a = live;
  rc = dash__cuda_upload_slots(cp, live);
out:
  return rc;
}

#define DASH_INSTANTIATE(T)                                             \
  template int dash__cuda_retire<T>(struct dash__cuda_plan *, size_t *, \
                                    size_t, const T *, size_t, float *, \
                                    T *const *, int, size_t);
DASH_INSTANTIATE(float)
DASH_INSTANTIATE(__nv_bfloat16)
DASH_INSTANTIATE(__half)
#undef DASH_INSTANTIATE

/* -------------------------------------------------------------- execution */

/* Reads the input statistics; flags the non-finite blocks and makes the
 * rest active. */
static int read_stats(struct dash__cuda_plan *cp, const float *in,
                      dash_block_info *info, int with_mh) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const size_t n = cp->n;
  DASH_CUDA_TRY(cudaMemsetAsync(cp->sumsq, 0, n * sizeof(double), ctx->stream));
  DASH_CUDA_TRY(cudaMemsetAsync(cp->trace, 0, n * sizeof(double), ctx->stream));
  DASH_CUDA_TRY(
      cudaMemsetAsync(cp->nonfinite, 0, n * sizeof(int), ctx->stream));
  DASH_CUDA_TRY(cudaMemsetAsync(cp->bad_out, 0, n * sizeof(int), ctx->stream));
  if ((rc = dash__cu_stats(ctx->stream, in, n, (int)cp->b, cp->plan->opts.eps,
                           cp->sumsq, cp->trace, cp->nonfinite,
                           with_mh ? cp->mh : NULL)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_sumsq, cp->sumsq, n * sizeof(double),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_trace, cp->trace, n * sizeof(double),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_nonfinite, cp->nonfinite, n * sizeof(int),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  memset(cp->blk, 0, n * sizeof(*cp->blk));
  for (size_t i = 0; i < n; i++) {
    memset(&info[i], 0, sizeof(info[i]));
    if (cp->h_nonfinite[i]) {
      info[i].status = DASH_BLOCK_NONFINITE_INPUT;
      continue;
    }
    cp->blk[i].active = 1;
    cp->blk[i].converged = 1;
  }
out:
  return rc;
}

/* The scale s of every active block, as the CPU backend computes it:
 * ‖A + εI‖_F, or c·λ̂_max with λ̂ from power iteration. A zero block
 * (s = 0) gets a zero root, as EVD's pseudo-inverse gives; a block whose
 * scale is not finite is left for the verdict to reject. */
static int scale_blocks(struct dash__cuda_plan *cp, float *out,
                        dash_block_info *info) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const size_t n = cp->n, b = cp->b, nn = b * b;
  const double eps = o->eps;
  const int power = o->scaling != DASH_SCALING_FROBENIUS;
  double *fro = cp->h_s;
  for (size_t i = 0; i < n; i++) {
    /* ‖A + εI‖_F² = ‖A‖_F² + 2ε·tr A + B·ε². */
    double sq =
        cp->h_sumsq[i] + 2.0 * eps * cp->h_trace[i] + (double)b * eps * eps;
    fro[i] = sqrt(sq > 0.0 ? sq : 0.0);
  }
  if (power) {
    float *delta = (float *)cp->h_scale; /* scratch until the scales */
    for (size_t i = 0; i < n; i++) {
      double tr = cp->h_trace[i] + (double)b * eps;
      delta[i] = tr > 0.0 ? (float)(1e-6 * tr / (double)b) : 0.0f;
    }
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->delta, delta, n * sizeof(float),
                                  cudaMemcpyHostToDevice, ctx->stream));
    if ((rc = dash__cuda_power_iter(cp)) < 0)
      goto out;
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_lam, cp->lam, n * sizeof(float),
                                  cudaMemcpyDeviceToHost, ctx->stream));
    DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  }
  for (size_t i = 0; i < n; i++) {
    struct dash__cuda_block *bk = &cp->blk[i];
    double s;
    if (!bk->active)
      continue;
    if (!power) {
      s = fro[i];
      info[i].lambda_max = (float)s;
    } else {
      /* A PSD block with zero trace is zero; anything else with a
       * non-positive trace is not PSD, and the Frobenius norm bounds its
       * spectral radius. */
      double tr = cp->h_trace[i] + (double)b * eps;
      float lam = tr > 0.0 ? cp->h_lam[i] : (float)fro[i];
      info[i].lambda_max = lam;
      s = o->power_scale * lam;
    }
    cp->h_s[i] = s;
    if (s == 0.0) {
      DASH_CUDA_TRY(
          cudaMemsetAsync(out + i * nn, 0, nn * sizeof(float), ctx->stream));
      bk->active = 0;
      bk->written = 1;
      continue;
    }
    if (!isfinite(s)) {
      bk->active = 0;
      bk->r_last = INFINITY;
      continue;
    }
    cp->h_scale[i] = (float)(1.0 / s);
    cp->h_scale[n + i] = (float)pow(s, -1.0 / o->root);
    cp->h_scale[2 * n + i] = (float)((o->root + 1.0) / (2.0 * s));
  }
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->inv_s, cp->h_scale, 3 * n * sizeof(float),
                                cudaMemcpyHostToDevice, ctx->stream));
out:
  return rc;
}

/* The per-block verdict of an iterative method, as on the CPU: which
 * blocks EVD recomputes, and every other block's status. */
static int judge(struct dash__cuda_plan *cp, const float *in, float *out,
                 dash_block_info *info) {
  int rc = 0;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &cp->plan->opts;
  const size_t n = cp->n;
  size_t fallbacks = 0;
  DASH_CUDA_TRY(cudaMemcpyAsync(cp->h_bad_out, cp->bad_out, n * sizeof(int),
                                cudaMemcpyDeviceToHost, ctx->stream));
  DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  for (size_t i = 0; i < n; i++) {
    struct dash__cuda_block *bk = &cp->blk[i];
    if (info[i].status == DASH_BLOCK_NONFINITE_INPUT)
      continue;
    info[i].iterations = bk->steps;
    info[i].residual = bk->r_last;
    int finite = isfinite(bk->r_last) && !cp->h_bad_out[i];
    int diverged = !finite || bk->r_last > bk->r_first;
    if ((diverged && o->fallback >= DASH_FALLBACK_DIVERGED) ||
        (!bk->converged && o->fallback == DASH_FALLBACK_UNCONVERGED)) {
      bk->evd = 1;
      fallbacks++;
    }
    info[i].status =
        bk->converged && !diverged ? DASH_BLOCK_OK : DASH_BLOCK_NOT_CONVERGED;
  }
  if (fallbacks > 0) {
    float *lam = (float *)cp->h_scale; /* scratch: the scales are spent */
    /* Per block: 1 = goes to EVD, 2 = the iteration wrote its output. An
     * EVD that fails leaves the block as the iteration left it, with the
     * status above, as on the CPU. */
    unsigned char *had = cp->h_had;
    memset(had, 0, n);
    for (size_t i = 0; i < n; i++) {
      if (!cp->blk[i].evd)
        continue;
      had[i] = 1 | (cp->blk[i].written ? 2 : 0);
      cp->blk[i].written = 0;
    }
    rc = dash__cuda_evd(cp, in, out, lam);
    for (size_t i = 0; i < n && rc == 0; i++) {
      if (!had[i])
        continue;
      if (cp->blk[i].written)
        info[i].status = DASH_BLOCK_FALLBACK_EVD;
      else
        cp->blk[i].written = (had[i] & 2) != 0;
    }
  }
out:
  return rc;
}

static int run_evd(struct dash__cuda_plan *cp, const float *in, float *out,
                   dash_block_info *info) {
  const size_t n = cp->n;
  float *lam = (float *)cp->h_scale;
  for (size_t i = 0; i < n; i++) {
    cp->blk[i].evd = cp->blk[i].active;
    lam[i] = 0.0f;
  }
  int rc = dash__cuda_evd(cp, in, out, lam);
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (!cp->blk[i].evd)
      continue;
    info[i].lambda_max = lam[i];
    /* A block LAPACK's counterpart could not decompose keeps its output,
     * as on the CPU. */
    info[i].status =
        cp->blk[i].written ? DASH_BLOCK_OK : DASH_BLOCK_NOT_CONVERGED;
  }
  return rc;
}

/* Copies the blocks this execution wrote back to the host, in runs of
 * consecutive blocks; the others keep the caller's contents. */
static int copy_back(struct dash__cuda_plan *cp, float *out) {
  int rc = 0;
  const size_t n = cp->n, nn = cp->b * cp->b;
  for (size_t i = 0; i < n;) {
    if (!cp->blk[i].written) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < n && cp->blk[j].written)
      j++;
    DASH_CUDA_TRY(cudaMemcpyAsync(out + i * nn, cp->d_out + i * nn,
                                  (j - i) * nn * sizeof(float),
                                  cudaMemcpyDeviceToHost, cp->ctx.stream));
    i = j;
  }
  DASH_CUDA_TRY(cudaStreamSynchronize(cp->ctx.stream));
out:
  return rc;
}

int dash__cuda_execute(struct dash_roots_plan *plan, float *out,
                       const float *in, dash_block_info *info, int on_device,
                       void *stream) {
  int rc = 0;
  struct dash__cuda_plan *cp = (struct dash__cuda_plan *)plan->backend;
  struct dash__cuda_ctx *ctx = &cp->ctx;
  const dash_roots_options *o = &plan->opts;
  const size_t n = cp->n, nn = cp->b * cp->b;
  const float *src = in;
  float *dst = out;
  int prev = -1;
  DASH_CUDA_TRY(cudaGetDevice(&prev));
  if (prev != ctx->device)
    DASH_CUDA_TRY(cudaSetDevice(ctx->device));

  if (on_device) {
    /* After whatever the caller queued on its stream. */
    DASH_CUDA_TRY(cudaEventRecord(ctx->caller, (cudaStream_t)stream));
    DASH_CUDA_TRY(cudaStreamWaitEvent(ctx->stream, ctx->caller, 0));
  } else {
    DASH_CUDA_TRY(cudaMemcpyAsync(cp->d_in, in, n * nn * sizeof(float),
                                  cudaMemcpyHostToDevice, ctx->stream));
    src = cp->d_in;
    dst = cp->d_out;
  }

  {
    const int iterative = is_iterative(o->method);
    const int power = iterative && o->scaling != DASH_SCALING_FROBENIUS;
    if ((rc = read_stats(cp, src, info, power)) < 0)
      goto out;
    if (!iterative) {
      rc = run_evd(cp, src, dst, info);
    } else {
      if ((rc = scale_blocks(cp, dst, info)) < 0)
        goto out;
      switch (o->method) {
        case DASH_METHOD_NEWTON_DB:
          rc = dash__cuda_newton_db(cp, src, dst);
          break;
        case DASH_METHOD_COUPLED_NEWTON:
          rc = dash__cuda_coupled_newton(cp, src, dst);
          break;
        default:
          rc = dash__cuda_chebyshev(cp, src, dst);
          break;
      }
      if (rc == 0)
        rc = judge(cp, src, dst, info);
    }
    if (rc < 0)
      goto out;
  }
  if (on_device)
    DASH_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  else
    rc = copy_back(cp, out);
out:
  if (rc < 0 && rc != DASH_E_DEVICE_LOST) {
    /* Nothing queued may touch the caller's buffers after the call. A
     * cuBLAS or cuSOLVER failure can hide a poisoned context, which the
     * stream then reports. */
    cudaError_t e = cudaStreamSynchronize(ctx->stream);
    if (dash__cuda_sticky(e))
      rc = dash__fail(DASH_E_DEVICE_LOST, "the GPU failed: %s (%s)",
                      cudaGetErrorName(e), cudaGetErrorString(e));
  }
  if (prev >= 0 && prev != ctx->device && cudaSetDevice(prev) != cudaSuccess)
    (void)cudaGetLastError(); /* not the next launch's error */
  return rc;
}
