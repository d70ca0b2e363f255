/* Power iteration for λ_max of a symmetric block, one or many start
 * vectors at once (DASH's POWER_ITER and POWER_ITER_MULTI scaling). */
#include <cblas.h>
#include <math.h>

#include "cpu.h"

/* splitmix64: a tiny, well-mixed generator so that start vectors depend
 * only on the seed, never on global state. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1): a start vector needs only a non-negligible
 * component along the top eigenvector, which any dense random vector has
 * with probability 1. */
static float uniform_pm1(uint64_t *state) {
  return (float)((double)(splitmix64(state) >> 11) * 0x1.0p-52 - 1.0);
}

/* Normalizes the columns of the b×k row-major matrix v; returns 0 when a
 * column is all zero (then it is left as is). */
static int normalize_columns(float *v, int b, int k, float *norms) {
  int ok = 1;
  for (int j = 0; j < k; j++)
    norms[j] = 0.0f;
  for (int i = 0; i < b; i++)
    for (int j = 0; j < k; j++)
      norms[j] += v[(size_t)i * k + j] * v[(size_t)i * k + j];
  for (int j = 0; j < k; j++) {
    if (!(norms[j] > 0.0f)) {
      ok = 0;
      norms[j] = 1.0f;
    } else {
      norms[j] = 1.0f / sqrtf(norms[j]);
    }
  }
  for (int i = 0; i < b; i++)
    for (int j = 0; j < k; j++)
      v[(size_t)i * k + j] *= norms[j];
  return ok;
}

float dash__cpu_power_iter(const float *m, int b, int steps, int vectors,
                           uint64_t seed, float *v, float *w) {
  int k = vectors;
  double trace = 0.0;
  for (int i = 0; i < b; i++)
    trace += m[(size_t)i * b + i];
  if (!(trace > 0.0)) {
    /* A PSD block with zero trace is zero. Anything else with a
     * non-positive trace is not PSD; the Frobenius norm then bounds its
     * spectral radius. */
    double f = dash__cpu_frobenius(m, b);
    return (float)f;
  }
  float delta = (float)(1e-6 * trace / b);
  uint64_t state = seed;
  for (size_t i = 0; i < (size_t)b * k; i++)
    v[i] = uniform_pm1(&state);
  /* w doubles as scratch for the column norms until the first product. */
  normalize_columns(v, b, k, w);

  for (int s = 0; s < steps; s++) {
    /* w = (M + δI)·v; the δ term keeps a start vector in the null space
     * of M from collapsing to zero. */
    if (k == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, b, b, 1.0f, m, b, v, 1, 0.0f, w,
                  1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, k, b, 1.0f, m,
                  b, v, k, 0.0f, w, k);
    for (size_t i = 0; i < (size_t)b * k; i++)
      w[i] += delta * v[i];
    float *tmp = v;
    v = w;
    w = tmp;
    float norms[256];
    normalize_columns(v, b, k, norms);
  }

  /* The Rayleigh quotient vᵀMv of each unit column never exceeds λ_max,
   * so the largest one is the best lower bound of λ_max we have. */
  if (k == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, b, b, 1.0f, m, b, v, 1, 0.0f, w,
                1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, k, b, 1.0f, m, b,
                v, k, 0.0f, w, k);
  double best = 0.0;
  for (int j = 0; j < k; j++) {
    double rq = 0.0;
    for (int i = 0; i < b; i++)
      rq += (double)v[(size_t)i * k + j] * w[(size_t)i * k + j];
    if (rq > best)
      best = rq;
  }
  return (float)best;
}
