/* Synthetic Shampoo statistics and their float64 oracle roots. */
#include "spectra.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dash/status.h"

/* Relative floor under the EMA's eigenvalues before taking logs; an EMA of
 * T·r >= B random directions is full rank, so it only catches round-off. */
#define EIG_FLOOR 1e-14

/* M_PI is POSIX, not C11. */
#define TWO_PI 6.283185307179586476925286766559

/* xoshiro256** seeded through splitmix64: small, fast and the same on every
 * platform, which a libc rand() is not. */
struct rng {
  uint64_t s[4];
  int has_spare;
  double spare;
};

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t b, uint64_t i) {
  uint64_t x = seed;
  /* Mixing B and the block index in makes block i of a shape independent
   * of N and of every other block. */
  x ^= splitmix64(&x) + b * 0xd1b54a32d192ed03ull;
  x ^= splitmix64(&x) + i * 0x8cb92ba72f3d8dd7ull;
  for (int k = 0; k < 4; k++)
    r->s[k] = splitmix64(&x);
  r->has_spare = 0;
  r->spare = 0.0;
}

static uint64_t rotl(uint64_t v, int k) {
  return (v << k) | (v >> (64 - k));
}

static uint64_t rng_next(struct rng *r) {
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

/* Uniform in (0, 1): never 0, so that log() below is finite. */
static double rng_uniform(struct rng *r) {
  return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

static double rng_normal(struct rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  double u = rng_uniform(r), v = rng_uniform(r);
  double rad = sqrt(-2.0 * log(u));
  r->spare = rad * sin(TWO_PI * v);
  r->has_spare = 1;
  return rad * cos(TWO_PI * v);
}

/* Copies the lower triangle of a row-major b×b matrix onto its upper. */
static void symmetrize(double *a, size_t b) {
  for (size_t i = 0; i < b; i++)
    for (size_t j = 0; j < i; j++)
      a[j * b + i] = a[i * b + j];
}

/* Eigendecomposition of a symmetric b×b matrix in place. The matrix is
 * symmetric, so row- and column-major agree on input; on output, in
 * column-major terms, column k holds eigenvector k, which in our row-major
 * view is row k. Eigenvalues ascend. */
static int eig(double *a, double *w, size_t b) {
  lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)b, a,
                                   (lapack_int)b, w);
  if (info == LAPACK_WORK_MEMORY_ERROR)
    return DASH_E_NOMEM;
  return info == 0 ? 0 : DASH_E_LAPACK;
}

/* out = Vᵀ·diag(d²)·V where the rows of v (b×b, overwritten) are vectors:
 * scaling row k by d_k and one syrk keeps the result exactly symmetric. */
static void rebuild(double *out, double *v, const double *d, size_t b) {
  for (size_t k = 0; k < b; k++)
    cblas_dscal((int)b, d[k], v + k * b, 1);
  cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)b, (int)b, 1.0, v,
              (int)b, 0.0, out, (int)b);
  symmetrize(out, b);
}

static int check_sizes(size_t n, size_t b, size_t elem) {
  if (n == 0 || b == 0 || b > INT_MAX / 2)
    return DASH_E_INVALID;
  if (b > SIZE_MAX / b || b * b > SIZE_MAX / elem / n)
    return DASH_E_INVALID;
  return 0;
}

/* The EMA of G·Gᵀ over the steps, into s (b×b, lower triangle valid). */
static void ema_statistic(double *s, double *w0, double *g, size_t b, size_t r,
                          const spectra_params *p, struct rng *rng) {
  double keep = sqrt(p->persist), fresh = sqrt(1.0 - p->persist);
  for (size_t i = 0; i < b * r; i++)
    w0[i] = rng_normal(rng);
  memset(s, 0, b * b * sizeof(*s));
  for (int t = 0; t < p->steps; t++) {
    for (size_t k = 0; k < r; k++) {
      double sigma = pow((double)(k + 1), -p->decay);
      for (size_t i = 0; i < b; i++)
        g[i * r + k] = sigma * (keep * w0[i * r + k] + fresh * rng_normal(rng));
    }
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)b, (int)r,
                1.0 - p->beta, g, (int)r, p->beta, s, (int)b);
  }
}

