/* Unit tests of the CPU backend of roots.h against float64 references
 * computed by roots_ref.c, which shares no code with kernels/.
 *
 * Accuracy is measured as the relative Frobenius error ‖X − X_ref‖_F /
 * ‖X_ref‖_F in double, against X_ref = the float64 root of the float32
 * input the library actually received (dsyevd), so that the rounding of
 * the input to float32 is not counted against the library. The error
 * against the root of the exact known spectrum is printed alongside.
 *
 * Every observed error is printed, so `ctest -V` shows how far each check
 * is from its tolerance. */
#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dash/roots.h"
#include "roots_ref.h"
#include "roots_stack.h"

/* Seconds a single test may take before Check kills it. The slowest test
 * takes well under a second in RelWithDebInfo; this leaves room for ASan
 * on slow shared cores (CK_TIMEOUT_MULTIPLIER scales it further). */
#define TEST_TIMEOUT_S 30

/* Options of the accuracy tests of the iterations. 40 steps per NewtonDB
 * run is far more than they need at κ ≤ 1e4: from the smallest scaled
 * eigenvalue x₀ ≥ 1/(2·κ·√B) the product ZY gains a factor of about 9/4
 * per step until it is O(1), i.e. log(1/x₀)/log(2.25) ≤ 16 steps, then
 * converges quadratically in 4–5 more (we see 14–23 at κ = 1e3, both runs
 * of p = 4 together). tol 1e-5 sits 3× above the fp32 floor of NewtonDB's
 * ‖I − E‖_F (measured with tol = 0: 3e-6 at κ = 1e3, B = 64; it grows
 * like √κ) and far above Coupled Newton's max |M − I| floor (2.4e-7), so
 * every block converges. Once NewtonDB meets it the iterate's own error is
 * of order tol²; Coupled Newton judges its *updated* M, where X's
 * relative error is still about residual/p, so the accuracy tests add tol
 * to the rounding bound for the iterations. */
#define ACC_MAX_STEPS 40
#define ACC_TOL 1e-5

static const dash_method kMethods[] = {
    DASH_METHOD_NEWTON_DB, DASH_METHOD_COUPLED_NEWTON, DASH_METHOD_EVD,
    DASH_METHOD_CHEBYSHEV, DASH_METHOD_AUTO};
static const dash_scaling kScalings[] = {DASH_SCALING_POWER_ITER,
                                         DASH_SCALING_POWER_ITER_MULTI,
                                         DASH_SCALING_FROBENIUS};

/* ------------------------------------------------------------------ */
/* Tolerances                                                           */
/* ------------------------------------------------------------------ */

/* The error bound of an fp32 inverse root of a block whose A + εI has
 * condition number κ. A backward-stable fp32 computation returns the exact
 * root of a matrix perturbed by ‖δA‖ ≲ c·u·‖A‖ (u = 2^-24 ≈ 6e-8); the
 * p-th inverse root turns a relative perturbation of the smallest
 * eigenvalue, c·u·κ, into c·u·κ/p (d/dλ λ^(-1/p) = −λ^(-1/p)/(pλ)). We
 * take the growth factor c = 4√B: the rounding errors of a length-B dot
 * product grow like √B, and 4 covers the few products of one Newton step
 * (or of the reduction and back-transformation of an EVD). κ is clamped
 * below at 10 so a near-identity block still gets a few ulps of slack for
 * the depth of the computation. Observed errors are 3–100× below this. */
static double fp32_tol(double kappa, int p, size_t b) {
  if (kappa < 10.0)
    kappa = 10.0;
  return 4.0 * sqrt((double)b) * REF_U32 * kappa / (double)p;
}

/* Chebyshev's error is the error of the degree-d fit, not rounding: the
 * library fits (u + ε/s)^(-1/p) on u ∈ [0, 1] (DESIGN.md), a function
 * that is singular just left of 0 when ε/s ≈ 0, so its interpolant
 * converges only algebraically and its error barely depends on κ. At
 * degree 20 on B = 64 blocks with spectra in [0.3, 1]·scale (u in [0.15,
 * 0.5] with power iteration, u in [0.05, 0.19] with Frobenius scaling) we
 * measured relative errors up to 3.4e-2 (p = 2, power iteration), 5.5e-2
 * (p = 2, Frobenius; 5.75e-2 for the identity, all of whose eigenvalues
 * sit at u = 1/√B), 4.9e-3 (p = 4, power iteration), 1.03e-2 (p = 4,
 * Frobenius). The tolerances are 2.3–2.5× those. */
static double cheb_tol(int p, dash_scaling scaling) {
  int fro = scaling == DASH_SCALING_FROBENIUS;
  if (p == 2)
    return fro ? 0.14 : 0.08;
  return fro ? 0.026 : 0.012;
}

/* ------------------------------------------------------------------ */
/* Stacks of known spectrum                                             */
/* ------------------------------------------------------------------ */

/* The stack of the method tests: four B = 64 blocks of different shapes
 * and magnitudes, κ ≤ 1e3 (with ε = 1e-6):
 *   0: geometric in [1e-3, 1], κ = 1e3;
 *   1: uniform in [50, 200], large magnitude, κ ≈ 4;
 *   2: geometric in [1e-5, 1e-3], small magnitude, where ε = 1e-6 shifts
 *      the smallest eigenvalue by 10% (so a dropped ε shows), κ ≈ 91;
 *   3: two tight clusters at 1 and 1e-2 (a 100× gap), κ ≈ 100. */
#define METHOD_N 4
#define METHOD_B 64
#define METHOD_EPS 1e-6
static stack *method_stack(int p) {
  const size_t b = METHOD_B;
  double lam[METHOD_N * METHOD_B];
  ref_rng rng;
  ref_rng_seed(&rng, 99);
  ref_spectrum_geometric(lam, b, 1e-3, 1.0);
  ref_spectrum_uniform(lam + b, b, 50.0, 200.0, &rng);
  ref_spectrum_geometric(lam + 2 * b, b, 1e-5, 1e-3);
  for (size_t k = 0; k < b; k++)
    lam[3 * b + k] =
        (k < b / 2 ? 1.0 : 1e-2) * (1.0 + 1e-3 * ref_rng_uniform(&rng));
  return stack_new(METHOD_N, b, p, METHOD_EPS, lam, 1234);
}

/* The stack of the Chebyshev tests: spectra in [0.3, 1]·scale, the
 * conditioning a degree-20 fit is meant for (κ ≈ 3). */
static stack *cheb_stack(int p) {
  const size_t b = METHOD_B;
  double lam[METHOD_N * METHOD_B];
  ref_rng rng;
  ref_rng_seed(&rng, 77);
  ref_spectrum_uniform(lam, b, 0.3, 1.0, &rng);
  ref_spectrum_linear(lam + b, b, 0.3, 1.0);
  ref_spectrum_geometric(lam + 2 * b, b, 0.3e3, 1e3);
  ref_spectrum_geometric(lam + 3 * b, b, 0.3e-2, 1e-2);
  return stack_new(METHOD_N, b, p, 1e-10, lam, 4321);
}

static dash_roots_options acc_options(dash_method m, int p, dash_scaling sc,
                                      double eps) {
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.method = m;
  o.root = p;
  o.scaling = sc;
  o.eps = eps;
  o.max_steps = ACC_MAX_STEPS;
  o.tol = ACC_TOL;
  return o;
}

/* ------------------------------------------------------------------ */
/* Checks shared by the tests                                           */
/* ------------------------------------------------------------------ */

/* Asserts that block i of x is within tol of the stack's reference. */
static double check_block(const char *what, const stack *s, size_t i,
                          const float *x, double tol) {
  return stack_check_block(what, s, i, x, tol, NULL);
}

static void check_report(const dash_roots_report *r,
                         const dash_block_info *info, size_t n,
                         dash_method requested, dash_scaling scaling) {
  check_report_of(r, info, n, requested, scaling, DASH_BACKEND_CPU);
}

/* Asserts what a converged block of `method` reports about its work. */
static void check_converged_info(const dash_block_info *in, dash_method m,
                                 const dash_roots_options *o) {
  printf("    %s: status %s, %d iterations, residual %.3g, lambda_max %.5g\n",
         dash_method_name(m), dash_block_status_name(in->status),
         in->iterations, in->residual, in->lambda_max);
  ck_assert_int_eq(in->status, DASH_BLOCK_OK);
  if (m == DASH_METHOD_NEWTON_DB || m == DASH_METHOD_COUPLED_NEWTON) {
    /* NewtonDB runs twice for p = 4, each run up to max_steps. */
    int runs = m == DASH_METHOD_NEWTON_DB && o->root == 4 ? 2 : 1;
    ck_assert_int_ge(in->iterations, 1);
    ck_assert_int_le(in->iterations, runs * o->max_steps);
    ck_assert(in->residual >= 0.0f && in->residual < o->tol);
  } else {
    ck_assert_int_eq(in->iterations, 0);
    ck_assert(in->residual == 0.0f);
  }
}

