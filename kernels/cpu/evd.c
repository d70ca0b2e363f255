/* Inverse roots by symmetric eigendecomposition, with Shampoo's eigenvalue
 * heuristic: the exact reference, and on CPU the fastest method. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>

#include "../internal.h"
#include "cpu.h"

/* Above this condition number (after the heuristic) an fp32 solve loses
 * too much at the bottom of the spectrum: a backward stable fp32 solver
 * perturbs the block by about u·λ_max with u = 6e-8, so λ_min is off by
 * u·κ relative and its root by u·κ/p. At κ = 1e4 that is below 1e-3/p;
 * beyond, the block takes the mixed-precision path. */
static const double kF32MaxCond = 1e4;

static int max_int(int a, int b) {
  return a > b ? a : b;
}

/* Every LAPACK workspace size, from LAPACK's own queries. */
static int query(int b, int *s_lwork, int *d_lwork, int *liwork) {
  float sw, sw2;
  double dw, dw2;
  lapack_int iw, iw2;
  lapack_int info;
  if ((info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, NULL, b, NULL,
                                  &sw, -1, &iw, -1)) != 0 ||
      (info = LAPACKE_sormtr_work(LAPACK_COL_MAJOR, 'L', 'U', 'N', b, b, NULL,
                                  b, NULL, NULL, b, &sw2, -1)) != 0 ||
      (info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'U', b, NULL, b, NULL, NULL,
                                  NULL, &dw, -1)) != 0 ||
      (info = LAPACKE_dstedc_work(LAPACK_COL_MAJOR, 'I', b, NULL, NULL, NULL, b,
                                  &dw2, -1, &iw2, -1)) != 0)
    return dash__fail(DASH_E_LAPACK, "LAPACK workspace query: info %d",
                      (int)info);
  *s_lwork = max_int((int)sw, (int)sw2);
  *d_lwork = max_int((int)dw, (int)dw2);
  *liwork = max_int((int)iw, (int)iw2);
  return 0;
}

int dash__cpu_evd_work_init(struct dash__evd_work *w, int b) {
  size_t nn = (size_t)b * b;
  int rc = query(b, &w->s_lwork, &w->d_lwork, &w->liwork);
  if (rc < 0)
    return rc;
  int ok = 1;
  ok &= (w->s_vec = malloc(nn * sizeof(float))) != NULL;
  ok &= (w->s_ref = malloc(nn * sizeof(float))) != NULL;
  ok &= (w->s_lam = malloc((size_t)b * sizeof(float))) != NULL;
  ok &= (w->s_tau = malloc((size_t)b * sizeof(float))) != NULL;
  ok &= (w->s_work = malloc((size_t)w->s_lwork * sizeof(float))) != NULL;
  ok &= (w->d_vec = malloc(nn * sizeof(double))) != NULL;
  ok &= (w->d_z = malloc(nn * sizeof(double))) != NULL;
  ok &= (w->d_lam = malloc((size_t)b * sizeof(double))) != NULL;
  ok &= (w->d_off = malloc((size_t)b * sizeof(double))) != NULL;
  ok &= (w->d_tau = malloc((size_t)b * sizeof(double))) != NULL;
  ok &= (w->d_work = malloc((size_t)w->d_lwork * sizeof(double))) != NULL;
  ok &= (w->iwork = malloc((size_t)w->liwork * sizeof(int))) != NULL;
  return ok ? 0 : DASH_E_NOMEM;
}

void dash__cpu_evd_work_free(struct dash__evd_work *w) {
  free(w->s_vec);
  free(w->s_ref);
  free(w->s_lam);
  free(w->s_tau);
  free(w->s_work);
  free(w->d_vec);
  free(w->d_z);
  free(w->d_lam);
  free(w->d_off);
  free(w->d_tau);
  free(w->d_work);
  free(w->iwork);
}

/* Shampoo's heuristic on ascending eigenvalues, then the per-column
 * factor d_j = λ_j^(-1/(2p)) so that X = (Q·D)(Q·D)ᵀ; an eigenvalue still
 * ≤ 0 (ε = 0 and a zero eigenvalue) gets d_j = 0, a pseudo-inverse. The
 * factors go to `out`; returns the condition number of the shifted
 * spectrum (inf when singular). */
#define DEFINE_FACTORS(NAME, T)                                          \
  static double NAME(const T *lam, float *out, int b, int p, double eps, \
                     float *top) {                                       \
    double shift = lam[0] < 0 ? -(double)lam[0] : 0.0;                   \
    double lo = (double)lam[0] + shift + eps;                            \
    double hi = (double)lam[b - 1] + shift + eps;                        \
    *top = (float)hi;                                                    \
    for (int j = 0; j < b; j++) {                                        \
      double l = (double)lam[j] + shift + eps;                           \
      out[j] = l > 0 ? (float)pow(l, -0.5 / p) : 0.0f;                   \
    }                                                                    \
    return lo > 0 ? hi / lo : INFINITY;                                  \
  }