/* Maps ascending eigenvalues w log-linearly onto [1/κ, 1] and returns
 * sqrt of the new ones in d, ready for rebuild(). */
static void remap(double *d, const double *w, size_t b, double kappa) {
  double top = w[b - 1];
  double floor_ = top > 0.0 ? top * EIG_FLOOR : EIG_FLOOR;
  double lo = log(fmax(w[0], floor_)), hi = log(fmax(top, floor_));
  double lk = log(kappa);
  for (size_t k = 0; k < b; k++) {
    double t;
    if (b == 1)
      t = 1.0;
    else if (hi - lo < 1e-12)
      /* A flat spectrum has no shape to keep: spread it by rank. */
      t = (double)k / (double)(b - 1);
    else
      t = (log(fmax(w[k], floor_)) - lo) / (hi - lo);
    d[k] = exp(0.5 * (t - 1.0) * lk);
  }
}

int spectra_build(float *out, size_t n, size_t b, const spectra_params *p) {
  double *s = NULL, *blk = NULL, *w0 = NULL, *g = NULL, *w = NULL;
  double *d = NULL;
  int rc;

  if (out == NULL || p == NULL)
    return DASH_E_INVALID;
  if ((rc = check_sizes(n, b, sizeof(float))) < 0)
    return rc;
  if (!(p->kappa >= 1.0) || !isfinite(p->kappa) || p->steps < 1 ||
      p->steps > 10000 || !(p->beta >= 0.0 && p->beta < 1.0) ||
      !(p->decay >= 0.0) || !(p->persist >= 0.0 && p->persist <= 1.0))
    return DASH_E_INVALID;
  size_t r = p->rank ? p->rank : (b / 8 > 0 ? b / 8 : 1);
  if (r > b)
    return DASH_E_INVALID;

  s = malloc(b * b * sizeof(*s));
  blk = malloc(b * b * sizeof(*blk));
  w0 = malloc(b * r * sizeof(*w0));
  g = malloc(b * r * sizeof(*g));
  w = malloc(b * sizeof(*w));
  d = malloc(b * sizeof(*d));
  if (!s || !blk || !w0 || !g || !w || !d) {
    rc = DASH_E_NOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    struct rng rng;
    rng_seed(&rng, p->seed, b, i);
    ema_statistic(s, w0, g, b, r, p, &rng);
    symmetrize(s, b);
    if ((rc = eig(s, w, b)) < 0)
      goto out;
    remap(d, w, b, p->kappa);
    rebuild(blk, s, d, b);
    float *o = out + i * b * b;
    for (size_t k = 0; k < b * b; k++)
      o[k] = (float)blk[k];
  }
  rc = 0;
out:
  free(s);
  free(blk);
  free(w0);
  free(g);
  free(w);
  free(d);
  return rc;
}

int spectra_oracle(double *out, const float *in, size_t n, size_t b, int root,
                   double eps) {
  double *v = NULL, *w = NULL, *d = NULL;
  int rc;

  if (out == NULL || in == NULL || root < 1 || !(eps >= 0.0) || !isfinite(eps))
    return DASH_E_INVALID;
  if ((rc = check_sizes(n, b, sizeof(double))) < 0)
    return rc;
  v = malloc(b * b * sizeof(*v));
  w = malloc(b * sizeof(*w));
  d = malloc(b * sizeof(*d));
  if (!v || !w || !d) {
    rc = DASH_E_NOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    const float *a = in + i * b * b;
    for (size_t k = 0; k < b * b; k++)
      v[k] = a[k];
    if ((rc = eig(v, w, b)) < 0)
      goto out;
    /* Shampoo's heuristic: lift a negative spectrum to 0, then add ε. */
    double shift = -fmin(w[0], 0.0) + eps;
    for (size_t k = 0; k < b; k++)
      d[k] = pow(w[k] + shift, -0.5 / (double)root);
    rebuild(out + i * b * b, v, d, b);
  }
  rc = 0;
out:
  free(v);
  free(w);
  free(d);
  return rc;
}