static int same_info(const dash_block_info *x, const dash_block_info *y) {
  return x->iterations == y->iterations &&
         memcmp(&x->residual, &y->residual, sizeof(float)) == 0 &&
         memcmp(&x->lambda_max, &y->lambda_max, sizeof(float)) == 0 &&
         x->status == y->status;
}

/* ------------------------------------------------------------------ */
/* core                                                                 */
/* ------------------------------------------------------------------ */

/* The test helpers themselves: Q is orthogonal to float64 rounding, and
 * the two references agree. They differ only because the input was
 * rounded to float32: a relative perturbation of at most u per element,
 * ‖δA‖_F ≤ u‖A‖_F ≤ u√B‖A‖₂, moves the root by at most u·√B·κ/p (see
 * fp32_tol), so we allow 2·u·√B·κ/p. */
START_TEST(test_roots_reference_helpers_agree) {
  const size_t b = 48;
  double *q = xcalloc(b * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 5);
  ck_assert_int_eq(ref_random_orthogonal(q, b, &rng), 0);
  double worst = 0.0;
  for (size_t i = 0; i < b; i++)
    for (size_t j = 0; j < b; j++) {
      double d = 0.0;
      for (size_t k = 0; k < b; k++)
        d += q[i * b + k] * q[j * b + k];
      d -= i == j ? 1.0 : 0.0;
      if (fabs(d) > worst)
        worst = fabs(d);
    }
  /* Householder QR in float64: orthogonal to a few ulps of 2^-53 times
   * B. */
  ck_assert_double_le(worst, 1e-13);
  free(q);

  for (int p = 1; p <= 4; p++) {
    stack *s = method_stack(p);
    size_t nn = s->b * s->b;
    for (size_t i = 0; i < s->n; i++) {
      double d = 0.0, den = 0.0;
      for (size_t k = 0; k < nn; k++) {
        double e = s->x_ref[i * nn + k] - s->x_known[i * nn + k];
        d += e * e;
        den += s->x_known[i * nn + k] * s->x_known[i * nn + k];
      }
      double rel = sqrt(d / den);
      double tol = 2.0 * REF_U32 * sqrt((double)s->b) * s->kappa[i] / p;
      printf(
          "  references p=%d block %zu: kappa %.3g differ by %.3g, "
          "tol %.3g\n",
          p, i, s->kappa[i], rel, tol);
      ck_assert_double_le(rel, tol);
    }
    stack_free(s);
  }
}
END_TEST

/* Every method × root 2, 4 × every scaling against the reference on a
 * stack of different spectra. Loop index: method (5) × root (2) ×
 * scaling (3). EVD ignores the scaling; it is run with each anyway, which
 * costs little and shows that the option does not disturb it. */
START_TEST(test_roots_methods_match_reference) {
  dash_method m = kMethods[_i / 6];
  int p = (_i / 3) % 2 ? 4 : 2;
  dash_scaling sc = kScalings[_i % 3];
  int cheb = m == DASH_METHOD_CHEBYSHEV;
  stack *s = cheb ? cheb_stack(p) : method_stack(p);
  dash_roots_options o = acc_options(m, p, sc, s->eps);
  size_t total = s->n * s->b * s->b;
  float *x = floats(total, NAN);
  dash_block_info info[METHOD_N];
  dash_roots_report rep;
  char what[96];

  ck_assert_int_eq(dash_roots_compute(x, s->a, s->n, s->b, &o, info, &rep), 0);
  check_report(&rep, info, s->n, m, sc);
  snprintf(what, sizeof(what), "%s (ran %s) p=%d %s", dash_method_name(m),
           dash_method_name(rep.method), p, dash_scaling_name(sc));
  for (size_t i = 0; i < s->n; i++) {
    check_converged_info(&info[i], rep.method, &o);
    double tol = cheb ? cheb_tol(p, sc) : fp32_tol(s->kappa[i], p, s->b);
    if (rep.method == DASH_METHOD_NEWTON_DB ||
        rep.method == DASH_METHOD_COUPLED_NEWTON)
      tol += o.tol; /* the stopping rule, see ACC_TOL */
    check_block(what, s, i, x, tol);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* EVD takes any integer root, and ill-conditioned blocks. Loop index:
 * roots 1, 3, 8 on the method stack (κ ≤ 1e3), then roots 1, 2, 4, 8 on
 * two blocks of κ = 1e5. */
START_TEST(test_roots_evd_any_root_and_ill_conditioned) {
  static const int roots[] = {1, 3, 8, 1, 2, 4, 8};
  int p = roots[_i];
  int ill = _i >= 3;
  stack *s;
  if (ill) {
    double lam[2 * METHOD_B];
    ref_spectrum_geometric(lam, METHOD_B, 1e-5, 1.0);
    ref_spectrum_geometric(lam + METHOD_B, METHOD_B, 1e-3, 1e2);
    s = stack_new(2, METHOD_B, p, 0.0, lam, 31);
  } else {
    s = method_stack(p);
  }
  dash_roots_options o =
      acc_options(DASH_METHOD_EVD, p, DASH_SCALING_POWER_ITER, s->eps);
  float *x = floats(s->n * s->b * s->b, NAN);
  dash_block_info info[METHOD_N];
  dash_roots_report rep;
  char what[64];
  ck_assert_int_eq(dash_roots_compute(x, s->a, s->n, s->b, &o, info, &rep), 0);
  check_report(&rep, info, s->n, DASH_METHOD_EVD, o.scaling);
  snprintf(what, sizeof(what), "evd p=%d%s", p, ill ? " kappa 1e5" : "");
  for (size_t i = 0; i < s->n; i++) {
    check_converged_info(&info[i], DASH_METHOD_EVD, &o);
    /* fp32_tol holds for an EVD in fp32 too; at κ = 1e5 it is loose
     * (≈ 0.2/p), which still tells a wrong root or a dropped block
     * apart. */
    check_block(what, s, i, x, fp32_tol(s->kappa[i], p, s->b));
  }
  free(x);
  stack_free(s);
}
END_TEST

/* λ̂_max of power iteration is a Rayleigh quotient, so it never exceeds
 * λ_max(A + εI) beyond rounding, and with a clear gap (λ₂/λ₁ ≤ 0.5) ten
 * steps bring it within (λ₂/λ₁)^20 ≈ 1e-6 relative for any start vector
 * with a fair component along the top eigenvector; we ask for 3%. Blocks
 * 0–2 have a gap at three magnitudes; block 3 has none (uniform spectrum),
 * where only the upper bound is asserted. The upper bound allows 1e-5
 * relative: the fp32 Rayleigh quotient carries ≈ 4√B·u ≈ 2e-6 of rounding,
 * and DESIGN.md lets the iterate carry a damping δ ≤ 1e-6·λ_max. */
START_TEST(test_roots_power_iter_estimates_lambda_max) {
  const size_t b = METHOD_B, n = 4;
  double lam[4 * METHOD_B];
  ref_rng rng;
  ref_rng_seed(&rng, 11);
  static const double top[] = {1.0, 1e3, 1e-3};
  for (size_t i = 0; i < 3; i++) {
    ref_spectrum_uniform(lam + i * b, b - 1, 0.01 * top[i], 0.5 * top[i], &rng);
    lam[i * b + b - 1] = top[i];
  }
  ref_spectrum_uniform(lam + 3 * b, b, 0.1, 1.0, &rng);
  const double eps = 1e-8;
  stack *s = stack_new(n, b, 2, eps, lam, 12);
  float *x = floats(n * b * b, 0.0f);
  dash_block_info info[4];
  for (int multi = 0; multi <= 1; multi++) {
    dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
    o.root = 2;
    o.eps = eps;
    o.scaling = multi ? DASH_SCALING_POWER_ITER_MULTI : DASH_SCALING_POWER_ITER;
    ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, info, NULL), 0);
    for (size_t i = 0; i < n; i++) {
      double lmax = 0.0;
      for (size_t k = 0; k < b; k++)
        if (lam[i * b + k] > lmax)
          lmax = lam[i * b + k];
      lmax += eps;
      double ratio = info[i].lambda_max / lmax;
      printf("  %s block %zu: lambda_hat/lambda_max = %.9f\n",
             dash_scaling_name(o.scaling), i, ratio);
      ck_assert_double_le(ratio, 1.0 + 1e-5);
      if (i < 3)
        ck_assert_double_ge(ratio, 0.97);
    }
  }
  free(x);
  stack_free(s);
}
END_TEST

/* FROBENIUS reports s = ‖A + εI‖_F. Computed here in double from the
 * float32 input; the library may sum in fp32, whose relative error over
 * B² non-negative squares is at most B²·u and typically B·u, so we allow
 * 2·B·u ≈ 8e-6. */