DEFINE_FACTORS(factors_f32, float)
DEFINE_FACTORS(factors_f64, double)
#undef DEFINE_FACTORS

/* X = W·Wᵀ with W = Q·D, Q's columns contiguous in s_vec: a rank-b update,
 * half the flops of a GEMM. syrk fills the column-major upper triangle,
 * which is the row-major lower one; the other half is mirrored. */
static void rebuild(struct dash__evd_work *w, float *x, int b) {
  for (int j = 0; j < b; j++)
    dash__cpu_scale(w->s_vec + (size_t)j * b, (size_t)b, w->s_lam[j]);
  cblas_ssyrk(CblasColMajor, CblasUpper, CblasNoTrans, b, b, 1.0f, w->s_vec, b,
              0.0f, x, b);
  for (int i = 0; i < b; i++)
    for (int j = 0; j < i; j++)
      x[(size_t)j * b + i] = x[(size_t)i * b + j];
}

/* Row-major lower = column-major upper, and a symmetric block is its own
 * transpose, so the block is handed to LAPACK as is. Eigenvectors come
 * back as the columns of a column-major matrix: column j is contiguous. */
static int evd_f32(const float *a, float *x, int b, int p, double eps,
                   struct dash__evd_work *w, float *top, double *cond) {
  size_t nn = (size_t)b * b;
  for (size_t i = 0; i < nn; i++)
    w->s_vec[i] = a[i];
  if (LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', b, w->s_vec, b, w->s_lam,
                          w->s_work, w->s_lwork, w->iwork, w->liwork) != 0)
    return DASH_E_LAPACK;
  *cond = factors_f32(w->s_lam, w->s_lam, b, p, eps, top);
  if (*cond > kF32MaxCond)
    return 0;
  rebuild(w, x, b);
  return 0;
}

/* The ill-conditioned path. The fp32 solve's error comes from its
 * backward error u·λ_max, made where the block is reduced to tridiagonal
 * form and where the tridiagonal problem is solved, so those two steps run
 * in fp64. Applying the Householder reflectors to the eigenvectors and the
 * rebuild only add errors of u relative to each eigenvector, which move
 * the root by about u relative, so they run in fp32 at twice the speed. */
static int evd_mixed(const float *a, float *x, int b, int p, double eps,
                     struct dash__evd_work *w, float *top, double *cond) {
  size_t nn = (size_t)b * b;
  for (size_t i = 0; i < nn; i++)
    w->d_vec[i] = a[i];
  if (LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'U', b, w->d_vec, b, w->d_lam,
                          w->d_off, w->d_tau, w->d_work, w->d_lwork) != 0)
    return DASH_E_LAPACK;
  if (LAPACKE_dstedc_work(LAPACK_COL_MAJOR, 'I', b, w->d_lam, w->d_off, w->d_z,
                          b, w->d_work, w->d_lwork, w->iwork, w->liwork) != 0)
    return DASH_E_LAPACK;
  for (size_t i = 0; i < nn; i++) {
    w->s_vec[i] = (float)w->d_z[i];
    w->s_ref[i] = (float)w->d_vec[i];
  }
  for (int i = 0; i + 1 < b; i++)
    w->s_tau[i] = (float)w->d_tau[i];
  if (LAPACKE_sormtr_work(LAPACK_COL_MAJOR, 'L', 'U', 'N', b, b, w->s_ref, b,
                          w->s_tau, w->s_vec, b, w->s_work, w->s_lwork) != 0)
    return DASH_E_LAPACK;
  *cond = factors_f64(w->d_lam, w->s_lam, b, p, eps, top);
  rebuild(w, x, b);
  return 0;
}

int dash__cpu_evd_root(const float *a, float *x, int b, int p, double eps,
                       struct dash__evd_work *w, unsigned char *use_f64,
                       float *lambda_max) {
  double cond = 0.0;
  if (!*use_f64 && evd_f32(a, x, b, p, eps, w, lambda_max, &cond) == 0 &&
      cond <= kF32MaxCond)
    return 0;
  if (evd_mixed(a, x, b, p, eps, w, lambda_max, &cond) < 0)
    return dash__fail(DASH_E_LAPACK, "eigendecomposition failed on a block");
  /* Remember the path for the next refresh of this block; a block whose
   * statistics became well-conditioned goes back to fp32. */
  *use_f64 = cond > kF32MaxCond;
  return 0;
}
