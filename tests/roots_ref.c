/* Float64 references for the root tests; see roots_ref.h. */
#include "roots_ref.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_rng_seed(ref_rng *rng, uint64_t seed) {
  rng->state = seed;
}

static uint64_t next_u64(ref_rng *rng) {
  uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double ref_rng_uniform(ref_rng *rng) {
  /* The top 53 bits give every double of [0, 1) on a 2^-53 grid. */
  return (double)(next_u64(rng) >> 11) * 0x1.0p-53;
}

double ref_rng_normal(ref_rng *rng) {
  /* 1 − u lies in (0, 1], so the logarithm stays finite. */
  double u1 = 1.0 - ref_rng_uniform(rng);
  double u2 = ref_rng_uniform(rng);
  const double two_pi = 6.283185307179586;
  return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

void ref_spectrum_geometric(double *lam, size_t b, double lo, double hi) {
  for (size_t i = 0; i < b; i++) {
    double t = b > 1 ? (double)i / (double)(b - 1) : 1.0;
    lam[i] = lo * pow(hi / lo, t);
  }
}

void ref_spectrum_linear(double *lam, size_t b, double lo, double hi) {
  for (size_t i = 0; i < b; i++) {
    double t = b > 1 ? (double)i / (double)(b - 1) : 1.0;
    lam[i] = lo + (hi - lo) * t;
  }
}

void ref_spectrum_uniform(double *lam, size_t b, double lo, double hi,
                          ref_rng *rng) {
  for (size_t i = 0; i < b; i++)
    lam[i] = lo + (hi - lo) * ref_rng_uniform(rng);
}

int ref_random_orthogonal(double *q, size_t b, ref_rng *rng) {
  lapack_int n = (lapack_int)b;
  double *tau = malloc(b * sizeof(*tau));
  double *rdiag = malloc(b * sizeof(*rdiag));
  int rc = -1;
  if (tau == NULL || rdiag == NULL)
    goto out;
  for (size_t i = 0; i < b * b; i++)
    q[i] = ref_rng_normal(rng);
  rc = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, n, n, q, n, tau);
  if (rc != 0)
    goto out;
  for (size_t i = 0; i < b; i++)
    rdiag[i] = q[i * b + i];
  rc = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, n, n, n, q, n, tau);
  if (rc != 0)
    goto out;
  /* Q·diag(sign(R_ii)) is Haar-distributed; plain Q is not quite. */
  for (size_t i = 0; i < b; i++)
    for (size_t j = 0; j < b; j++)
      if (rdiag[j] < 0)
        q[i * b + j] = -q[i * b + j];
out:
  free(tau);
  free(rdiag);
  return rc;
}

void ref_compose(double *x, const double *q, const double *d, size_t b) {
  for (size_t i = 0; i < b; i++) {
    for (size_t j = 0; j <= i; j++) {
      double s = 0.0;
      for (size_t k = 0; k < b; k++)
        s += q[i * b + k] * d[k] * q[j * b + k];
      x[i * b + j] = s;
      x[j * b + i] = s;
    }
  }
}

double ref_root_of(double lam, int p) {
  return lam > 0.0 ? pow(lam, -1.0 / (double)p) : 0.0;
}

int ref_known_block(float *a, double *x_known, const double *lam, size_t b,
                    int p, double eps, ref_rng *rng) {
  double *q = malloc(b * b * sizeof(*q));
  double *m = malloc(b * b * sizeof(*m));
  double *d = malloc(b * sizeof(*d));
  int rc = -1;
  if (q == NULL || m == NULL || d == NULL)
    goto out;
  if ((rc = ref_random_orthogonal(q, b, rng)) != 0)
    goto out;
  ref_compose(m, q, lam, b);
  for (size_t i = 0; i < b * b; i++)
    a[i] = (float)m[i];
  if (x_known != NULL) {
    for (size_t i = 0; i < b; i++)
      d[i] = ref_root_of(lam[i] + eps, p);
    ref_compose(x_known, q, d, b);
  }
out:
  free(q);
  free(m);
  free(d);
  return rc;
}

int ref_evd_root(double *x, double *lam_out, const float *a, size_t b, int p,
                 double eps) {
  lapack_int n = (lapack_int)b;
  double *v = malloc(b * b * sizeof(*v));
  double *w = malloc(b * sizeof(*w));
  int rc = -1;
  if (v == NULL || w == NULL)
    goto out;
  /* Only the lower triangle is read, as the library's EVD promises. */
  for (size_t i = 0; i < b; i++)
    for (size_t j = 0; j < b; j++)
      v[i * b + j] = j <= i ? (double)a[i * b + j] : 0.0;
  rc = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'L', n, v, n, w);
  if (rc != 0)
    goto out;
  if (lam_out != NULL)
    memcpy(lam_out, w, b * sizeof(*w));
  /* Shampoo's heuristic: shift a negative spectrum up to 0, add ε. */
  double shift = w[0] < 0.0 ? -w[0] : 0.0;
  for (size_t k = 0; k < b; k++)
    w[k] = ref_root_of(w[k] + shift + eps, p);
  /* The eigenvectors are the columns of v. */
  for (size_t i = 0; i < b; i++) {
    for (size_t j = 0; j <= i; j++) {
      double s = 0.0;
      for (size_t k = 0; k < b; k++)
        s += v[i * b + k] * w[k] * v[j * b + k];
      x[i * b + j] = s;
      x[j * b + i] = s;
    }
  }
out:
  free(v);
  free(w);
  return rc;
}

double ref_rel_fro(const float *x, const double *ref, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)x[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

double ref_rel_fro_f(const float *x, const float *ref, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)x[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * (double)ref[i];
  }
  return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

double ref_fro_f(const float *a, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++)
    s += (double)a[i] * (double)a[i];
  return sqrt(s);
}