START_TEST(test_roots_frobenius_scale_is_reported) {
  stack *s = method_stack(2);
  size_t nn = s->b * s->b;
  dash_roots_options o =
      acc_options(DASH_METHOD_NEWTON_DB, 2, DASH_SCALING_FROBENIUS, s->eps);
  float *x = floats(s->n * nn, 0.0f);
  dash_block_info info[METHOD_N];
  ck_assert_int_eq(dash_roots_compute(x, s->a, s->n, s->b, &o, info, NULL), 0);
  for (size_t i = 0; i < s->n; i++) {
    double f = 0.0;
    for (size_t r = 0; r < s->b; r++)
      for (size_t c = 0; c < s->b; c++) {
        double v = s->a[i * nn + r * s->b + c] + (r == c ? s->eps : 0.0);
        f += v * v;
      }
    f = sqrt(f);
    double rel = fabs(info[i].lambda_max - f) / f;
    printf("  fro block %zu: reported %.8g, ||A+eps I||_F %.8g, rel %.3g\n", i,
           info[i].lambda_max, f, rel);
    ck_assert_double_le(rel, 2.0 * (double)s->b * REF_U32);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* The same plan on the same input gives the same bits, and the same
 * diagnostics: nothing depends on time, thread scheduling or state left
 * by the previous execution for a well-conditioned stack. */
START_TEST(test_roots_execute_is_deterministic) {
  static const dash_method ms[] = {DASH_METHOD_NEWTON_DB, DASH_METHOD_EVD};
  stack *s = method_stack(4);
  size_t total = s->n * s->b * s->b;
  float *x1 = floats(total, 0.0f), *x2 = floats(total, 1.0f);
  dash_block_info i1[METHOD_N], i2[METHOD_N];
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.method = ms[_i];
  o.scaling = DASH_SCALING_POWER_ITER_MULTI;
  o.eps = s->eps;
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  ck_assert_int_eq(dash_roots_execute(plan, x1, s->a, i1, NULL), 0);
  ck_assert_int_eq(dash_roots_execute(plan, x2, s->a, i2, NULL), 0);
  ck_assert_mem_eq(x1, x2, total * sizeof(float));
  for (size_t i = 0; i < s->n; i++)
    ck_assert(same_info(&i1[i], &i2[i]));
  dash_roots_plan_destroy(plan);
  free(x1);
  free(x2);
  stack_free(s);
}
END_TEST

/* One plan, two different stacks of its shape: each result is right for
 * its own input. For EVD the first stack is ill-conditioned (κ = 1e6) so
 * that any per-block state a plan keeps between executions is exercised. */
START_TEST(test_roots_plan_reused_across_stacks) {
  static const dash_method ms[] = {DASH_METHOD_NEWTON_DB, DASH_METHOD_EVD};
  dash_method m = ms[_i];
  const int p = 4;
  stack *s1, *s2 = method_stack(p);
  if (m == DASH_METHOD_EVD) {
    double lam[METHOD_N * METHOD_B];
    for (size_t i = 0; i < METHOD_N; i++)
      ref_spectrum_geometric(lam + i * METHOD_B, METHOD_B, 1e-6, 1.0);
    s1 = stack_new(METHOD_N, METHOD_B, p, s2->eps, lam, 777);
  } else {
    double lam[METHOD_N * METHOD_B];
    ref_rng rng;
    ref_rng_seed(&rng, 3);
    for (size_t i = 0; i < METHOD_N; i++)
      ref_spectrum_uniform(lam + i * METHOD_B, METHOD_B, 0.1, 2.0, &rng);
    s1 = stack_new(METHOD_N, METHOD_B, p, s2->eps, lam, 778);
  }
  size_t total = s2->n * s2->b * s2->b;
  float *x = floats(total, 0.0f);
  dash_block_info info[METHOD_N];
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s2->eps);
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s2->n, s2->b, &o), 0);
  const stack *order[] = {s1, s2, s1};
  for (int k = 0; k < 3; k++) {
    const stack *s = order[k];
    char what[64];
    snprintf(what, sizeof(what), "%s reuse #%d", dash_method_name(m), k);
    ck_assert_int_eq(dash_roots_execute(plan, x, s->a, info, NULL), 0);
    for (size_t i = 0; i < s->n; i++) {
      check_converged_info(&info[i], m, &o);
      check_block(what, s, i, x,
                  fp32_tol(s->kappa[i], p, s->b) +
                      (m == DASH_METHOD_EVD ? 0.0 : o.tol));
    }
  }
  dash_roots_plan_destroy(plan);
  free(x);
  stack_free(s1);
  stack_free(s2);
}
END_TEST

/* dash_roots_compute is plan + execute + destroy: same bits, same
 * diagnostics, same report apart from the wall time. */
START_TEST(test_roots_compute_equals_plan_execute) {
  dash_method m = kMethods[_i];
  int p = 4;
  stack *s = m == DASH_METHOD_CHEBYSHEV ? cheb_stack(p) : method_stack(p);
  size_t total = s->n * s->b * s->b;
  float *x1 = floats(total, 0.0f), *x2 = floats(total, 0.0f);
  dash_block_info i1[METHOD_N], i2[METHOD_N];
  dash_roots_report r1, r2;
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s->eps);
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  ck_assert_int_eq(dash_roots_execute(plan, x1, s->a, i1, &r1), 0);
  dash_roots_plan_destroy(plan);
  ck_assert_int_eq(dash_roots_compute(x2, s->a, s->n, s->b, &o, i2, &r2), 0);
  ck_assert_mem_eq(x1, x2, total * sizeof(float));
  for (size_t i = 0; i < s->n; i++)
    ck_assert(same_info(&i1[i], &i2[i]));
  ck_assert_int_eq(r1.method, r2.method);
  ck_assert_int_eq(r1.scaling, r2.scaling);
  ck_assert_int_eq(r1.backend, r2.backend);
  ck_assert_int_eq(r1.max_iterations, r2.max_iterations);
  ck_assert_mem_eq(r1.blocks_by_status, r2.blocks_by_status,
                   sizeof(r1.blocks_by_status));
  free(x1);
  free(x2);
  stack_free(s);
}
END_TEST

/* threads = 1 and threads = 2 give the same root up to fp32 rounding.
 * With fewer blocks than threads the library hands the threads to
 * OpenBLAS inside the block, which may change the order of partial sums in
 * a product or in LAPACK's reduction; each result is then a valid fp32
 * root, within fp32_tol of the exact one, and they may differ by as much.
 * (We measured 0 with N = 3, where each block stays on one thread, 1.6e-7
 * for NewtonDB and 1.2e-6 for EVD with N = 1, against an fp32_tol of
 * 6.7e-6 for these κ ≤ 4, p = 4, B = 128 blocks; the EVD result itself is
 * 8.8e-7 from the float64 root, so 1.2e-6 is a rounding difference.) A
 * race or a block computed twice would be off by far more. Loop index:
 * (NewtonDB, EVD) × (N = 1, N = 3). */
START_TEST(test_roots_thread_count_does_not_change_result) {
  dash_method m = _i % 2 ? DASH_METHOD_EVD : DASH_METHOD_NEWTON_DB;
  size_t n = _i / 2 ? 3 : 1, b = 128;
  double *lam = xcalloc(n * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 8);
  for (size_t i = 0; i < n; i++)
    ref_spectrum_uniform(lam + i * b, b, 0.5, 2.0, &rng);
  stack *s = stack_new(n, b, 4, 1e-10, lam, 9);
  size_t nn = b * b;
  float *x1 = floats(n * nn, 0.0f), *x2 = floats(n * nn, 0.0f);
  dash_roots_options o = acc_options(m, 4, DASH_SCALING_POWER_ITER, s->eps);
  o.threads = 1;
  ck_assert_int_eq(dash_roots_compute(x1, s->a, n, b, &o, NULL, NULL), 0);
  o.threads = 2;
  ck_assert_int_eq(dash_roots_compute(x2, s->a, n, b, &o, NULL, NULL), 0);
  for (size_t i = 0; i < n; i++) {
    double d = ref_rel_fro_f(x2 + i * nn, x1 + i * nn, nn);
    printf("  %s N=%zu block %zu: threads 1 vs 2 differ by %.3g\n",
           dash_method_name(m), n, i, d);
    ck_assert_double_le(d, fp32_tol(s->kappa[i], 4, b));
    check_block("threads=2", s, i, x2, fp32_tol(s->kappa[i], 4, b) + o.tol);
  }
  free(lam);
  free(x1);
  free(x2);
  stack_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* methods                                                              */
/* ------------------------------------------------------------------ */

/* The DASH paper's claim: when λ_max ≪ ‖A‖_F (here λ_max/‖A‖_F ≤ 0.1,
 * B = 128 with most eigenvalues of similar size), scaling by the power
 * iteration's 2·λ̂_max instead of ‖A‖_F puts the spectrum nearer 1, so
 * NewtonDB reaches the same residual in strictly fewer steps, on every
 * block. Loop index: root 2, 4. */
START_TEST(test_roots_power_iter_scaling_beats_frobenius) {
  const size_t b = 128, n = 4;
  int p = _i ? 4 : 2;
  double *lam = xcalloc(n * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 21);
  /* 0: 120 eigenvalues in [0.9, 1], 8 spread down to 1e-2;
   * 1: evenly spaced in [0.8, 1], times 100;
   * 2: 126 in [0.95, 1] and two at 1e-3 (κ = 1e3), times 1e-3;
   * 3: all 1 up to a 1e-3 jitter, times 10. */
  ref_spectrum_uniform(lam, 120, 0.9, 1.0, &rng);
  ref_spectrum_geometric(lam + 120, 8, 1e-2, 0.9);
  ref_spectrum_linear(lam + b, b, 80.0, 100.0);
  ref_spectrum_uniform(lam + 2 * b, 126, 0.95e-3, 1e-3, &rng);
  lam[2 * b + 126] = lam[2 * b + 127] = 1e-6;
  ref_spectrum_uniform(lam + 3 * b, b, 10.0, 10.01, &rng);
  for (size_t i = 0; i < n; i++) {
    double mx = 0.0, f = 0.0;
    for (size_t k = 0; k < b; k++) {
      f += lam[i * b + k] * lam[i * b + k];
      if (lam[i * b + k] > mx)
        mx = lam[i * b + k];
    }
    /* The premise of the test. */
    ck_assert_double_le(mx / sqrt(f), 0.1);
  }
  stack *s = stack_new(n, b, p, 1e-12, lam, 22);
  float *x = floats(n * b * b, 0.0f);
  dash_block_info pi[4], fro[4];
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.root = p;
  o.eps = s->eps;
  o.tol = 1e-3;
  o.max_steps = 100;
  o.scaling = DASH_SCALING_POWER_ITER;
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, pi, NULL), 0);
  o.scaling = DASH_SCALING_FROBENIUS;
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, fro, NULL), 0);
  for (size_t i = 0; i < n; i++) {
    printf(
        "  p=%d block %zu: NewtonDB steps %d (power iteration) vs %d "
        "(Frobenius)\n",
        p, i, pi[i].iterations, fro[i].iterations);
    ck_assert_int_eq(pi[i].status, DASH_BLOCK_OK);
    ck_assert_int_eq(fro[i].status, DASH_BLOCK_OK);
    ck_assert_int_lt(pi[i].iterations, fro[i].iterations);
  }
  free(lam);
  free(x);
  stack_free(s);
}
END_TEST

