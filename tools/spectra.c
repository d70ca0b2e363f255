/* Synthetic Shampoo statistics and their float64 oracle roots. */
#define _POSIX_C_SOURCE 200809L
#include "spectra.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Blocks are independent, so both builders run a thread per core across
 * them, each with its own scratch and a single-threaded BLAS (a stack of
 * 230 blocks of 1024² takes minutes one block at a time); every block
 * depends only on its index, so the result does not depend on the
 * threads. */
struct job {
  int oracle; /* 0: spectra_build, 1: spectra_oracle */
  size_t n, b, r;
  const spectra_params *p;
  float *out_f;
  double *out_d;
  const float *in;
  int root;
  double eps;
  atomic_size_t next;
  atomic_int rc;
};

static int build_block(const struct job *j, size_t i, double *s, double *blk,
                       double *w0, double *g, double *w, double *d) {
  const size_t b = j->b;
  struct rng rng;
  rng_seed(&rng, j->p->seed, b, i);
  ema_statistic(s, w0, g, b, j->r, j->p, &rng);
  symmetrize(s, b);
  int rc = eig(s, w, b);
  if (rc < 0)
    return rc;
  remap(d, w, b, j->p->kappa);
  rebuild(blk, s, d, b);
  float *o = j->out_f + i * b * b;
  for (size_t k = 0; k < b * b; k++)
    o[k] = (float)blk[k];
  return 0;
}

static int oracle_block(const struct job *j, size_t i, double *v, double *w,
                        double *d) {
  const size_t b = j->b;
  const float *a = j->in + i * b * b;
  for (size_t k = 0; k < b * b; k++)
    v[k] = a[k];
  int rc = eig(v, w, b);
  if (rc < 0)
    return rc;
  /* Shampoo's heuristic: lift a negative spectrum to 0, then add ε. */
  double shift = -fmin(w[0], 0.0) + j->eps;
  for (size_t k = 0; k < b; k++)
    d[k] = pow(w[k] + shift, -0.5 / (double)j->root);
  rebuild(j->out_d + i * b * b, v, d, b);
  return 0;
}

static void *job_main(void *arg) {
  struct job *j = arg;
  const size_t b = j->b, r = j->r;
  double *s = malloc(b * b * sizeof(*s));
  double *blk = malloc(b * b * sizeof(*blk));
  double *w0 = malloc(b * (r ? r : 1) * sizeof(*w0));
  double *g = malloc(b * (r ? r : 1) * sizeof(*g));
  double *w = malloc(b * sizeof(*w));
  double *d = malloc(b * sizeof(*d));
  if (!s || !blk || !w0 || !g || !w || !d) {
    atomic_store(&j->rc, DASH_E_NOMEM);
  } else {
    for (;;) {
      size_t i = atomic_fetch_add(&j->next, 1);
      if (i >= j->n || atomic_load(&j->rc) < 0)
        break;
      int rc = j->oracle ? oracle_block(j, i, s, w, d)
                         : build_block(j, i, s, blk, w0, g, w, d);
      if (rc < 0)
        atomic_store(&j->rc, rc);
    }
  }
  free(s);
  free(blk);
  free(w0);
  free(g);
  free(w);
  free(d);
  return NULL;
}

static int run_job(struct job *j) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  size_t threads = cores > 0 ? (size_t)cores : 1;
  if (threads > j->n)
    threads = j->n;
  if (threads > 256)
    threads = 256;
  pthread_t tids[256];
  size_t started = 0;
  atomic_init(&j->next, 0);
  atomic_init(&j->rc, 0);
  int saved = openblas_get_num_threads();
  openblas_set_num_threads(1);
  /* A thread that cannot start only means fewer hands. */
  for (size_t t = 1; t < threads; t++) {
    if (pthread_create(&tids[started], NULL, job_main, j) != 0)
      break;
    started++;
  }
  job_main(j);
  for (size_t t = 0; t < started; t++)
    pthread_join(tids[t], NULL);
  openblas_set_num_threads(saved);
  return atomic_load(&j->rc);
}

int spectra_build(float *out, size_t n, size_t b, const spectra_params *p) {
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
  struct job j;
  memset(&j, 0, sizeof(j));
  j.oracle = 0;
  j.n = n;
  j.b = b;
  j.r = r;
  j.p = p;
  j.out_f = out;
  return run_job(&j);
}

int spectra_oracle(double *out, const float *in, size_t n, size_t b, int root,
                   double eps) {
  int rc;
  if (out == NULL || in == NULL || root < 1 || !(eps >= 0.0) || !isfinite(eps))
    return DASH_E_INVALID;
  if ((rc = check_sizes(n, b, sizeof(double))) < 0)
    return rc;
  struct job j;
  memset(&j, 0, sizeof(j));
  j.oracle = 1;
  j.n = n;
  j.b = b;
  j.in = in;
  j.root = root;
  j.eps = eps;
  j.out_d = out;
  return run_job(&j);
}
