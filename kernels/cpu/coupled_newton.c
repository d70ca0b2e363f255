/* Coupled Newton iteration for A^(-1/p), as Distributed Shampoo computes
 * it (its default root method): the baseline NewtonDB is measured
 * against. */
#include <cblas.h>
#include <math.h>

#include "cpu.h"

static void swap(float **a, float **b) {
  float *t = *a;
  *a = *b;
  *b = t;
}

static void gemm(int b, const float *x, const float *y, float *out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0f, x, b, y,
              b, 0.0f, out, b);
}

/* max |M − I| over all elements, as Distributed Shampoo's
 * torch.dist(M, I, p=inf) measures it. */
static float max_abs_off_identity(const float *m, int b) {
  float worst = 0.0f;
  for (int i = 0; i < b; i++) {
    const float *row = m + (size_t)i * b;
    for (int j = 0; j < b; j++) {
      float d = fabsf(row[j] - (i == j ? 1.0f : 0.0f));
      /* `!(d <= worst)` also catches NaN. */
      if (!(d <= worst))
        worst = d;
    }
  }
  return worst;
}

void dash__cpu_coupled_newton(int b, int p, double z, float **x, float **m,
                              float **t, float **tp, float **u, int max_steps,
                              double tol, struct dash__newton_run *run) {
  const float alpha = -1.0f / (float)p;
  const size_t nn = (size_t)b * b;

  /* M = z·(A + εI), X = z^(1/p)·I. */
  dash__cpu_scale(*m, nn, (float)z);
  dash__cpu_set_identity(*x, b, (float)pow(z, 1.0 / p));
  float r = max_abs_off_identity(*m, b);
  run->steps = 0;
  run->r_first = run->r_last = r;
  for (int k = 0; k < max_steps; k++) {
    if (!isfinite(r) || (tol > 0.0 && r < tol))
      return;
    /* T = (1 − α)·I + α·M. */
    for (size_t i = 0; i < nn; i++)
      (*t)[i] = alpha * (*m)[i];
    dash__cpu_add_identity(*t, b, 1.0f - alpha);
    /* X ← X·T. */
    gemm(b, *x, *t, *u);
    swap(x, u);
    /* M ← T^p·M, with T^p by repeated squaring (p is 2 or 4). */
    gemm(b, *t, *t, *tp);
    if (p == 4) {
      gemm(b, *tp, *tp, *u);
      swap(tp, u);
    }
    gemm(b, *tp, *m, *u);
    swap(m, u);
    r = max_abs_off_identity(*m, b);
    run->steps = k + 1;
    run->r_last = r;
  }
}