/* With tol = 1e-3 a well-conditioned block (κ = 10) stops long before
 * the step limit of 40: NewtonDB's step count grows like log(κ), and we
 * see 8 steps for p = 2, 14 for both runs of p = 4 together and 5–6 for
 * Coupled Newton, so even the two runs of p = 4 stay under one run's
 * limit. Loop index: NewtonDB p = 2, NewtonDB p = 4, CN p = 2, CN p = 4. */
START_TEST(test_roots_newton_exits_early_when_converged) {
  dash_method m = _i < 2 ? DASH_METHOD_NEWTON_DB : DASH_METHOD_COUPLED_NEWTON;
  int p = _i % 2 ? 4 : 2;
  double lam[2 * METHOD_B];
  ref_spectrum_geometric(lam, METHOD_B, 0.1, 1.0);
  ref_spectrum_linear(lam + METHOD_B, METHOD_B, 1.0, 10.0);
  stack *s = stack_new(2, METHOD_B, p, 1e-10, lam, 41);
  float *x = floats(2 * METHOD_B * METHOD_B, 0.0f);
  dash_block_info info[2];
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s->eps);
  o.tol = 1e-3;
  ck_assert_int_eq(dash_roots_compute(x, s->a, 2, METHOD_B, &o, info, NULL), 0);
  for (size_t i = 0; i < 2; i++) {
    printf("  %s p=%d block %zu: %d steps, residual %.3g (tol %.3g)\n",
           dash_method_name(m), p, i, info[i].iterations, info[i].residual,
           o.tol);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_OK);
    ck_assert_int_ge(info[i].iterations, 1);
    ck_assert_int_lt(info[i].iterations, o.max_steps);
    ck_assert(info[i].residual < o.tol);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* tol = 0 runs every step: max_steps for CN and NewtonDB p = 2, twice that
 * for NewtonDB p = 4 (two runs). Running past convergence must not hurt:
 * the iterations are stable at the fp32 floor, so the result still meets
 * fp32_tol, and a block that never judged convergence is OK. Same loop as
 * above. */
START_TEST(test_roots_newton_tol_zero_runs_every_step) {
  dash_method m = _i < 2 ? DASH_METHOD_NEWTON_DB : DASH_METHOD_COUPLED_NEWTON;
  int p = _i % 2 ? 4 : 2;
  stack *s = method_stack(p);
  size_t total = s->n * s->b * s->b;
  float *x = floats(total, 0.0f);
  dash_block_info info[METHOD_N];
  dash_roots_report rep;
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s->eps);
  o.tol = 0.0;
  o.max_steps = 25; /* enough to converge at κ ≤ 1e3, see ACC_MAX_STEPS */
  int expect = (m == DASH_METHOD_NEWTON_DB && p == 4 ? 2 : 1) * o.max_steps;
  ck_assert_int_eq(dash_roots_compute(x, s->a, s->n, s->b, &o, info, &rep), 0);
  check_report(&rep, info, s->n, m, o.scaling);
  ck_assert_int_eq(rep.max_iterations, expect);
  for (size_t i = 0; i < s->n; i++) {
    ck_assert_int_eq(info[i].iterations, expect);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_OK);
    check_block("tol=0", s, i, x, fp32_tol(s->kappa[i], p, s->b));
  }
  free(x);
  stack_free(s);
}
END_TEST

/* κ = 1e7 is far beyond what 3 steps can reach: with fallback NONE the
 * block keeps its last iterate and says NOT_CONVERGED; with fallback
 * UNCONVERGED it is recomputed by EVD and says FALLBACK_EVD, its output
 * then being the EVD method's output for the same block. The EVD path is
 * the same deterministic computation either way, so the two agree to 1e-6
 * relative (in practice bit for bit). Loop index: NewtonDB p = 2, 4; CN
 * p = 2, 4. */
START_TEST(test_roots_unconverged_block_status_and_fallback) {
  dash_method m = _i < 2 ? DASH_METHOD_NEWTON_DB : DASH_METHOD_COUPLED_NEWTON;
  int p = _i % 2 ? 4 : 2;
  const size_t n = 2, b = METHOD_B, nn = METHOD_B * METHOD_B;
  double lam[2 * METHOD_B];
  ref_spectrum_geometric(lam, b, 1e-7, 1.0);
  ref_spectrum_geometric(lam + b, b, 1e-4, 1e3);
  stack *s = stack_new(n, b, p, 1e-10, lam, 51);
  float *x = floats(n * nn, 0.0f), *xe = floats(n * nn, 0.0f);
  dash_block_info info[2], einfo[2];
  dash_roots_report rep;
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.method = m;
  o.root = p;
  o.eps = s->eps;
  o.max_steps = 3;
  o.tol = 1e-3;

  o.fallback = DASH_FALLBACK_NONE;
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  for (size_t i = 0; i < n; i++) {
    printf(
        "  %s p=%d fallback none block %zu: status %s, %d steps, "
        "residual %.3g\n",
        dash_method_name(m), p, i, dash_block_status_name(info[i].status),
        info[i].iterations, info[i].residual);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_NOT_CONVERGED);
    ck_assert(info[i].residual >= o.tol);
    ck_assert_int_ge(info[i].iterations, 1);
  }
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_NOT_CONVERGED], n);

  dash_roots_options e = o;
  e.method = DASH_METHOD_EVD;
  ck_assert_int_eq(dash_roots_compute(xe, s->a, n, b, &e, einfo, NULL), 0);

  o.fallback = DASH_FALLBACK_UNCONVERGED;
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_FALLBACK_EVD], n);
  for (size_t i = 0; i < n; i++) {
    double d = ref_rel_fro_f(x + i * nn, xe + i * nn, nn);
    printf(
        "  %s p=%d fallback unconverged block %zu: status %s, differs "
        "from evd by %.3g\n",
        dash_method_name(m), p, i, dash_block_status_name(info[i].status), d);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_FALLBACK_EVD);
    ck_assert_double_le(d, 1e-6);
  }
  free(x);
  free(xe);
  stack_free(s);
}
END_TEST

/* Chebyshev's error is that of the fit, so it must fall as the degree
 * grows: for the algebraically converging fit of cheb_tol, tripling the
 * degree should at least halve it (we measured 20 → 40 alone to halve it
 * for p = 2, and more for p = 4). */
