/* Chebyshev approximation of A^(-1/p), evaluated with Clenshaw's
 * recurrence: degree GEMMs and no iteration to converge. */
#include <cblas.h>
#include <math.h>

#include "cpu.h"

static void swap(float **a, float **b) {
  float *t = *a;
  *a = *b;
  *b = t;
}

/* Coefficients of the degree-d interpolant of (u + e)^(-1/p), u ∈ [0, 1],
 * at the Chebyshev nodes of the first kind; f(t) ≈ c0/2 + Σ c_k T_k(t)
 * with t = 2u − 1. In double: they are computed once per block and cost
 * O(d²). */
static const double kPi = 3.14159265358979323846;

static void fit(int d, int p, double e, double *coef) {
  const int n = d + 1;
  for (int k = 0; k <= d; k++) {
    double acc = 0.0;
    for (int j = 0; j < n; j++) {
      double theta = kPi * (j + 0.5) / n;
      double u = 0.5 * (cos(theta) + 1.0);
      acc += pow(u + e, -1.0 / p) * cos(k * theta);
    }
    coef[k] = 2.0 * acc / n;
  }
}

void dash__cpu_chebyshev(int b, int p, double s, double eps, int degree,
                         float **a, float **x, float **q, double *coef) {
  const size_t nn = (size_t)b * b;
  fit(degree, p, eps / s, coef);

  /* S = (2/s)·A − I maps the spectrum [0, s] onto [−1, 1]; it lives in *a
   * from here on. */
  dash__cpu_scale(*a, nn, (float)(2.0 / s));
  dash__cpu_add_identity(*a, b, -1.0f);

  /* Clenshaw: b_k = c_k·I + 2·S·b_{k+1} − b_{k+2}, with *x = b_{k+1} and
   * *q = b_{k+2}; b_d = c_d·I needs no product. */
  dash__cpu_set_identity(*x, b, (float)coef[degree]);
  dash__cpu_set_identity(*q, b, 0.0f);
  for (int k = degree - 1; k >= 1; k--) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 2.0f, *a, b,
                *x, b, -1.0f, *q, b);
    dash__cpu_add_identity(*q, b, (float)coef[k]);
    swap(x, q);
  }
  /* f = c0/2·I + S·b_1 − b_2. */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0f, *a, b,
              *x, b, -1.0f, *q, b);
  dash__cpu_add_identity(*q, b, (float)(0.5 * coef[0]));
  dash__cpu_scale(*q, nn, (float)pow(s, -1.0 / p));
  swap(x, q);
}
