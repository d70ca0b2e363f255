/* Newton–Denman–Beavers (coupled Newton–Schulz form) for the square root
 * and inverse square root of a block whose eigenvalues lie in (0, 1]. */
#include <cblas.h>
#include <math.h>

#include "cpu.h"

static void swap(float **a, float **b) {
  float *t = *a;
  *a = *b;
  *b = t;
}

/* ‖I − E‖_F in double, so the convergence test is not itself limited by
 * fp32 accumulation over b² terms. */
static float identity_residual(const float *e, int b) {
  double acc = 0.0;
  for (int i = 0; i < b; i++) {
    const float *row = e + (size_t)i * b;
    for (int j = 0; j < b; j++) {
      double d = (i == j ? 1.0 : 0.0) - row[j];
      acc += d * d;
    }
  }
  return (float)sqrt(acc);
}

void dash__cpu_newton_db(int b, float **y, float **z, float **e, float **t,
                         int max_steps, double tol,
                         struct dash__newton_run *run) {
  run->steps = 0;
  run->r_first = run->r_last = 0.0f;
  for (int k = 0; k < max_steps; k++) {
    /* E = 1.5·I − 0.5·Z·Y, formed in the GEMM's accumulator. On the first
     * step Z = I, so E = 1.5·I − 0.5·Y and Z·E = E need no product. */
    if (k == 0) {
      for (size_t i = 0; i < (size_t)b * b; i++)
        (*e)[i] = -0.5f * (*y)[i];
      dash__cpu_add_identity(*e, b, 1.5f);
    } else {
      dash__cpu_set_identity(*e, b, 1.5f);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, -0.5f, *z,
                  b, *y, b, 1.0f, *e, b);
    }
    float r = identity_residual(*e, b);
    if (k == 0)
      run->r_first = r;
    run->r_last = r;
    run->steps = k + 1;
    if (!isfinite(r))
      return;

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0f, *y, b,
                *e, b, 0.0f, *t, b);
    swap(y, t);
    if (k == 0) {
      swap(z, e);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0f, *e,
                  b, *z, b, 0.0f, *t, b);
      swap(z, t);
    }
    /* The update above used this E, so the iterate is already one
     * quadratic step past the residual that met the tolerance. */
    if (tol > 0.0 && r < tol)
      return;
  }
  if (tol > 0.0 && run->steps > 0) {
    /* The step limit was reached. The last residual belongs to the
     * iterate before the last update, which quadratic convergence may
     * have taken below the tolerance; one more product measures the
     * iterate that is returned, so its status is not judged a step
     * late. */
    dash__cpu_set_identity(*e, b, 1.5f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, -0.5f, *z,
                b, *y, b, 1.0f, *e, b);
    run->r_last = identity_residual(*e, b);
  }
}