START_TEST(test_roots_chebyshev_error_falls_with_degree) {
  int p = _i ? 4 : 2;
  stack *s = cheb_stack(p);
  size_t nn = s->b * s->b;
  float *x = floats(s->n * nn, 0.0f);
  double err[2][METHOD_N];
  static const int degrees[] = {20, 60};
  for (int d = 0; d < 2; d++) {
    dash_roots_options o =
        acc_options(DASH_METHOD_CHEBYSHEV, p, DASH_SCALING_POWER_ITER, s->eps);
    o.cheb_degree = degrees[d];
    ck_assert_int_eq(dash_roots_compute(x, s->a, s->n, s->b, &o, NULL, NULL),
                     0);
    for (size_t i = 0; i < s->n; i++)
      err[d][i] = ref_rel_fro(x + i * nn, s->x_ref + i * nn, nn);
  }
  for (size_t i = 0; i < s->n; i++) {
    printf("  cheb p=%d block %zu: err %.3g at degree 20, %.3g at 60\n", p, i,
           err[0][i], err[1][i]);
    ck_assert_double_le(err[1][i], 0.5 * err[0][i]);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* edge                                                                 */
/* ------------------------------------------------------------------ */

/* B = 1: x^(-1/p) of a scalar. Every operation is a scalar fp32 operation,
 * so the iterations settle on the fp32 fixed point: we allow 1e-6
 * relative (≈ 16 ulps) for the dozen roundings of the final steps and the
 * rescaling, and the Chebyshev fit's own tolerance for Chebyshev. tol = 0
 * runs all 40 steps, so the stopping rule adds no error: Coupled Newton
 * stops on its *updated* M, where X's relative error is still about
 * residual/p, first order (we saw 1.5e-6 at 4^(-1/2) with tol 1e-5).
 * ε = 0. Loop index: method (5) × root 2, 4. */
START_TEST(test_roots_scalar_block) {
  static const float vals[] = {4.0f, 0.25f, 1e-3f, 7.0f, 1e4f};
  const size_t n = sizeof(vals) / sizeof(vals[0]);
  dash_method m = kMethods[_i / 2];
  int p = _i % 2 ? 4 : 2;
  float x[5];
  dash_block_info info[5];
  dash_roots_report rep;
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, 0.0);
  o.tol = 0.0;
  ck_assert_int_eq(dash_roots_compute(x, vals, n, 1, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  for (size_t i = 0; i < n; i++) {
    double want = pow((double)vals[i], -1.0 / p);
    double rel = fabs(x[i] - want) / want;
    double tol = m == DASH_METHOD_CHEBYSHEV ? cheb_tol(p, o.scaling) : 1e-6;
    printf("  %s p=%d: %g^(-1/%d) = %.9g, want %.9g, rel %.3g tol %.3g\n",
           dash_method_name(m), p, vals[i], p, x[i], want, rel, tol);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_OK);
    ck_assert_double_le(rel, tol);
  }
}
END_TEST

/* EVD's scalar roots at p = 1, 3, 8, and a zero scalar with ε = 0, which
 * the pseudo-inverse maps to 0. Tolerance as in test_roots_scalar_block. */
START_TEST(test_roots_scalar_block_evd_roots) {
  static const float vals[] = {4.0f, 0.25f, 1e-3f, 0.0f};
  static const int roots[] = {1, 3, 8};
  int p = roots[_i];
  float x[4];
  dash_block_info info[4];
  dash_roots_options o =
      acc_options(DASH_METHOD_EVD, p, DASH_SCALING_POWER_ITER, 0.0);
  ck_assert_int_eq(dash_roots_compute(x, vals, 4, 1, &o, info, NULL), 0);
  for (size_t i = 0; i < 4; i++) {
    double want = ref_root_of(vals[i], p);
    double rel = want > 0.0 ? fabs(x[i] - want) / want : fabs(x[i]);
    printf("  evd p=%d: %g -> %.9g, want %.9g\n", p, vals[i], x[i], want);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_OK);
    ck_assert_double_le(rel, 1e-6);
  }
}
END_TEST

/* Blocks that are multiples of I: an all-zero block with ε = 1e-3 gives
 * ε^(-1/p)·I, and the identity with ε = 0 gives I. Both have κ = 1, so
 * fp32_tol(1) (≈ 1e-5/p: a few ulps per operation) applies; Chebyshev
 * keeps its fit tolerance (the identity puts every eigenvalue at the one
 * point u = 1/c of its fit). Loop index: method (5) × root 2, 4. */
START_TEST(test_roots_multiples_of_identity) {
  dash_method m = kMethods[_i / 2];
  int p = _i % 2 ? 4 : 2;
  const size_t b = METHOD_B, nn = METHOD_B * METHOD_B;
  for (int ident = 0; ident <= 1; ident++) {
    double eps = ident ? 0.0 : 1e-3;
    float *a = floats(nn, 0.0f), *x = floats(nn, NAN);
    double *want = xcalloc(nn, sizeof(double));
    for (size_t k = 0; k < b; k++) {
      a[k * b + k] = ident ? 1.0f : 0.0f;
      want[k * b + k] = ident ? 1.0 : pow(eps, -1.0 / p);
    }
    for (int si = 0; si < 3; si++) {
      dash_block_info info;
      dash_roots_options o = acc_options(m, p, kScalings[si], eps);
      ck_assert_int_eq(dash_roots_compute(x, a, 1, b, &o, &info, NULL), 0);
      double err = ref_rel_fro(x, want, nn);
      double tol = m == DASH_METHOD_CHEBYSHEV ? cheb_tol(p, o.scaling)
                                              : fp32_tol(1.0, p, b);
      printf("  %s p=%d %s %s: err %.3g tol %.3g\n", dash_method_name(m), p,
             dash_scaling_name(o.scaling),
             ident ? "identity" : "zero block, eps 1e-3", err, tol);
      ck_assert_int_eq(info.status, DASH_BLOCK_OK);
      ck_assert_double_le(err, tol);
    }
    free(a);
    free(x);
    free(want);
  }
}
END_TEST

/* Rank B/2 (eigenvalues in [0.1, 1] and exact zeros) with ε = 1e-4: the
 * root of A + εI, κ = 1e4, matched against the float64 root of the
 * float32 input. The iterations need about 16 steps per run at this κ
 * (see ACC_MAX_STEPS), but NewtonDB's residual cannot reach ACC_TOL here:
 * its fp32 floor, which grows like √κ, is 3e-5 at κ = 1e4 (it stalled
 * there for 40 steps with tol 1e-5 and the block was NOT_CONVERGED), so
 * tol is 1e-4, the same 3× margin as ACC_TOL's. Loop index: NewtonDB, CN,
 * EVD, AUTO × root 2, 4. */
START_TEST(test_roots_rank_deficient_with_ridge) {
  static const dash_method ms[] = {DASH_METHOD_NEWTON_DB,
                                   DASH_METHOD_COUPLED_NEWTON, DASH_METHOD_EVD,
                                   DASH_METHOD_AUTO};
  dash_method m = ms[_i / 2];
  int p = _i % 2 ? 4 : 2;
  const size_t b = METHOD_B, n = 2;
  double lam[2 * METHOD_B];
  ref_rng rng;
  ref_rng_seed(&rng, 61);
  for (size_t i = 0; i < n; i++) {
    ref_spectrum_uniform(lam + i * b, b / 2, 0.1, 1.0, &rng);
    for (size_t k = b / 2; k < b; k++)
      lam[i * b + k] = 0.0;
  }
  stack *s = stack_new(n, b, p, 1e-4, lam, 62);
  float *x = floats(n * b * b, NAN);
  dash_block_info info[2];
  dash_roots_report rep;
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s->eps);
  o.tol = 1e-4;
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  for (size_t i = 0; i < n; i++) {
    char what[64];
    snprintf(what, sizeof(what), "%s p=%d rank %zu/%zu", dash_method_name(m), p,
             b / 2, b);
    check_converged_info(&info[i], rep.method, &o);
    check_block(what, s, i, x,
                fp32_tol(s->kappa[i], p, b) +
                    (rep.method == DASH_METHOD_EVD ? 0.0 : o.tol));
  }
  free(x);
  stack_free(s);
}
END_TEST

/* EVD's pseudo-inverse with ε = 0: an exactly diagonal input decomposes
 * exactly, so diag(1, 0, 2, 0, 16, 0) gives diag(1, 0, 2^(-1/p), 0,
 * 16^(-1/p), 0), and an all-zero block gives 0. Loop index: root 1, 2, 4. */
START_TEST(test_roots_evd_pseudo_inverse_without_ridge) {
  static const int roots[] = {1, 2, 4};
  static const double diag[] = {1.0, 0.0, 2.0, 0.0, 16.0, 0.0};
  int p = roots[_i];
  const size_t b = 6, nn = 36;
  float a[2 * 36] = {0}, x[2 * 36];
  for (size_t k = 0; k < b; k++)
    a[k * b + k] = (float)diag[k];
  dash_block_info info[2];
  dash_roots_options o =
      acc_options(DASH_METHOD_EVD, p, DASH_SCALING_POWER_ITER, 0.0);
  ck_assert_int_eq(dash_roots_compute(x, a, 2, b, &o, info, NULL), 0);
  for (size_t r = 0; r < b; r++)
    for (size_t c = 0; c < b; c++) {
      double want = r == c ? ref_root_of(diag[r], p) : 0.0;
      /* fp32 rounding of λ^(-1/p) and of the back-transformation. */
      ck_assert_double_eq_tol(x[r * b + c], want, 1e-6);
      ck_assert_double_eq_tol(x[nn + r * b + c], 0.0, 1e-30);
    }
  ck_assert_int_eq(info[0].status, DASH_BLOCK_OK);
  ck_assert_int_eq(info[1].status, DASH_BLOCK_OK);
}
END_TEST

/* EVD reads only the lower triangle: finite garbage in the strict upper
 * triangle changes nothing, bit for bit, since the EVD never sees it. */
