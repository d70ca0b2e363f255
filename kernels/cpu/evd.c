/* Inverse roots by symmetric eigendecomposition (LAPACK syevd), with
 * Shampoo's eigenvalue heuristic. The exact reference, and on CPU often
 * the fastest method. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>

#include "../internal.h"
#include "cpu.h"

/* Above this condition number (after the heuristic) fp32 eigenvalues lose
 * too much relative accuracy at the bottom of the spectrum: a backward
 * stable fp32 solver perturbs every eigenvalue by about u·λ_max with
 * u = 6e-8, so λ_min is off by u·κ relative, and its root by u·κ/p. At
 * κ = 1e4 that is below 1e-3/p; beyond, the block is solved in fp64. */
static const double kF32MaxCond = 1e4;

int dash__cpu_evd_query(int b, int *s_lwork, int *d_lwork, int *liwork) {
  float sw;
  double dw;
  lapack_int iw, iw2;
  lapack_int info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, NULL,
                                        b, NULL, &sw, -1, &iw, -1);
  if (info != 0)
    return dash__fail(DASH_E_LAPACK, "ssyevd workspace query: info %d",
                      (int)info);
  info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, NULL, b, NULL,
                             &dw, -1, &iw2, -1);
  if (info != 0)
    return dash__fail(DASH_E_LAPACK, "dsyevd workspace query: info %d",
                      (int)info);
  *s_lwork = (int)sw;
  *d_lwork = (int)dw;
  *liwork = (int)(iw > iw2 ? iw : iw2);
  return 0;
}

/* Shampoo's heuristic on ascending eigenvalues, then the per-column
 * factor d_j = λ_j^(-1/(2p)) so that X = (Q·D)(Q·D)ᵀ; an eigenvalue still
 * ≤ 0 (ε = 0 and a zero eigenvalue) gets d_j = 0, a pseudo-inverse. Returns
 * the condition number of the shifted spectrum (inf when singular). */
#define DEFINE_FACTORS(NAME, T)                                        \
  static double NAME(T *lam, int b, int p, double eps, float *top) {  \
    double shift = lam[0] < 0 ? -(double)lam[0] : 0.0;                 \
    double lo = (double)lam[0] + shift + eps;                          \
    double hi = (double)lam[b - 1] + shift + eps;                      \
    *top = (float)hi;                                                  \
    for (int j = 0; j < b; j++) {                                      \
      double l = (double)lam[j] + shift + eps;                         \
      lam[j] = l > 0 ? (T)pow(l, -0.5 / p) : (T)0;                     \
    }                                                                  \
    return lo > 0 ? hi / lo : INFINITY;                                \
  }
DEFINE_FACTORS(factors_f32, float)
DEFINE_FACTORS(factors_f64, double)
#undef DEFINE_FACTORS

/* Row-major lower = column-major upper, and a symmetric matrix is its own
 * transpose, so the block is handed to LAPACK as is. The eigenvectors come
 * back as columns of a column-major matrix: column j is contiguous. */
static int evd_f32(const float *a, float *x, int b, int p, double eps,
                   struct dash__evd_work *w, float *top, double *cond) {
  size_t nn = (size_t)b * b;
  for (size_t i = 0; i < nn; i++) w->s_vec[i] = a[i];
  lapack_int info =
      LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, w->s_vec, b,
                          w->s_lam, w->s_work, w->s_lwork, w->iwork,
                          w->liwork);
  if (info != 0) return DASH_E_LAPACK;
  *cond = factors_f32(w->s_lam, b, p, eps, top);
  for (int j = 0; j < b; j++)
    dash__cpu_scale(w->s_vec + (size_t)j * b, (size_t)b, w->s_lam[j]);
  /* X = W·Wᵀ with W = Q·D: a rank-b update, half the flops of a GEMM. */
  cblas_ssyrk(CblasColMajor, CblasUpper, CblasNoTrans, b, b, 1.0f, w->s_vec,
              b, 0.0f, x, b);
  return 0;
}

static int evd_f64(const float *a, float *x, int b, int p, double eps,
                   struct dash__evd_work *w, float *top, double *cond) {
  size_t nn = (size_t)b * b;
  for (size_t i = 0; i < nn; i++) w->d_vec[i] = a[i];
  lapack_int info =
      LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, w->d_vec, b,
                          w->d_lam, w->d_work, w->d_lwork, w->iwork,
                          w->liwork);
  if (info != 0) return DASH_E_LAPACK;
  *cond = factors_f64(w->d_lam, b, p, eps, top);
  for (int j = 0; j < b; j++) {
    double *col = w->d_vec + (size_t)j * b;
    for (int i = 0; i < b; i++) col[i] *= w->d_lam[j];
  }
  /* The product in fp64 too: rounding W to fp32 first would bring back the
   * error the fp64 solve was for. */
  cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, b, b, 1.0, w->d_vec,
              b, 0.0, w->d_out, b);
  for (size_t i = 0; i < nn; i++) x[i] = (float)w->d_out[i];
  return 0;
}

/* syrk filled the column-major upper triangle, which is the row-major
 * lower one; mirror it so the block is whole. */
static void mirror_lower(float *x, int b) {
  for (int i = 0; i < b; i++)
    for (int j = 0; j < i; j++) x[(size_t)j * b + i] = x[(size_t)i * b + j];
}

int dash__cpu_evd_root(const float *a, float *x, int b, int p, double eps,
                       struct dash__evd_work *w, unsigned char *use_f64,
                       float *lambda_max) {
  double cond = 0.0;
  int rc = -1;
  if (!*use_f64) {
    rc = evd_f32(a, x, b, p, eps, w, lambda_max, &cond);
    if (rc == 0 && cond <= kF32MaxCond) {
      mirror_lower(x, b);
      return 0;
    }
  }
  rc = evd_f64(a, x, b, p, eps, w, lambda_max, &cond);
  if (rc < 0) return dash__fail(DASH_E_LAPACK, "syevd failed on a block");
  /* Remember the precision for the next refresh of this block; a block
   * whose statistics became well-conditioned goes back to fp32. */
  *use_f64 = cond > kF32MaxCond;
  mirror_lower(x, b);
  return 0;
}