START_TEST(test_roots_evd_reads_lower_triangle_only) {
  stack *s = method_stack(4);
  size_t b = s->b, nn = b * b, total = s->n * nn;
  float *junk = floats(total, 0.0f);
  float *x1 = floats(total, 0.0f), *x2 = floats(total, 1.0f);
  memcpy(junk, s->a, total * sizeof(float));
  for (size_t i = 0; i < s->n; i++)
    for (size_t r = 0; r < b; r++)
      for (size_t c = r + 1; c < b; c++)
        junk[i * nn + r * b + c] = 1e3f * (float)(r + 2 * c + 1);
  dash_roots_options o =
      acc_options(DASH_METHOD_EVD, 4, DASH_SCALING_POWER_ITER, s->eps);
  o.threads = 1;
  ck_assert_int_eq(dash_roots_compute(x1, s->a, s->n, b, &o, NULL, NULL), 0);
  ck_assert_int_eq(dash_roots_compute(x2, junk, s->n, b, &o, NULL, NULL), 0);
  ck_assert_mem_eq(x1, x2, total * sizeof(float));
  free(junk);
  free(x1);
  free(x2);
  stack_free(s);
}
END_TEST

/* A block holding NaN or Inf reports NONFINITE_INPUT and its output keeps
 * what was there (a sentinel, checked bit for bit); the other blocks are
 * computed as usual. Block 1 has one NaN in its upper triangle only (so
 * even EVD, which reads the lower triangle, must look at the whole
 * block), block 3 a symmetric pair of +Inf, block 4 one −Inf on the
 * diagonal. Loop index: method (5). */
START_TEST(test_roots_nonfinite_block_is_left_untouched) {
  dash_method m = kMethods[_i];
  const size_t n = 6, b = 32, nn = 32 * 32;
  const float sentinel = -4242.5f;
  const int p = 4;
  stack *s = stack_with_nonfinite_blocks();
  float *x = floats(n * nn, sentinel);
  dash_block_info info[6];
  dash_roots_report rep;
  dash_roots_options o = acc_options(m, p, DASH_SCALING_POWER_ITER, s->eps);
  ck_assert_int_eq(dash_roots_compute(x, s->a, n, b, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_NONFINITE_INPUT], 3);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], 3);
  for (size_t i = 0; i < n; i++) {
    if (i == 1 || i == 3 || i == 4) {
      ck_assert_int_eq(info[i].status, DASH_BLOCK_NONFINITE_INPUT);
      for (size_t k = 0; k < nn; k++)
        ck_assert_msg(memcmp(&x[i * nn + k], &sentinel, sizeof(float)) == 0,
                      "block %zu element %zu was overwritten with %g", i, k,
                      x[i * nn + k]);
    } else {
      check_converged_info(&info[i], rep.method, &o);
      double tol = rep.method == DASH_METHOD_CHEBYSHEV
                       ? cheb_tol(p, o.scaling)
                       : fp32_tol(s->kappa[i], p, b) + o.tol;
      check_block("beside non-finite blocks", s, i, x, tol);
    }
  }
  free(x);
  stack_free(s);
}
END_TEST

/* A root other than 2 or 4 leaves AUTO only EVD (the one method that
 * takes it), and the result is right. */
START_TEST(test_roots_auto_resolves_root_3_to_evd) {
  stack *s = method_stack(3);
  float *x = floats(s->n * s->b * s->b, NAN);
  dash_block_info info[METHOD_N];
  dash_roots_report rep;
  dash_roots_options o =
      acc_options(DASH_METHOD_AUTO, 3, DASH_SCALING_POWER_ITER, s->eps);
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  ck_assert_int_eq(dash_roots_plan_options(plan)->method, DASH_METHOD_EVD);
  ck_assert_int_eq(dash_roots_execute(plan, x, s->a, info, &rep), 0);
  ck_assert_int_eq(rep.method, DASH_METHOD_EVD);
  for (size_t i = 0; i < s->n; i++)
    check_block("auto p=3", s, i, x, fp32_tol(s->kappa[i], 3, s->b));
  dash_roots_plan_destroy(plan);
  free(x);
  stack_free(s);
}
END_TEST

/* The plan reports the options it was made with, AUTO resolved; NULL
 * options mean the defaults. */
START_TEST(test_roots_plan_options_are_resolved) {
  static const dash_roots_options defaults = DASH_ROOTS_OPTIONS_INIT;
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 2, 8, NULL), 0);
  const dash_roots_options *got = dash_roots_plan_options(plan);
  ck_assert_ptr_nonnull(got);
  ck_assert_uint_eq(got->version, DASH_ROOTS_OPTIONS_VERSION);
  ck_assert_int_eq(got->method, defaults.method);
  ck_assert_int_eq(got->scaling, defaults.scaling);
  ck_assert_int_eq(got->backend, DASH_BACKEND_CPU);
  ck_assert_int_eq(got->root, 4);
  ck_assert_double_eq(got->eps, 1e-10);
  ck_assert_int_eq(got->max_steps, 10);
  ck_assert_double_eq(got->tol, 1e-3);
  ck_assert_int_eq(got->power_steps, 10);
  ck_assert_double_eq(got->power_scale, 2.0);
  ck_assert_int_eq(got->power_vectors, 16);
  ck_assert_int_eq(got->cheb_degree, 20);
  ck_assert_int_eq(got->fallback, DASH_FALLBACK_DIVERGED);
  dash_roots_plan_destroy(plan);

  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.method = DASH_METHOD_AUTO;
  o.backend = DASH_BACKEND_AUTO;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 2, 8, &o), 0);
  got = dash_roots_plan_options(plan);
  ck_assert_int_ne(got->method, DASH_METHOD_AUTO);
  ck_assert_ptr_nonnull(dash_method_name(got->method));
  /* No device here, so AUTO can only be the CPU. */
  if (!dash_roots_cuda_available())
    ck_assert_int_eq(got->backend, DASH_BACKEND_CPU);
  ck_assert_int_ne(got->backend, DASH_BACKEND_AUTO);
  dash_roots_plan_destroy(plan);
  ck_assert_ptr_null(dash_roots_plan_options(NULL));
  dash_roots_plan_destroy(NULL);
}
END_TEST

/* ------------------------------------------------------------------ */
/* bad input                                                            */
/* ------------------------------------------------------------------ */

/* A pointer no allocator returns, to see that a failed call leaves its
 * out-parameter alone. */
static char untouched_mark;
#define UNTOUCHED ((dash_roots_plan *)(void *)&untouched_mark)

static void expect_plan_fails(size_t n, size_t b, const dash_roots_options *o,
                              int want, const char *field) {
  dash_roots_plan *plan = UNTOUCHED;
  int rc = dash_roots_plan_create(&plan, n, b, o);
  printf("  N=%zu B=%zu: %s, \"%s\"\n", n, b, dash_status_name(rc),
         dash_last_error());
  ck_assert_msg(rc == want, "N=%zu B=%zu gave %s, want %s", n, b,
                dash_status_name(rc), dash_status_name(want));
  ck_assert_ptr_eq(plan, UNTOUCHED);
  ck_assert_str_ne(dash_last_error(), "");
  if (field != NULL)
    ck_assert_msg(strstr(dash_last_error(), field) != NULL,
                  "last error \"%s\" does not name %s", dash_last_error(),
                  field);
}

START_TEST(test_roots_rejects_empty_shapes) {
  expect_plan_fails(0, 8, NULL, DASH_E_INVALID, "num_blocks");
  expect_plan_fails(8, 0, NULL, DASH_E_INVALID, "block_size");
  expect_plan_fails(0, 0, NULL, DASH_E_INVALID, NULL);
  float in[1] = {1.0f}, out[1] = {7.0f};
  ck_assert_int_eq(dash_roots_compute(out, in, 0, 1, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_float_eq(out[0], 7.0f);
}
END_TEST

/* Oversized shapes fail with TOO_LARGE before anything is allocated: had
 * the plan tried to allocate 2^24 blocks of 16384² floats (2^54 bytes) it
 * would have failed with NOMEM, or taken the machine down. */
START_TEST(test_roots_rejects_oversized_shapes) {
  const size_t max_n = DASH_ROOTS_MAX_BLOCKS, max_b = DASH_ROOTS_MAX_BLOCK_SIZE;
  expect_plan_fails(max_n + 1, 1, NULL, DASH_E_TOO_LARGE, "num_blocks");
  expect_plan_fails(1, max_b + 1, NULL, DASH_E_TOO_LARGE, "block_size");
  expect_plan_fails(max_n, max_b, NULL, DASH_E_TOO_LARGE, NULL);
  expect_plan_fails((size_t)1 << 24, 16384, NULL, DASH_E_TOO_LARGE, NULL);
  /* 65 blocks of 16384² floats are 65 GiB, one block over 64 GiB. */
  expect_plan_fails(DASH_ROOTS_MAX_BYTES / (4ull * max_b * max_b) + 1, max_b,
                    NULL, DASH_E_TOO_LARGE, NULL);
  expect_plan_fails(SIZE_MAX, SIZE_MAX, NULL, DASH_E_TOO_LARGE, NULL);
  float in[1] = {1.0f}, out[1] = {7.0f};
  ck_assert_int_eq(
      dash_roots_compute(out, in, (size_t)1 << 24, 16384, NULL, NULL, NULL),
      DASH_E_TOO_LARGE);
  ck_assert_float_eq(out[0], 7.0f);
}
END_TEST

/* Each bad option is rejected with INVALID (or UNSUPPORTED for a root the
 * method lacks), and dash_last_error() names the field. */
struct bad_option {
  const char *field;
  int want;
  void (*apply)(dash_roots_options *o);
};

#define BAD(name, stmt)                           \
  static void bad_##name(dash_roots_options *o) { \
    stmt;                                         \
  }
BAD(version0, o->version = 0)
BAD(version2, o->version = DASH_ROOTS_OPTIONS_VERSION + 1)
BAD(method, o->method = (dash_method)99)
BAD(method_neg, o->method = (dash_method)-1)
BAD(scaling, o->scaling = (dash_scaling)7)
BAD(backend, o->backend = (dash_backend)9)
BAD(precision, o->precision = (dash_precision)12)
BAD(fallback, o->fallback = (dash_fallback)5)
BAD(fallback_neg, o->fallback = (dash_fallback)-1)
BAD(root0, o->root = 0)
BAD(root_neg, o->root = -2)
BAD(root65, (o->root = 65, o->method = DASH_METHOD_EVD))
BAD(eps_neg, o->eps = -1e-6)
BAD(eps_nan, o->eps = NAN)
BAD(eps_inf, o->eps = INFINITY)
BAD(tol_nan, o->tol = NAN)
BAD(tol_neg, o->tol = -1.0)
BAD(max_steps0, o->max_steps = 0)
BAD(max_steps_big, o->max_steps = 1001)
BAD(power_steps0, o->power_steps = 0)
BAD(power_scale, o->power_scale = 0.5)
BAD(power_scale_nan, o->power_scale = NAN)
BAD(power_vectors0, o->power_vectors = 0)
BAD(power_vectors_big, o->power_vectors = 257)
BAD(cheb_degree0, o->cheb_degree = 0)
BAD(cheb_degree_big, o->cheb_degree = 201)
BAD(threads_neg, o->threads = -1)
BAD(stream_priority, o->stream_priority = 2)
BAD(stream_priority_neg, o->stream_priority = -1)
BAD(ndb_root3, (o->method = DASH_METHOD_NEWTON_DB, o->root = 3))
BAD(cn_root8, (o->method = DASH_METHOD_COUPLED_NEWTON, o->root = 8))
BAD(cheb_root1, (o->method = DASH_METHOD_CHEBYSHEV, o->root = 1))
#undef BAD

static const struct bad_option kBadOptions[] = {
    {"version", DASH_E_INVALID, bad_version0},
    {"version", DASH_E_INVALID, bad_version2},
    {"method", DASH_E_INVALID, bad_method},
    {"method", DASH_E_INVALID, bad_method_neg},
    {"scaling", DASH_E_INVALID, bad_scaling},
    {"backend", DASH_E_INVALID, bad_backend},
    {"precision", DASH_E_INVALID, bad_precision},
    {"fallback", DASH_E_INVALID, bad_fallback},
    {"fallback", DASH_E_INVALID, bad_fallback_neg},
    {"root", DASH_E_INVALID, bad_root0},
    {"root", DASH_E_INVALID, bad_root_neg},
    {"root", DASH_E_INVALID, bad_root65},
    {"eps", DASH_E_INVALID, bad_eps_neg},
    {"eps", DASH_E_INVALID, bad_eps_nan},
    {"eps", DASH_E_INVALID, bad_eps_inf},
    {"tol", DASH_E_INVALID, bad_tol_nan},
    {"tol", DASH_E_INVALID, bad_tol_neg},
    {"max_steps", DASH_E_INVALID, bad_max_steps0},
    {"max_steps", DASH_E_INVALID, bad_max_steps_big},
    {"power_steps", DASH_E_INVALID, bad_power_steps0},
    {"power_scale", DASH_E_INVALID, bad_power_scale},
    {"power_scale", DASH_E_INVALID, bad_power_scale_nan},
    {"power_vectors", DASH_E_INVALID, bad_power_vectors0},
    {"power_vectors", DASH_E_INVALID, bad_power_vectors_big},
    {"cheb_degree", DASH_E_INVALID, bad_cheb_degree0},
    {"cheb_degree", DASH_E_INVALID, bad_cheb_degree_big},
    {"threads", DASH_E_INVALID, bad_threads_neg},
    {"stream_priority", DASH_E_INVALID, bad_stream_priority},
    {"stream_priority", DASH_E_INVALID, bad_stream_priority_neg},
    {"root", DASH_E_UNSUPPORTED, bad_ndb_root3},
    {"root", DASH_E_UNSUPPORTED, bad_cn_root8},
    {"root", DASH_E_UNSUPPORTED, bad_cheb_root1},
};
#define BAD_OPTION_COUNT (int)(sizeof(kBadOptions) / sizeof(kBadOptions[0]))

/* A caller built against version 1 of the options passes a struct that
 * ends before stream_priority: the library reads no further (here the
 * bytes after it hold garbage) and uses the default there. */
START_TEST(test_roots_reads_version_1_options) {
  struct {
    dash_roots_options o;
    char tail[16];
  } v1;
  memset(&v1, 0xa5, sizeof(v1));
  dash_roots_options init = DASH_ROOTS_OPTIONS_INIT;
  memcpy(&v1.o, &init, offsetof(dash_roots_options, stream_priority));
  v1.o.version = 1;
  v1.o.method = DASH_METHOD_EVD;
  dash_roots_plan *plan = NULL;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 2, 8, &v1.o), 0);
  const dash_roots_options *got = dash_roots_plan_options(plan);
  ck_assert_uint_eq(got->version, DASH_ROOTS_OPTIONS_VERSION);
  ck_assert_int_eq(got->method, DASH_METHOD_EVD);
  ck_assert_int_eq(got->stream_priority, 0);
  ck_assert_int_eq(got->device_only, 0);
  dash_roots_plan_destroy(plan);
}
END_TEST

START_TEST(test_roots_rejects_bad_options) {
  const struct bad_option *bad = &kBadOptions[_i];
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  bad->apply(&o);
  printf("  bad %s:", bad->field);
  expect_plan_fails(2, 8, &o, bad->want, bad->field);
  /* The one-shot call fails the same way and writes nothing. */
  float in[2 * 64] = {0}, out[2 * 64];
  for (size_t k = 0; k < 2 * 64; k++)
    out[k] = 7.0f;
  ck_assert_int_eq(dash_roots_compute(out, in, 2, 8, &o, NULL, NULL),
                   bad->want);
  for (size_t k = 0; k < 2 * 64; k++)
    ck_assert_float_eq(out[k], 7.0f);
}
END_TEST

/* No CUDA device here: asking for the CUDA backend fails cleanly, with
 * NO_DEVICE (or UNSUPPORTED from a build without CUDA) and a message. */
START_TEST(test_roots_cuda_backend_without_device_fails) {
  if (dash_roots_cuda_available()) {
    printf("  a CUDA device is present; nothing to test here\n");
    return;
  }
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  dash_roots_plan *plan = UNTOUCHED;
  int rc = dash_roots_plan_create(&plan, 2, 8, &o);
  printf("  cuda: %s, \"%s\"\n", dash_status_name(rc), dash_last_error());
  ck_assert_int_lt(rc, 0);
  ck_assert(rc == DASH_E_NO_DEVICE || rc == DASH_E_UNSUPPORTED);
  ck_assert_ptr_eq(plan, UNTOUCHED);
  ck_assert_str_ne(dash_last_error(), "");
  /* Nor is there a device to describe, or a device stack to compute. */
  char text[64] = "untouched";
  ck_assert_int_eq(dash_roots_cuda_describe(text, sizeof(text)),
                   DASH_E_NO_DEVICE);
  ck_assert_str_eq(text, "");
  ck_assert_int_eq(dash_roots_cuda_describe(NULL, 8), DASH_E_INVALID);
  o.backend = DASH_BACKEND_CPU;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 2, 8, &o), 0);
  float in[128] = {0}, out[128];
  ck_assert_int_eq(dash_roots_execute_device(plan, out, in, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "backend cuda"));
  dash_roots_plan_destroy(plan);
}
END_TEST

/* execute() refuses NULL buffers and overlapping in/out, and accepts
 * adjacent ones. */
START_TEST(test_roots_execute_rejects_null_and_overlap) {
  const size_t n = 2, b = 4, total = 32;
  float *buf = floats(3 * total, 0.0f);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < b; k++)
      buf[i * b * b + k * b + k] = 1.0f;
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, NULL), 0);
  ck_assert_int_eq(dash_roots_execute(NULL, buf + total, buf, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute(plan, NULL, buf, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute(plan, buf + total, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute(plan, buf, buf, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_str_ne(dash_last_error(), "");
  /* Partial overlaps, either way round, by as little as one float. */
  ck_assert_int_eq(dash_roots_execute(plan, buf + 1, buf, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute(plan, buf + total - 1, buf, NULL, NULL),
                   DASH_E_INVALID);
  memcpy(buf + total, buf, total * sizeof(float));
  ck_assert_int_eq(dash_roots_execute(plan, buf, buf + total - 1, NULL, NULL),
                   DASH_E_INVALID);
  /* Adjacent buffers do not overlap. */
  memcpy(buf + total, buf, total * sizeof(float));
  ck_assert_int_eq(dash_roots_execute(plan, buf + total, buf, NULL, NULL), 0);
  /* The identity's root is the identity. */
  for (size_t k = 0; k < total; k++)
    ck_assert_float_eq_tol(buf[total + k], buf[k], 1e-5f);
  dash_roots_plan_destroy(plan);
  ck_assert_int_eq(dash_roots_plan_create(NULL, n, b, NULL), DASH_E_INVALID);
  free(buf);
}
END_TEST

/* Every enum value has a name that parses back to it; long names parse
 * too; unknown values have no name; unknown names are INVALID and leave
 * the out-parameter alone. */
START_TEST(test_roots_enum_names_round_trip) {
  static const struct {
    int value;
    const char *name, *alias;
  } methods[] = {{DASH_METHOD_AUTO, "auto", NULL},
                 {DASH_METHOD_NEWTON_DB, "ndb", "newton_db"},
                 {DASH_METHOD_COUPLED_NEWTON, "cn", "coupled_newton"},
                 {DASH_METHOD_EVD, "evd", NULL},
                 {DASH_METHOD_CHEBYSHEV, "cheb", "chebyshev"}},
    scalings[] = {{DASH_SCALING_POWER_ITER, "pi", NULL},
                  {DASH_SCALING_POWER_ITER_MULTI, "pi-multi", NULL},
                  {DASH_SCALING_FROBENIUS, "fro", NULL}},
    backends[] = {{DASH_BACKEND_AUTO, "auto", NULL},
                  {DASH_BACKEND_CPU, "cpu", NULL},
                  {DASH_BACKEND_CUDA, "cuda", NULL}},
    precisions[] = {{DASH_PRECISION_FP32, "fp32", NULL},
                    {DASH_PRECISION_TF32, "tf32", NULL},
                    {DASH_PRECISION_BF16, "bf16", NULL},
                    {DASH_PRECISION_FP16, "fp16", NULL}},
    statuses[] = {{DASH_BLOCK_OK, "OK", NULL},
                  {DASH_BLOCK_NONFINITE_INPUT, "NONFINITE_INPUT", NULL},
                  {DASH_BLOCK_NOT_CONVERGED, "NOT_CONVERGED", NULL},
                  {DASH_BLOCK_FALLBACK_EVD, "FALLBACK_EVD", NULL}};

  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    dash_method v = (dash_method)-1;
    ck_assert_str_eq(dash_method_name(methods[i].value), methods[i].name);
    ck_assert_int_eq(dash_method_parse(methods[i].name, &v), 0);
    ck_assert_int_eq(v, methods[i].value);
    if (methods[i].alias) {
      v = (dash_method)-1;
      ck_assert_int_eq(dash_method_parse(methods[i].alias, &v), 0);
      ck_assert_int_eq(v, methods[i].value);
    }
  }
  for (size_t i = 0; i < sizeof(scalings) / sizeof(scalings[0]); i++) {
    dash_scaling v = (dash_scaling)-1;
    ck_assert_str_eq(dash_scaling_name(scalings[i].value), scalings[i].name);
    ck_assert_int_eq(dash_scaling_parse(scalings[i].name, &v), 0);
    ck_assert_int_eq(v, scalings[i].value);
  }
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
    dash_backend v = (dash_backend)-1;
    ck_assert_str_eq(dash_backend_name(backends[i].value), backends[i].name);
    ck_assert_int_eq(dash_backend_parse(backends[i].name, &v), 0);
    ck_assert_int_eq(v, backends[i].value);
  }
  for (size_t i = 0; i < sizeof(precisions) / sizeof(precisions[0]); i++) {
    dash_precision v = (dash_precision)-1;
    ck_assert_str_eq(dash_precision_name(precisions[i].value),
                     precisions[i].name);
    ck_assert_int_eq(dash_precision_parse(precisions[i].name, &v), 0);
    ck_assert_int_eq(v, precisions[i].value);
  }
  for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
    ck_assert_str_eq(dash_block_status_name(statuses[i].value),
                     statuses[i].name);

  ck_assert_ptr_null(dash_method_name((dash_method)5));
  ck_assert_ptr_null(dash_method_name((dash_method)-1));
  ck_assert_ptr_null(dash_scaling_name((dash_scaling)3));
  ck_assert_ptr_null(dash_backend_name((dash_backend)3));
  ck_assert_ptr_null(dash_precision_name((dash_precision)4));
  ck_assert_ptr_null(dash_block_status_name(DASH_BLOCK_STATUS_COUNT));
  ck_assert_ptr_null(dash_block_status_name((dash_block_status)-1));

  dash_method m = DASH_METHOD_CHEBYSHEV;
  dash_scaling s = DASH_SCALING_FROBENIUS;
  dash_backend be = DASH_BACKEND_CUDA;
  dash_precision pr = DASH_PRECISION_BF16;
  ck_assert_int_eq(dash_method_parse("newton", &m), DASH_E_INVALID);
  ck_assert_int_eq(dash_method_parse("", &m), DASH_E_INVALID);
  ck_assert_int_eq(dash_method_parse(NULL, &m), DASH_E_INVALID);
  ck_assert_int_eq(dash_method_parse("NDB", &m), DASH_E_INVALID);
  ck_assert_int_eq(dash_scaling_parse("power", &s), DASH_E_INVALID);
  ck_assert_int_eq(dash_backend_parse("gpu0", &be), DASH_E_INVALID);
  ck_assert_int_eq(dash_precision_parse("fp64", &pr), DASH_E_INVALID);
  ck_assert_str_ne(dash_last_error(), "");
  ck_assert_int_eq(m, DASH_METHOD_CHEBYSHEV);
  ck_assert_int_eq(s, DASH_SCALING_FROBENIUS);
  ck_assert_int_eq(be, DASH_BACKEND_CUDA);
  ck_assert_int_eq(pr, DASH_PRECISION_BF16);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *roots_suite(void) {
  Suite *s = suite_create("roots");
  TCase *tc;

  tc = tcase_create("core");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_roots_reference_helpers_agree);
  tcase_add_loop_test(tc, test_roots_methods_match_reference, 0, 30);
  tcase_add_loop_test(tc, test_roots_evd_any_root_and_ill_conditioned, 0, 7);
  tcase_add_test(tc, test_roots_power_iter_estimates_lambda_max);
  tcase_add_test(tc, test_roots_frobenius_scale_is_reported);
  tcase_add_loop_test(tc, test_roots_execute_is_deterministic, 0, 2);
  tcase_add_loop_test(tc, test_roots_plan_reused_across_stacks, 0, 2);
  tcase_add_loop_test(tc, test_roots_compute_equals_plan_execute, 0, 5);
  tcase_add_loop_test(tc, test_roots_thread_count_does_not_change_result, 0, 4);
  tcase_add_test(tc, test_roots_plan_options_are_resolved);
  suite_add_tcase(s, tc);

  tc = tcase_create("methods");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_roots_power_iter_scaling_beats_frobenius, 0, 2);
  tcase_add_loop_test(tc, test_roots_newton_exits_early_when_converged, 0, 4);
  tcase_add_loop_test(tc, test_roots_newton_tol_zero_runs_every_step, 0, 4);
  tcase_add_loop_test(tc, test_roots_unconverged_block_status_and_fallback, 0,
                      4);
  tcase_add_loop_test(tc, test_roots_chebyshev_error_falls_with_degree, 0, 2);
  tcase_add_test(tc, test_roots_auto_resolves_root_3_to_evd);
  suite_add_tcase(s, tc);

  tc = tcase_create("edge");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_roots_scalar_block, 0, 10);
  tcase_add_loop_test(tc, test_roots_scalar_block_evd_roots, 0, 3);
  tcase_add_loop_test(tc, test_roots_multiples_of_identity, 0, 10);
  tcase_add_loop_test(tc, test_roots_rank_deficient_with_ridge, 0, 8);
  tcase_add_loop_test(tc, test_roots_evd_pseudo_inverse_without_ridge, 0, 3);
  tcase_add_test(tc, test_roots_evd_reads_lower_triangle_only);
  tcase_add_loop_test(tc, test_roots_nonfinite_block_is_left_untouched, 0, 5);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad input");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_test(tc, test_roots_rejects_empty_shapes);
  tcase_add_test(tc, test_roots_rejects_oversized_shapes);
  tcase_add_loop_test(tc, test_roots_rejects_bad_options, 0, BAD_OPTION_COUNT);
  tcase_add_test(tc, test_roots_reads_version_1_options);
  tcase_add_test(tc, test_roots_cuda_backend_without_device_fails);
  tcase_add_test(tc, test_roots_execute_rejects_null_and_overlap);
  tcase_add_test(tc, test_roots_enum_names_round_trip);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* Line-buffered, so a test's observations reach the log even when its
   * forked process ends at a failed assertion. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  SRunner *sr = srunner_create(roots_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
