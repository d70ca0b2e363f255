/* Unit tests of the CUDA backend of roots.h (kernels/cuda/) against the
 * float64 references of roots_ref.c, which shares no code with kernels/,
 * and against the CPU backend on the same input.
 *
 * Accuracy is the relative Frobenius error ‖X − X_ref‖_F / ‖X_ref‖_F in
 * double. X_ref is the float64 root of the float32 input the library
 * received (dsyevd), so that the rounding of the input is not counted
 * against the library; every block is also checked against the root of
 * its exact known spectrum (ref_known_block), which differs from X_ref by
 * at most 2·u·√B·κ/p (test_roots_reference_helpers_agree in test_roots.c
 * asserts that bound), so that is added to the tolerance there. Every
 * observed error is printed, so `ctest -V` shows the margins.
 *
 * Without a device the binary prints "skipped: no CUDA device" and exits
 * 77. DASH_TEST_BACKEND=cpu runs every test except the "device" ones on
 * the CPU backend instead, which computes in fp32 whatever the precision
 * asked: that checks the tests' own references, options and tolerances
 * on a machine without a GPU. It is not registered with ctest (test_roots
 * covers the CPU backend).
 *
 * CUDA cannot be used in a process forked after its parent initialized
 * CUDA (cuInit answers CUDA_ERROR_NOT_INITIALIZED there), and main() has
 * to ask for a device before the tests run, so on a GPU the tests run in
 * the test process itself (CK_NOFORK): a failed assertion ends its test
 * and the next one runs, but a crash ends the binary, and ctest's TIMEOUT
 * is the only timeout. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DASH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "dash/roots.h"
#include "roots_ref.h"
#include "roots_stack.h"

/* Seconds a test may take before Check kills it when tests are forked
 * (DASH_TEST_BACKEND=cpu). The slowest, a B = 256 NewtonDB stack run on
 * the CPU, takes a few seconds on two cores. */
#define TEST_TIMEOUT_S 120

/* The backend under test: CUDA, or the CPU with DASH_TEST_BACKEND=cpu.
 * Set once in main() before any test runs. */
static dash_backend g_backend = DASH_BACKEND_CUDA;

static int cuda_mode(void) {
  return g_backend == DASH_BACKEND_CUDA;
}

static const dash_precision kPrecisions[] = {
    DASH_PRECISION_FP32, DASH_PRECISION_TF32, DASH_PRECISION_BF16,
    DASH_PRECISION_FP16};

/* The four methods the backend implements, in loop-index order. */
static const dash_method kMethods[] = {DASH_METHOD_NEWTON_DB,
                                       DASH_METHOD_COUPLED_NEWTON,
                                       DASH_METHOD_EVD, DASH_METHOD_CHEBYSHEV};

static int is_iterative(dash_method m) {
  return m == DASH_METHOD_NEWTON_DB || m == DASH_METHOD_COUPLED_NEWTON;
}

/* NewtonDB runs twice for p = 4 (square root, then the inverse square
 * root of that), each run up to max_steps. */
static int newton_runs(dash_method m, int p) {
  return m == DASH_METHOD_NEWTON_DB && p == 4 ? 2 : 1;
}

/* ------------------------------------------------------------------ */
/* Tolerances                                                           */
/* ------------------------------------------------------------------ */

/* Unit roundoff of the operand format of the matrix products: fp32 2^-24;
 * tf32 and fp16 keep 10 stored mantissa bits, 2^-11; bf16 keeps 7,
 * 2^-8. */
static double unit_roundoff(dash_precision pr) {
  switch (pr) {
    case DASH_PRECISION_TF32:
    case DASH_PRECISION_FP16:
      return 0x1p-11;
    case DASH_PRECISION_BF16:
      return 0x1p-8;
    default:
      return REF_U32;
  }
}

/* The fp32 bound of test_roots.c, for the same reasons: a backward-stable
 * fp32 computation returns the exact root of a matrix perturbed by
 * ‖δA‖ ≲ c·u·‖A‖, and the p-th inverse root turns the relative
 * perturbation c·u·κ of the smallest eigenvalue into c·u·κ/p. c = 4√B:
 * the rounding errors of a length-B dot product grow like √B, and 4
 * covers the few products of one Newton step (or the reduction and
 * back-transformation of an EVD). κ is clamped below at 10 so a
 * near-identity block keeps a few ulps of slack. Every precision pays it:
 * the products accumulate in fp32, and so do the scaling and the
 * rescaling of the result. */
static double fp32_tol(double kappa, int p, size_t b) {
  if (kappa < 10.0)
    kappa = 10.0;
  return 4.0 * sqrt((double)b) * REF_U32 * kappa / (double)p;
}

/* What a reduced-precision iteration (NewtonDB, Coupled Newton) adds to
 * fp32_tol: 8·u·√κ·(2/p), u the operand format's unit roundoff.
 *
 * Conditioning, √κ: NewtonDB scales the block by s = 2·λ̂_max and
 * iterates Y → (A/s)^(1/2), Z → (A/s)^(-1/2). Rounding Y and Z to the
 * operand format perturbs each by u relative, elementwise, and the
 * product Z·Y that drives the next step carries that as u·‖Z‖·‖Y‖ =
 * u·√κ (‖Y‖ ≤ √(1/2), ‖Z‖ ≤ √(2κ)); that is why NewtonDB's fp32 residual
 * floor grows like √κ (test_roots.c). Coupled Newton's M and X are
 * conditioned the same way. The p-th root inherits 2/p of the square
 * root's relative error: for p = 4 the second NewtonDB run takes the root
 * of Y, whose condition number is √κ, and halves the first run's error.
 *
 * √B does not enter: rounding an operand is an elementwise relative
 * error, so the relative Frobenius error of a product does not grow with
 * the inner dimension (the accumulation is fp32, paid in fp32_tol).
 * Neither does the number of steps: both iterations are stable, their
 * Fréchet derivative at the fixed point has no eigenvalue above 1, so a
 * step's rounding is carried, not amplified, and a converged 16-bit
 * iterate sits at a fixed point of the rounded map.
 *
 * Calibration: an fp32 CPU emulation of the CPU backend's algorithms (not
 * the GPU code) with every GEMM operand rounded to the format (round to
 * nearest, and also truncation for tf32, as tensor cores may convert)
 * and, for bf16/fp16, every stored iterate (Y, Z, E; M, X, T) rounded to
 * 16 bits, with a bf16 power iteration, on the stacks of
 * test_roots_cuda_methods_match_references, gave errors up to 1.9·u·√κ·
 * (2/p) (NewtonDB on the two-cluster block, κ = 100; 0.4 on the geometric
 * blocks, up to 0.8 on the κ ≈ 4 one), the same at B = 32 and 256, and
 * within 10% from 12 to 40 steps. The constant 8 leaves a factor 4 for what the
 * emulation does not model (the order of the GPU's accumulation, a conversion
 * that truncates, a 16-bit E formed differently). Zero for fp32. */
static double iter_tol(dash_precision pr, double kappa, int p, size_t b) {
  double t = fp32_tol(kappa, p, b);
  if (pr != DASH_PRECISION_FP32)
    t += 8.0 * unit_roundoff(pr) * sqrt(kappa) * 2.0 / (double)p;
  return t;
}

/* EVD runs in fp32 whatever the precision (roots.h: "EVD always in fp32
 * (fp64 for ill-conditioned blocks)"), as the method and as the fallback
 * of a reduced-precision iteration, so fp32_tol applies. Above κ = 1e4 the
 * block is reduced in fp64, which removes the κ·u term: what is left are
 * the fp32 roundings of the eigenvectors and of the rebuild X = W·Wᵀ,
 * about u relative each and independent of κ, which fp32_tol at κ = 10
 * covers (roots.h promises errors near 1e-6 at any κ; the CPU's mixed
 * path shows 6.4e-7 to 6.9e-7 at κ = 1e5, 7× under it for p = 4). */
static double evd_tol(double kappa, int p, size_t b) {
  return fp32_tol(kappa > 1e4 ? 10.0 : kappa, p, b);
}

/* Chebyshev's error is the error of its degree-20 fit, measured in
 * test_roots.c (see cheb_tol there; these are its values). Rounding adds
 * little: Clenshaw's recurrence is stable on [−1, 1] and the fit's
 * coefficients are O(1), so each of its d products adds an error of order
 * u relative to the result, and these add in quadrature with the fit
 * error. The emulation saw up to 3.6·u·(2/p) between the fp16 and fp32
 * results (16-bit storage of b_k), 2.5·u·(2/p) with truncating tf32; we
 * allow 8·u·(2/p). */
static double cheb_tol(dash_precision pr, int p, dash_scaling scaling) {
  int fro = scaling == DASH_SCALING_FROBENIUS;
  double t = p == 2 ? (fro ? 0.14 : 0.08) : (fro ? 0.026 : 0.012);
  if (pr != DASH_PRECISION_FP32)
    t += 8.0 * unit_roundoff(pr) * 2.0 / (double)p;
  return t;
}

/* The tolerance of a block of condition number kappa computed by method
 * `ran` under options o. The iterations stop once their residual is under
 * o->tol; NewtonDB's iterate is then about tol² from the root, but
 * Coupled Newton judges its *updated* M, where X's relative error is
 * still about residual/p (test_roots.c), so tol is added. */
static double block_tol(const dash_roots_options *o, dash_method ran,
                        double kappa, size_t b) {
  switch (ran) {
    case DASH_METHOD_EVD:
      return evd_tol(kappa, o->root, b);
    case DASH_METHOD_CHEBYSHEV:
      return cheb_tol(o->precision, o->root, o->scaling);
    default:
      return iter_tol(o->precision, kappa, o->root, b) + o->tol;
  }
}

/* Options of the accuracy tests in precision pr. fp32 stops on tol =
 * 1e-4: NewtonDB's fp32 floor of ‖I − E‖_F grows like √κ and with B; at
 * κ = 1e2 it is 1.3e-5 at B = 256 (in the emulation's fp32 run, which is
 * the CPU backend's algorithm; the ACC_TOL = 1e-5 of test_roots.c,
 * chosen at B = 64, would not be met), so 1e-4 sits 7× above it, and 40
 * steps are far more than the ≈ 12 per run κ = 1e2 needs (test_roots.c's
 * ACC_MAX_STEPS). The reduced precisions run a fixed number of steps
 * (tol = 0): their floors, 1e-3 to 8e-2 in the emulation (tf32 at B = 256
 * already 4e-3 to 1e-2), are above any tolerance worth asking, and 20
 * steps per run converge κ = 1e2 (the emulation's error did not change
 * from 12 to 40). */
static dash_roots_options prec_options(dash_method m, int p, dash_precision pr,
                                       double eps) {
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = g_backend;
  o.method = m;
  o.root = p;
  o.precision = pr;
  o.eps = eps;
  if (pr == DASH_PRECISION_FP32) {
    o.max_steps = 40;
    o.tol = 1e-4;
  } else {
    o.max_steps = 20;
    o.tol = 0.0;
  }
  return o;
}

/* ------------------------------------------------------------------ */
/* Stacks of known spectrum                                             */
/* ------------------------------------------------------------------ */

static double stack_lambda_max(const stack *s, size_t i) {
  double hi = 0.0;
  for (size_t k = 0; k < s->b; k++)
    if (s->lam[i * s->b + k] > hi)
      hi = s->lam[i * s->b + k];
  return hi + s->eps;
}

/* The stack of the precision tests: four blocks of size b, κ ≤ 1e2 with
 * ε = 1e-6, the conditioning every precision handles:
 *   0: geometric in [1e-2, 1], κ = 1e2;
 *   1: uniform in [50, 200], large magnitude, κ ≤ 4;
 *   2: geometric in [1e-4, 1e-2], small magnitude, where ε shifts the
 *      smallest eigenvalue by 1% (a dropped ε shows in fp32), κ ≈ 1e2;
 *   3: two tight clusters at 1 and 1e-2, half of the spectrum at the
 *      bottom, κ ≈ 1e2: the hardest block for the reduced precisions. */
#define PREC_N 4
#define PREC_EPS 1e-6
static stack *prec_stack(size_t b, int p) {
  double *lam = xcalloc(PREC_N * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 99);
  ref_spectrum_geometric(lam, b, 1e-2, 1.0);
  ref_spectrum_uniform(lam + b, b, 50.0, 200.0, &rng);
  ref_spectrum_geometric(lam + 2 * b, b, 1e-4, 1e-2);
  for (size_t k = 0; k < b; k++)
    lam[3 * b + k] =
        (k < b / 2 ? 1.0 : 1e-2) * (1.0 + 1e-3 * ref_rng_uniform(&rng));
  stack *s = stack_new(PREC_N, b, p, PREC_EPS, lam, 1234 + b);
  free(lam);
  return s;
}

/* The stack of the Chebyshev tests: spectra in [0.3, 1]·scale, the
 * conditioning a degree-20 fit is meant for (κ ≈ 3), as in test_roots.c. */
static stack *cheb_stack(size_t b, int p) {
  double *lam = xcalloc(PREC_N * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 77);
  ref_spectrum_uniform(lam, b, 0.3, 1.0, &rng);
  ref_spectrum_linear(lam + b, b, 0.3, 1.0);
  ref_spectrum_geometric(lam + 2 * b, b, 0.3e3, 1e3);
  ref_spectrum_geometric(lam + 3 * b, b, 0.3e-2, 1e-2);
  stack *s = stack_new(PREC_N, b, p, 1e-10, lam, 4321 + b);
  free(lam);
  return s;
}

static stack *method_stack(dash_method m, size_t b, int p) {
  return m == DASH_METHOD_CHEBYSHEV ? cheb_stack(b, p) : prec_stack(b, p);
}

/* ------------------------------------------------------------------ */
/* Checks shared by the tests                                           */
/* ------------------------------------------------------------------ */

/* Asserts that block i of x is within tol of the root of the float32
 * input, and within tol plus the references' own difference of the root
 * of the exact spectrum. */
static double check_block(const char *what, const stack *s, size_t i,
                          const float *x, double tol) {
  double err_known;
  double err = stack_check_block(what, s, i, x, tol, &err_known);
  double gap = isfinite(s->kappa[i])
                   ? 2.0 * REF_U32 * sqrt((double)s->b) * s->kappa[i] / s->p
                   : INFINITY;
  ck_assert_msg(err_known <= tol + gap,
                "%s: block %zu error vs the exact spectrum %.3g > %.3g", what,
                i, err_known, tol + gap);
  return err;
}

static void check_report(const dash_roots_report *r,
                         const dash_block_info *info, size_t n,
                         dash_method requested, dash_scaling scaling) {
  check_report_of(r, info, n, requested, scaling, g_backend);
}

/* Asserts what a block that came out OK reports about its work. tol = 0
 * runs every step, so the step count is exact; otherwise the backend may
 * check for early exit only every few steps, so it is only bounded. */
static void check_ok_info(const dash_block_info *in, dash_method ran,
                          const dash_roots_options *o) {
  printf("    %s: status %s, %d iterations, residual %.3g, lambda_max %.5g\n",
         dash_method_name(ran), dash_block_status_name(in->status),
         in->iterations, in->residual, in->lambda_max);
  ck_assert_int_eq(in->status, DASH_BLOCK_OK);
  ck_assert(in->lambda_max > 0.0f && isfinite(in->lambda_max));
  if (is_iterative(ran)) {
    int limit = newton_runs(ran, o->root) * o->max_steps;
    ck_assert(in->residual >= 0.0f && isfinite(in->residual));
    if (o->tol == 0.0) {
      ck_assert_int_eq(in->iterations, limit);
    } else {
      ck_assert_int_ge(in->iterations, 1);
      ck_assert_int_le(in->iterations, limit);
      ck_assert(in->residual < o->tol);
    }
  } else {
    ck_assert_int_eq(in->iterations, 0);
    ck_assert(in->residual == 0.0f);
  }
}

/* Runs the stack on the backend under test. */
static void run(const stack *s, const dash_roots_options *o, float *x,
                dash_block_info *info, dash_roots_report *rep) {
  int rc = dash_roots_compute(x, s->a, s->n, s->b, o, info, rep);
  ck_assert_msg(rc == 0, "dash_roots_compute: %s (%s)", dash_status_name(rc),
                dash_last_error());
}

/* The same input on the CPU backend, whose fp32 result is within its own
 * tolerance t_cpu of the reference; the two results then differ by at most
 * (t + t_cpu)·‖X_ref‖ ≤ (t + t_cpu)/(1 − t_cpu)·‖X_cpu‖. Blocks that the
 * backend under test did not compute (non-finite input) are skipped.
 * Nothing to compare when the backend under test is the CPU. */
static void compare_with_cpu(const char *what, const stack *s,
                             const dash_roots_options *o, dash_method ran,
                             const float *x, const dash_block_info *info) {
  if (!cuda_mode())
    return;
  size_t nn = s->b * s->b;
  float *xc = floats(s->n * nn, 0.0f);
  dash_block_info *ic = xcalloc(s->n, sizeof(*ic));
  dash_roots_options c = *o;
  c.backend = DASH_BACKEND_CPU;
  dash_roots_report rc;
  run(s, &c, xc, ic, &rc);
  ck_assert_int_eq(rc.method, ran);
  c.precision = DASH_PRECISION_FP32; /* what the CPU computes in */
  for (size_t i = 0; i < s->n; i++) {
    if (info[i].status == DASH_BLOCK_NONFINITE_INPUT)
      continue;
    ck_assert_int_eq(info[i].status, ic[i].status);
    double t = block_tol(o, ran, s->kappa[i], s->b);
    double tc = block_tol(&c, ran, s->kappa[i], s->b);
    double bound = (t + tc) / (1.0 - tc);
    double d = ref_rel_fro_f(x + i * nn, xc + i * nn, nn);
    printf("  %s: block %zu differs from the CPU by %.3g (bound %.3g)\n", what,
           i, d, bound);
    ck_assert_msg(d <= bound,
                  "%s: block %zu differs from the CPU by %.3g > %.3g", what, i,
                  d, bound);
  }
  free(xc);
  free(ic);
}

/* ------------------------------------------------------------------ */
/* core and precision                                                   */
/* ------------------------------------------------------------------ */

/* Method × root of the accuracy tests; EVD takes any root, so 3 too. */
static const struct {
  dash_method m;
  int p;
} kConfigs[] = {{DASH_METHOD_NEWTON_DB, 2},
                {DASH_METHOD_NEWTON_DB, 4},
                {DASH_METHOD_COUPLED_NEWTON, 2},
                {DASH_METHOD_COUPLED_NEWTON, 4},
                {DASH_METHOD_EVD, 2},
                {DASH_METHOD_EVD, 3},
                {DASH_METHOD_EVD, 4},
                {DASH_METHOD_CHEBYSHEV, 2},
                {DASH_METHOD_CHEBYSHEV, 4}};
#define CONFIG_COUNT (int)(sizeof(kConfigs) / sizeof(kConfigs[0]))

/* Every method × root × precision, on B = 32 and B = 256 stacks of four
 * different spectra, against both references and against the CPU backend.
 * For EVD, which runs in fp32 whatever the precision, the reported λ_max
 * (the largest eigenvalue after the heuristic) is checked too, and the
 * fp32 bound applies to its root. The input's rounding moves λ_max by at most
 * u·‖A‖_F ≤ u·√B·λ_max, the solver by a few u·λ_max more, so we allow
 * 4·√B·u relative. Loop index: precision (4) × config (9); the fp32 ones
 * are the "core" TCase, the others "precision". */
START_TEST(test_roots_cuda_methods_match_references) {
  static const size_t sizes[] = {32, 256};
  dash_precision pr = kPrecisions[_i / CONFIG_COUNT];
  dash_method m = kConfigs[_i % CONFIG_COUNT].m;
  int p = kConfigs[_i % CONFIG_COUNT].p;
  for (size_t si = 0; si < 2; si++) {
    stack *s = method_stack(m, sizes[si], p);
    size_t nn = s->b * s->b;
    dash_roots_options o = prec_options(m, p, pr, s->eps);
    float *x = floats(s->n * nn, NAN);
    dash_block_info info[PREC_N];
    dash_roots_report rep;
    char what[96];
    snprintf(what, sizeof(what), "%s p=%d %s B=%zu", dash_method_name(m), p,
             dash_precision_name(pr), s->b);
    run(s, &o, x, info, &rep);
    check_report(&rep, info, s->n, m, o.scaling);
    for (size_t i = 0; i < s->n; i++) {
      check_ok_info(&info[i], m, &o);
      check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], s->b));
      if (m == DASH_METHOD_EVD) {
        double lmax = stack_lambda_max(s, i);
        double rel = fabs(info[i].lambda_max - lmax) / lmax;
        ck_assert_double_le(rel, 4.0 * sqrt((double)s->b) * REF_U32);
      }
    }
    compare_with_cpu(what, s, &o, m, x, info);
    free(x);
    stack_free(s);
  }
}
END_TEST

/* EVD at κ = 1e5 (and 1e5 over a larger magnitude): the blocks above
 * κ = 1e4 are reduced in fp64, so the error does not grow with κ and
 * evd_tol's κ-free bound applies (1.9e-5/p at B = 64), where the plain
 * fp32 bound would be 0.2/p. The stack is test_roots.c's ill-conditioned
 * one, with ε = 0. EVD ignores the precision, so bf16 must be as accurate.
 * Loop index: root 1, 2, 3, 4 × (fp32, bf16). */
START_TEST(test_roots_cuda_evd_ill_conditioned_is_accurate) {
  static const int roots[] = {1, 2, 3, 4};
  const size_t b = 64;
  int p = roots[_i % 4];
  dash_precision pr = _i / 4 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  double lam[2 * 64];
  ref_spectrum_geometric(lam, b, 1e-5, 1.0);
  ref_spectrum_geometric(lam + b, b, 1e-3, 1e2);
  stack *s = stack_new(2, b, p, 0.0, lam, 31);
  dash_roots_options o = prec_options(DASH_METHOD_EVD, p, pr, s->eps);
  float *x = floats(2 * b * b, NAN);
  dash_block_info info[2];
  dash_roots_report rep;
  char what[64];
  snprintf(what, sizeof(what), "evd p=%d %s kappa 1e5", p,
           dash_precision_name(pr));
  run(s, &o, x, info, &rep);
  check_report(&rep, info, s->n, DASH_METHOD_EVD, o.scaling);
  for (size_t i = 0; i < s->n; i++) {
    check_ok_info(&info[i], DASH_METHOD_EVD, &o);
    check_block(what, s, i, x, evd_tol(s->kappa[i], p, b));
  }
  compare_with_cpu(what, s, &o, DASH_METHOD_EVD, x, info);
  free(x);
  stack_free(s);
}
END_TEST

/* One plan, its workspaces allocated once, executed on two different
 * stacks of its shape and on the first again: each result is right for
 * its own input. For EVD the first stack is ill-conditioned (κ = 1e6, the
 * fp64 path) and the second not, so that state a plan keeps per block
 * between executions is exercised. Loop index: (NewtonDB, EVD) × (fp32,
 * bf16). */
START_TEST(test_roots_cuda_plan_reused_across_executions) {
  dash_method m = _i % 2 ? DASH_METHOD_EVD : DASH_METHOD_NEWTON_DB;
  dash_precision pr = _i / 2 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  const int p = 4;
  const size_t b = 64;
  stack *s1, *s2 = prec_stack(b, p);
  double lam[PREC_N * 64];
  if (m == DASH_METHOD_EVD) {
    for (size_t i = 0; i < PREC_N; i++)
      ref_spectrum_geometric(lam + i * b, b, 1e-6, 1.0);
  } else {
    ref_rng rng;
    ref_rng_seed(&rng, 3);
    for (size_t i = 0; i < PREC_N; i++)
      ref_spectrum_uniform(lam + i * b, b, 0.1, 2.0, &rng);
  }
  s1 = stack_new(PREC_N, b, p, s2->eps, lam, 777);
  float *x = floats(PREC_N * b * b, NAN);
  dash_block_info info[PREC_N];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, s2->eps);
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, PREC_N, b, &o), 0);
  const stack *order[] = {s1, s2, s1};
  for (int k = 0; k < 3; k++) {
    const stack *s = order[k];
    char what[64];
    snprintf(what, sizeof(what), "%s %s reuse #%d", dash_method_name(m),
             dash_precision_name(pr), k);
    ck_assert_int_eq(dash_roots_execute(plan, x, s->a, info, &rep), 0);
    check_report(&rep, info, s->n, m, o.scaling);
    for (size_t i = 0; i < s->n; i++) {
      check_ok_info(&info[i], m, &o);
      check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], b));
    }
  }
  dash_roots_plan_destroy(plan);
  free(x);
  stack_free(s1);
  stack_free(s2);
}
END_TEST

/* The report and the plan's options name what ran: AUTO resolves to EVD
 * (on CUDA, as on the CPU), the backend is the one under test, the
 * precision is kept, blocks_by_status sums to N with or without caller
 * infos; with a device, backend AUTO resolves to CUDA. */
START_TEST(test_roots_cuda_report_names_what_ran) {
  stack *s = prec_stack(32, 4);
  size_t nn = s->b * s->b;
  dash_roots_options o =
      prec_options(DASH_METHOD_AUTO, 4, DASH_PRECISION_BF16, s->eps);
  float *x = floats(s->n * nn, NAN);
  dash_block_info info[PREC_N];
  dash_roots_report rep;
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  const dash_roots_options *got = dash_roots_plan_options(plan);
  ck_assert_int_eq(got->method, DASH_METHOD_EVD);
  ck_assert_int_eq(got->backend, g_backend);
  ck_assert_int_eq(got->precision, DASH_PRECISION_BF16);
  ck_assert_int_eq(got->root, 4);

  ck_assert_int_eq(dash_roots_execute(plan, x, s->a, info, &rep), 0);
  printf("  auto: ran %s on %s in %.3f ms\n", dash_method_name(rep.method),
         dash_backend_name(rep.backend), rep.ms_total);
  check_report(&rep, info, s->n, DASH_METHOD_AUTO, o.scaling);
  ck_assert_int_eq(rep.method, DASH_METHOD_EVD);
  ck_assert_int_eq(rep.max_iterations, 0);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], s->n);
  for (size_t i = 0; i < s->n; i++) {
    check_ok_info(&info[i], DASH_METHOD_EVD, got);
    check_block("auto", s, i, x,
                block_tol(got, DASH_METHOD_EVD, s->kappa[i], s->b));
  }
  /* Without caller infos the report is the same. */
  memset(&rep, 0xff, sizeof(rep));
  ck_assert_int_eq(dash_roots_execute(plan, x, s->a, NULL, &rep), 0);
  ck_assert_int_eq(rep.method, DASH_METHOD_EVD);
  ck_assert_int_eq(rep.backend, g_backend);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], s->n);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_NONFINITE_INPUT] +
                        rep.blocks_by_status[DASH_BLOCK_NOT_CONVERGED] +
                        rep.blocks_by_status[DASH_BLOCK_FALLBACK_EVD],
                    0);
  dash_roots_plan_destroy(plan);

  if (cuda_mode()) {
    o.backend = DASH_BACKEND_AUTO;
    ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
    ck_assert_int_eq(dash_roots_plan_options(plan)->backend, DASH_BACKEND_CUDA);
    ck_assert_int_eq(dash_roots_plan_options(plan)->method, DASH_METHOD_EVD);
    dash_roots_plan_destroy(plan);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* edge                                                                 */
/* ------------------------------------------------------------------ */

/* A block holding NaN or Inf reports NONFINITE_INPUT with every other
 * field 0, and its output keeps what was there (a sentinel, checked bit
 * for bit); the other blocks are right. Block 1 has one NaN in its upper
 * triangle only (so even EVD, which reads the lower triangle, must look
 * at the whole block), block 3 a symmetric pair of +Inf, block 4 one −Inf
 * on the diagonal. Loop index: method (4) × (fp32, bf16). */
START_TEST(test_roots_cuda_nonfinite_block_keeps_its_output) {
  dash_method m = kMethods[_i % 4];
  dash_precision pr = _i / 4 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  const size_t n = 6, b = 32, nn = 32 * 32;
  const float sentinel = -4242.5f;
  const int p = 4;
  stack *s = stack_with_nonfinite_blocks();
  float *x = floats(n * nn, sentinel);
  dash_block_info info[6];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, s->eps);
  char what[64];
  snprintf(what, sizeof(what), "%s %s beside non-finite blocks",
           dash_method_name(m), dash_precision_name(pr));
  run(s, &o, x, info, &rep);
  check_report(&rep, info, n, m, o.scaling);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_NONFINITE_INPUT], 3);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], 3);
  for (size_t i = 0; i < n; i++) {
    if (i == 1 || i == 3 || i == 4) {
      ck_assert_int_eq(info[i].status, DASH_BLOCK_NONFINITE_INPUT);
      ck_assert_int_eq(info[i].iterations, 0);
      ck_assert(info[i].residual == 0.0f);
      ck_assert(info[i].lambda_max == 0.0f);
      for (size_t k = 0; k < nn; k++)
        ck_assert_msg(memcmp(&x[i * nn + k], &sentinel, sizeof(float)) == 0,
                      "block %zu element %zu was overwritten with %g", i, k,
                      x[i * nn + k]);
    } else {
      check_ok_info(&info[i], m, &o);
      check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], b));
    }
  }
  compare_with_cpu(what, s, &o, m, x, info);
  free(x);
  stack_free(s);
}
END_TEST

/* B = 1: x^(-1/p) of scalars from 1e-3 to 1e4, ε = 0, tol = 0 (every
 * step). The tolerance is the block tolerance at κ = 1 and B = 1: a few
 * ulps of fp32 (fp32_tol(10) = 2.4e-6/p, the ≈ 1e-6 of test_roots.c's
 * scalar test), plus the format's rounding for bf16. Loop index: method
 * (4) × root 2, 4 × (fp32, bf16). */
START_TEST(test_roots_cuda_scalar_blocks) {
  static const float vals[] = {4.0f, 0.25f, 1e-3f, 7.0f, 1e4f};
  const size_t n = sizeof(vals) / sizeof(vals[0]);
  dash_method m = kMethods[_i % 4];
  int p = (_i / 4) % 2 ? 4 : 2;
  dash_precision pr = _i / 8 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  float x[5];
  dash_block_info info[5];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, 0.0);
  o.tol = 0.0;
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
  ck_assert_int_eq(dash_roots_compute(x, vals, n, 1, &o, info, &rep), 0);
  check_report(&rep, info, n, m, o.scaling);
  for (size_t i = 0; i < n; i++) {
    double want = pow((double)vals[i], -1.0 / p);
    double rel = fabs(x[i] - want) / want;
    double tol = block_tol(&o, m, 1.0, 1);
    printf("  %s p=%d %s: %g^(-1/%d) = %.9g, want %.9g, rel %.3g tol %.3g\n",
           dash_method_name(m), p, dash_precision_name(pr), vals[i], p, x[i],
           want, rel, tol);
    check_ok_info(&info[i], m, &o);
    ck_assert_double_le(rel, tol);
  }
}
END_TEST

/* An all-zero block with ε = 0 has the pseudo-inverse root 0: every
 * method returns exact zeros for it, as the CPU does (its scale is 0), and
 * reports OK. The identity beside it (ε = 0) gives the identity, within
 * the block tolerance at κ = 1. Loop index: method (4) × precision (4). */
START_TEST(test_roots_cuda_zero_and_identity_blocks) {
  dash_method m = kMethods[_i % 4];
  dash_precision pr = kPrecisions[_i / 4];
  const int p = (_i / 4) % 2 ? 4 : 2;
  const size_t b = 64, nn = 64 * 64;
  float *a = floats(2 * nn, 0.0f), *x = floats(2 * nn, NAN);
  double *want = xcalloc(nn, sizeof(double));
  for (size_t k = 0; k < b; k++) {
    a[nn + k * b + k] = 1.0f;
    want[k * b + k] = 1.0;
  }
  dash_block_info info[2];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, 0.0);
  ck_assert_int_eq(dash_roots_compute(x, a, 2, b, &o, info, &rep), 0);
  check_report(&rep, info, 2, m, o.scaling);
  printf("  %s p=%d %s zero block: status %s\n", dash_method_name(m), p,
         dash_precision_name(pr), dash_block_status_name(info[0].status));
  ck_assert_int_eq(info[0].status, DASH_BLOCK_OK);
  for (size_t k = 0; k < nn; k++)
    ck_assert_msg(x[k] == 0.0f, "zero block: element %zu is %g", k, x[k]);
  double err = ref_rel_fro(x + nn, want, nn);
  double tol = block_tol(&o, m, 1.0, b);
  printf("  %s p=%d %s identity: err %.3g tol %.3g\n", dash_method_name(m), p,
         dash_precision_name(pr), err, tol);
  check_ok_info(&info[1], m, &o);
  ck_assert_double_le(err, tol);
  free(a);
  free(x);
  free(want);
}
END_TEST

/* One block, and 257 blocks of 16 (more than any power-of-two batch or
 * grid dimension a kernel might assume), each with its own spectrum in
 * [0.3, 1]·10^k, k = −3..3 by block (κ ≤ 3.3, which Chebyshev's fit
 * handles too). Loop index: method (4) × N (1, 257) × (fp32, bf16). */
START_TEST(test_roots_cuda_one_and_many_blocks) {
  dash_method m = kMethods[_i % 4];
  size_t n = (_i / 4) % 2 ? 257 : 1;
  dash_precision pr = _i / 8 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  const size_t b = 16, nn = 16 * 16;
  const int p = 4;
  double *lam = xcalloc(n * b, sizeof(double));
  ref_rng rng;
  ref_rng_seed(&rng, 81);
  for (size_t i = 0; i < n; i++) {
    double scale = pow(10.0, (double)(i % 7) - 3.0);
    ref_spectrum_uniform(lam + i * b, b, 0.3 * scale, scale, &rng);
  }
  stack *s = stack_new(n, b, p, 1e-10, lam, 82);
  float *x = floats(n * nn, NAN);
  dash_block_info *info = xcalloc(n, sizeof(*info));
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, s->eps);
  char what[64];
  snprintf(what, sizeof(what), "%s %s N=%zu", dash_method_name(m),
           dash_precision_name(pr), n);
  run(s, &o, x, info, &rep);
  check_report(&rep, info, n, m, o.scaling);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], n);
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < n; i++) {
    double tol = block_tol(&o, m, s->kappa[i], b);
    double err = ref_rel_fro(x + i * nn, s->x_ref + i * nn, nn);
    ck_assert_int_eq(info[i].status, DASH_BLOCK_OK);
    ck_assert_msg(err <= tol, "%s: block %zu relative error %.3g > tol %.3g",
                  what, i, err, tol);
    if (err / tol > worst) {
      worst = err / tol;
      worst_i = i;
    }
  }
  /* The full report for the block nearest its tolerance. */
  check_ok_info(&info[worst_i], m, &o);
  check_block(what, s, worst_i, x, block_tol(&o, m, s->kappa[worst_i], b));
  compare_with_cpu(what, s, &o, m, x, info);
  free(lam);
  free(x);
  free(info);
  stack_free(s);
}
END_TEST

/* Early exit per block: in one stack, blocks of κ ≈ 1, 10, 1e2 and 1e3
 * (B = 64, fp32, tol 1e-3) need very different step counts (NewtonDB's
 * grow like log κ: from x₀ ≥ 1/(2κ) it gains a factor 9/4 per step, see
 * test_roots.c). Each block stops on its own: each is OK, below the
 * tolerance and accurate, none exceeds the limit, and the κ = 1e3 block
 * takes at least 4 steps more than the κ ≈ 1 one, which a stack-wide exit
 * (all blocks running as long as the slowest) would not show. Loop index:
 * NewtonDB p = 2, 4; CN p = 2, 4. */
START_TEST(test_roots_cuda_blocks_exit_early_independently) {
  dash_method m = _i < 2 ? DASH_METHOD_NEWTON_DB : DASH_METHOD_COUPLED_NEWTON;
  int p = _i % 2 ? 4 : 2;
  const size_t n = 4, b = 64, nn = 64 * 64;
  double lam[4 * 64];
  ref_rng rng;
  ref_rng_seed(&rng, 91);
  ref_spectrum_uniform(lam, b, 0.999, 1.0, &rng);
  ref_spectrum_geometric(lam + b, b, 0.1, 1.0);
  ref_spectrum_geometric(lam + 2 * b, b, 1e-2, 1.0);
  ref_spectrum_geometric(lam + 3 * b, b, 1e-3, 1.0);
  stack *s = stack_new(n, b, p, 1e-10, lam, 92);
  float *x = floats(n * nn, NAN);
  dash_block_info info[4];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, DASH_PRECISION_FP32, s->eps);
  o.tol = 1e-3;
  char what[64];
  snprintf(what, sizeof(what), "%s p=%d early exit", dash_method_name(m), p);
  run(s, &o, x, info, &rep);
  check_report(&rep, info, n, m, o.scaling);
  for (size_t i = 0; i < n; i++) {
    printf("  %s block %zu (kappa %.3g): %d steps\n", what, i, s->kappa[i],
           info[i].iterations);
    check_ok_info(&info[i], m, &o);
    check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], b));
  }
  ck_assert_int_ge(info[3].iterations, info[0].iterations + 4);
  ck_assert_int_le(info[0].iterations, info[1].iterations);
  ck_assert_int_le(info[1].iterations, info[3].iterations);
  ck_assert_int_eq(rep.max_iterations, info[3].iterations);
  free(x);
  stack_free(s);
}
END_TEST

/* A block that is not PSD makes the iterations diverge: with an
 * eigenvalue −0.5 beside a spectrum in [0.1, 1], NewtonDB's scalar map
 * w ← w·(3 − w)²/4 sends the scaled eigenvalue w < 0 to −∞, and Coupled
 * Newton's m ← m·(1 + (1 − m)/p)^p grows |m| without bound; either way the
 * residual ends above its first value or non-finite. With the default
 * fallback (diverged) the block is recomputed by EVD, whose heuristic
 * shifts the spectrum up by 0.5 (ε = 1e-3 makes that κ = 1.5e3), and says
 * FALLBACK_EVD; with fallback none it keeps its last iterate (whatever
 * that is: the sentinel is overwritten) and says NOT_CONVERGED. The
 * blocks beside it come out OK and right either way. Loop index:
 * NewtonDB p = 2, 4; CN p = 2, 4 × (fp32, bf16). */
START_TEST(test_roots_cuda_diverging_block_falls_back_to_evd) {
  dash_method m =
      (_i % 4) < 2 ? DASH_METHOD_NEWTON_DB : DASH_METHOD_COUPLED_NEWTON;
  int p = _i % 2 ? 4 : 2;
  dash_precision pr = _i / 4 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  const size_t n = 3, b = 64, nn = 64 * 64;
  const float sentinel = -4242.5f;
  const double eps = 1e-3;
  double lam[3 * 64];
  ref_rng rng;
  ref_rng_seed(&rng, 101);
  ref_spectrum_uniform(lam, b, 0.3, 1.0, &rng);
  ref_spectrum_geometric(lam + b, b - 1, 0.1, 1.0);
  lam[2 * b - 1] = -0.5;
  ref_spectrum_geometric(lam + 2 * b, b, 1e-2, 1.0);
  stack *s = stack_new(n, b, p, eps, lam, 102);
  /* The heuristic's spectrum: shifted by 0.5, plus ε. */
  double kappa_shifted = (1.0 + 0.5 + eps) / eps;
  float *x = floats(n * nn, sentinel);
  dash_block_info info[3];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, eps);
  char what[64];

  ck_assert_int_eq(o.fallback, DASH_FALLBACK_DIVERGED);
  run(s, &o, x, info, &rep);
  check_report(&rep, info, n, m, o.scaling);
  printf("  %s p=%d %s diverging block: status %s, %d steps, residual %g\n",
         dash_method_name(m), p, dash_precision_name(pr),
         dash_block_status_name(info[1].status), info[1].iterations,
         info[1].residual);
  ck_assert_int_eq(info[1].status, DASH_BLOCK_FALLBACK_EVD);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_FALLBACK_EVD], 1);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_OK], 2);
  snprintf(what, sizeof(what), "%s %s fallback evd", dash_method_name(m),
           dash_precision_name(pr));
  check_block(what, s, 1, x, evd_tol(kappa_shifted, p, b));
  for (size_t i = 0; i < n; i += 2) {
    check_ok_info(&info[i], m, &o);
    check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], b));
  }

  for (size_t k = 0; k < n * nn; k++)
    x[k] = sentinel;
  o.fallback = DASH_FALLBACK_NONE;
  run(s, &o, x, info, &rep);
  check_report(&rep, info, n, m, o.scaling);
  printf("  %s p=%d %s fallback none: status %s, %d steps, residual %g\n",
         dash_method_name(m), p, dash_precision_name(pr),
         dash_block_status_name(info[1].status), info[1].iterations,
         info[1].residual);
  ck_assert_int_eq(info[1].status, DASH_BLOCK_NOT_CONVERGED);
  ck_assert_int_ge(info[1].iterations, 1);
  ck_assert_int_le(info[1].iterations, newton_runs(m, p) * o.max_steps);
  ck_assert_uint_eq(rep.blocks_by_status[DASH_BLOCK_NOT_CONVERGED], 1);
  size_t kept = 0;
  for (size_t k = 0; k < nn; k++)
    kept += memcmp(&x[nn + k], &sentinel, sizeof(float)) != 0;
  ck_assert_msg(kept > 0, "the diverged block's iterate was not written");
  snprintf(what, sizeof(what), "%s %s fallback none", dash_method_name(m),
           dash_precision_name(pr));
  for (size_t i = 0; i < n; i += 2) {
    check_ok_info(&info[i], m, &o);
    check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], b));
  }
  free(x);
  stack_free(s);
}
END_TEST

/* The scale estimates. Power iteration, with one and with several start
 * vectors: λ̂ is a Rayleigh quotient, so it never exceeds λ_max(A + εI)
 * beyond rounding, and with a clear gap (λ₂/λ₁ ≤ 0.5, blocks 0–2) ten
 * steps bring it within (λ₂/λ₁)^20 ≈ 1e-6; we ask for 3% (test_roots.c's
 * bounds). CUDA runs the power iteration in bf16 whatever the precision
 * (roots.h), on the block rounded to bf16: that moves λ_max by at most
 * u·‖A‖_F ≤ u·√B·λ_max, and the bf16 copy of the unit vector the product
 * reads changes the quotient by u more, so on CUDA both bounds widen by
 * (√B + 2)·2^-8 (0.039 at B = 64). Frobenius scaling reports ‖A + εI‖_F,
 * within 2·B·u of the double sum (test_roots.c: fp32 sums of B² squares).
 * Loop index: power iteration, power iteration multi. */
START_TEST(test_roots_cuda_scale_estimates) {
  dash_scaling sc =
      _i ? DASH_SCALING_POWER_ITER_MULTI : DASH_SCALING_POWER_ITER;
  const size_t b = 64, n = 4, nn = 64 * 64;
  double lam[4 * 64];
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
  float *x = floats(n * nn, 0.0f);
  dash_block_info info[4];
  double slack =
      cuda_mode() ? (sqrt((double)b) + 2.0) * unit_roundoff(DASH_PRECISION_BF16)
                  : 0.0;
  dash_roots_options o =
      prec_options(DASH_METHOD_NEWTON_DB, 2, DASH_PRECISION_FP32, s->eps);
  o.scaling = sc;
  run(s, &o, x, info, NULL);
  for (size_t i = 0; i < n; i++) {
    double ratio = info[i].lambda_max / stack_lambda_max(s, i);
    printf("  %s block %zu: lambda_hat/lambda_max = %.9f\n",
           dash_scaling_name(sc), i, ratio);
    ck_assert_double_le(ratio, 1.0 + 1e-5 + slack);
    if (i < 3)
      ck_assert_double_ge(ratio, 0.97 - slack);
  }
  o.scaling = DASH_SCALING_FROBENIUS;
  run(s, &o, x, info, NULL);
  for (size_t i = 0; i < n; i++) {
    double f = 0.0;
    for (size_t r = 0; r < b; r++)
      for (size_t c = 0; c < b; c++) {
        double v = s->a[i * nn + r * b + c] + (r == c ? eps : 0.0);
        f += v * v;
      }
    f = sqrt(f);
    double rel = fabs(info[i].lambda_max - f) / f;
    printf("  fro block %zu: reported %.8g, ||A+eps I||_F %.8g, rel %.3g\n", i,
           info[i].lambda_max, f, rel);
    ck_assert_double_le(rel, 2.0 * (double)b * REF_U32);
  }
  free(x);
  stack_free(s);
}
END_TEST

/* The roots are right under both other scalings. Frobenius scaling puts
 * the smallest scaled eigenvalue as low as 1/(κ·√B) instead of 1/(2κ),
 * so the iterations get 40 steps per run (log(800)/log(2.25) ≈ 8 more
 * than with power iteration, see test_roots.c); the error model does not
 * change, since ‖Y‖·‖Z‖ = √κ whatever the scale. Chebyshev keeps its fit
 * tolerance for the scaling. Loop index: (pi-multi, fro) × (fp32, bf16) ×
 * (NewtonDB, CN, Chebyshev) × root 2, 4. */
START_TEST(test_roots_cuda_scalings_give_accurate_roots) {
  static const dash_method ms[] = {
      DASH_METHOD_NEWTON_DB, DASH_METHOD_COUPLED_NEWTON, DASH_METHOD_CHEBYSHEV};
  dash_scaling sc =
      _i % 2 ? DASH_SCALING_FROBENIUS : DASH_SCALING_POWER_ITER_MULTI;
  dash_precision pr = (_i / 2) % 2 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  dash_method m = ms[(_i / 4) % 3];
  int p = _i / 12 ? 4 : 2;
  stack *s = method_stack(m, 64, p);
  size_t nn = s->b * s->b;
  float *x = floats(s->n * nn, NAN);
  dash_block_info info[PREC_N];
  dash_roots_report rep;
  dash_roots_options o = prec_options(m, p, pr, s->eps);
  o.scaling = sc;
  o.max_steps = 40;
  char what[64];
  snprintf(what, sizeof(what), "%s p=%d %s %s", dash_method_name(m), p,
           dash_precision_name(pr), dash_scaling_name(sc));
  run(s, &o, x, info, &rep);
  check_report(&rep, info, s->n, m, sc);
  for (size_t i = 0; i < s->n; i++) {
    check_ok_info(&info[i], m, &o);
    check_block(what, s, i, x, block_tol(&o, m, s->kappa[i], s->b));
  }
  compare_with_cpu(what, s, &o, m, x, info);
  free(x);
  stack_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* device                                                               */
/* ------------------------------------------------------------------ */

#ifdef DASH_HAVE_CUDA

#define CK_CUDA(call)                                                          \
  do {                                                                         \
    cudaError_t e_ = (call);                                                   \
    ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_)); \
  } while (0)

static float *device_floats(size_t count) {
  void *p = NULL;
  CK_CUDA(cudaMalloc(&p, count * sizeof(float)));
  return p;
}

static void to_device(float *d, const float *h, size_t count) {
  CK_CUDA(cudaMemcpy(d, h, count * sizeof(float), cudaMemcpyHostToDevice));
}

static void to_host(float *h, const float *d, size_t count) {
  CK_CUDA(cudaMemcpy(h, d, count * sizeof(float), cudaMemcpyDeviceToHost));
}

/* dash_roots_execute_device on cudaMalloc'd buffers gives what
 * dash_roots_execute gives on the host, with the same plan: the same
 * statuses and step counts, a non-finite block (block 2, one NaN) left
 * untouched in device memory, the other blocks right and within their
 * tolerance of the host result (which they equal bit for bit when the
 * backend is deterministic; printed). Loop index: method (4) × (fp32,
 * bf16). */
START_TEST(test_roots_cuda_execute_device_matches_host) {
  dash_method m = kMethods[_i % 4];
  dash_precision pr = _i / 4 ? DASH_PRECISION_BF16 : DASH_PRECISION_FP32;
  const int p = 4;
  stack *s = method_stack(m, 64, p);
  size_t nn = s->b * s->b, total = s->n * nn;
  const float sentinel = -4242.5f;
  s->a[2 * nn + 3 * s->b + 9] = NAN;
  float *xh = floats(total, sentinel), *xd = floats(total, 0.0f);
  dash_block_info ih[PREC_N], id[PREC_N];
  dash_roots_report rh, rd;
  dash_roots_options o = prec_options(m, p, pr, s->eps);
  dash_roots_plan *plan;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  ck_assert_int_eq(dash_roots_execute(plan, xh, s->a, ih, &rh), 0);

  float *d_in = device_floats(total), *d_out = device_floats(total);
  to_device(d_in, s->a, total);
  for (size_t k = 0; k < total; k++)
    xd[k] = sentinel;
  to_device(d_out, xd, total);
  int rc = dash_roots_execute_device(plan, d_out, d_in, id, &rd, NULL);
  ck_assert_msg(rc == 0, "execute_device: %s (%s)", dash_status_name(rc),
                dash_last_error());
  to_host(xd, d_out, total);
  check_report(&rd, id, s->n, m, o.scaling);
  ck_assert_int_eq(rd.max_iterations, rh.max_iterations);
  ck_assert_mem_eq(rd.blocks_by_status, rh.blocks_by_status,
                   sizeof(rd.blocks_by_status));
  int bitwise = memcmp(xh, xd, total * sizeof(float)) == 0;
  printf("  %s %s: device and host results %s bit for bit\n",
         dash_method_name(m), dash_precision_name(pr),
         bitwise ? "agree" : "differ");
  for (size_t i = 0; i < s->n; i++) {
    ck_assert_int_eq(id[i].status, ih[i].status);
    ck_assert_int_eq(id[i].iterations, ih[i].iterations);
    if (i == 2) {
      ck_assert_int_eq(id[i].status, DASH_BLOCK_NONFINITE_INPUT);
      for (size_t k = 0; k < nn; k++)
        ck_assert(memcmp(&xd[i * nn + k], &sentinel, sizeof(float)) == 0);
      continue;
    }
    double tol = block_tol(&o, m, s->kappa[i], s->b);
    check_ok_info(&id[i], m, &o);
    check_block("execute_device", s, i, xd, tol);
    double d = ref_rel_fro_f(xd + i * nn, xh + i * nn, nn);
    printf("  block %zu: device vs host %.3g (tol %.3g)\n", i, d, tol);
    ck_assert_double_le(d, tol);
  }
  CK_CUDA(cudaFree(d_in));
  CK_CUDA(cudaFree(d_out));
  dash_roots_plan_destroy(plan);
  free(xh);
  free(xd);
  stack_free(s);
}
END_TEST

/* A user stream: the input is copied into place by work queued on the
 * stream behind about 2 GB of memsets (a millisecond or so on an H100),
 * and dash_roots_execute_device is called at once, without a
 * synchronization. roots.h orders the work after everything already
 * queued on the stream, so it must see the copied input, not the NaNs the
 * buffer held before (which would make every block NONFINITE_INPUT). The
 * results are then read on the same stream. Loop index: cudaStreamCreate,
 * and a non-blocking stream, which does not even synchronize with the
 * legacy default stream. */
START_TEST(test_roots_cuda_execute_device_on_user_stream) {
  const int p = 2;
  stack *s = prec_stack(64, p);
  size_t nn = s->b * s->b, total = s->n * nn;
  const size_t big_bytes = (size_t)256 << 20;
  cudaStream_t st;
  if (_i == 0)
    CK_CUDA(cudaStreamCreate(&st));
  else
    CK_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  float *d_stage = device_floats(total), *d_in = device_floats(total);
  float *d_out = device_floats(total);
  void *big = NULL;
  CK_CUDA(cudaMalloc(&big, big_bytes));
  to_device(d_stage, s->a, total);
  CK_CUDA(cudaMemset(d_in, 0xff, total * sizeof(float))); /* NaN */
  CK_CUDA(cudaMemset(d_out, 0, total * sizeof(float)));
  CK_CUDA(cudaDeviceSynchronize());

  dash_roots_options o =
      prec_options(DASH_METHOD_NEWTON_DB, p, DASH_PRECISION_FP32, s->eps);
  dash_roots_plan *plan;
  dash_block_info info[PREC_N];
  dash_roots_report rep;
  ck_assert_int_eq(dash_roots_plan_create(&plan, s->n, s->b, &o), 0);
  for (int k = 0; k < 8; k++)
    CK_CUDA(cudaMemsetAsync(big, k, big_bytes, st));
  CK_CUDA(cudaMemcpyAsync(d_in, d_stage, total * sizeof(float),
                          cudaMemcpyDeviceToDevice, st));
  int rc = dash_roots_execute_device(plan, d_out, d_in, info, &rep, st);
  ck_assert_msg(rc == 0, "execute_device: %s (%s)", dash_status_name(rc),
                dash_last_error());
  float *x = floats(total, NAN);
  CK_CUDA(cudaMemcpyAsync(x, d_out, total * sizeof(float),
                          cudaMemcpyDeviceToHost, st));
  CK_CUDA(cudaStreamSynchronize(st));
  check_report(&rep, info, s->n, DASH_METHOD_NEWTON_DB, o.scaling);
  for (size_t i = 0; i < s->n; i++) {
    check_ok_info(&info[i], DASH_METHOD_NEWTON_DB, &o);
    check_block(_i ? "non-blocking stream" : "user stream", s, i, x,
                block_tol(&o, DASH_METHOD_NEWTON_DB, s->kappa[i], s->b));
  }
  dash_roots_plan_destroy(plan);
  CK_CUDA(cudaStreamDestroy(st));
  CK_CUDA(cudaFree(big));
  CK_CUDA(cudaFree(d_stage));
  CK_CUDA(cudaFree(d_in));
  CK_CUDA(cudaFree(d_out));
  free(x);
  stack_free(s);
}
END_TEST

/* dash_roots_execute_device refuses a plan of the CPU backend, NULL
 * buffers and overlapping device buffers with INVALID and a message, and
 * leaves the output alone. */
START_TEST(test_roots_cuda_execute_device_rejects_bad_calls) {
  const size_t n = 2, b = 8, total = 2 * 8 * 8;
  float *d = device_floats(3 * total);
  float host[3 * 2 * 8 * 8];
  for (size_t k = 0; k < 3 * total; k++)
    host[k] = 7.0f;
  to_device(d, host, 3 * total);
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  dash_roots_plan *plan;

  o.backend = DASH_BACKEND_CPU;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, &o), 0);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d + total, d, NULL, NULL, NULL),
      DASH_E_INVALID);
  printf("  cpu plan: \"%s\"\n", dash_last_error());
  ck_assert_str_ne(dash_last_error(), "");
  dash_roots_plan_destroy(plan);

  o.backend = DASH_BACKEND_CUDA;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, &o), 0);
  ck_assert_int_eq(
      dash_roots_execute_device(NULL, d + total, d, NULL, NULL, NULL),
      DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute_device(plan, NULL, d, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d + total, NULL, NULL, NULL, NULL),
      DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute_device(plan, d, d, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d + total - 1, d, NULL, NULL, NULL),
      DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_execute_device(plan, d, d + 1, NULL, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_str_ne(dash_last_error(), "");
  dash_roots_plan_destroy(plan);

  /* A device_only plan computes device buffers and refuses host ones. */
  o.device_only = 1;
  o.method = DASH_METHOD_EVD;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, &o), 0);
  float hin[2 * 8 * 8] = {0}, hout[2 * 8 * 8];
  ck_assert_int_eq(dash_roots_execute(plan, hout, hin, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "device_only"));
  dash_roots_plan_destroy(plan);
  to_host(host, d, 3 * total);
  for (size_t k = 0; k < 3 * total; k++)
    ck_assert_float_eq(host[k], 7.0f);
  CK_CUDA(cudaFree(d));
}
END_TEST

#endif /* DASH_HAVE_CUDA */

/* ------------------------------------------------------------------ */

static Suite *roots_cuda_suite(void) {
  Suite *s = suite_create("roots_cuda");
  TCase *tc;

  tc = tcase_create("core");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_roots_cuda_methods_match_references, 0,
                      CONFIG_COUNT);
  tcase_add_loop_test(tc, test_roots_cuda_evd_ill_conditioned_is_accurate, 0,
                      8);
  tcase_add_loop_test(tc, test_roots_cuda_plan_reused_across_executions, 0, 4);
  tcase_add_test(tc, test_roots_cuda_report_names_what_ran);
  suite_add_tcase(s, tc);

  tc = tcase_create("precision");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_roots_cuda_methods_match_references,
                      CONFIG_COUNT, 4 * CONFIG_COUNT);
  suite_add_tcase(s, tc);

  tc = tcase_create("edge");
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  tcase_add_loop_test(tc, test_roots_cuda_nonfinite_block_keeps_its_output, 0,
                      8);
  tcase_add_loop_test(tc, test_roots_cuda_scalar_blocks, 0, 16);
  tcase_add_loop_test(tc, test_roots_cuda_zero_and_identity_blocks, 0, 16);
  tcase_add_loop_test(tc, test_roots_cuda_one_and_many_blocks, 0, 16);
  tcase_add_loop_test(tc, test_roots_cuda_blocks_exit_early_independently, 0,
                      4);
  tcase_add_loop_test(tc, test_roots_cuda_diverging_block_falls_back_to_evd, 0,
                      8);
  tcase_add_loop_test(tc, test_roots_cuda_scale_estimates, 0, 2);
  tcase_add_loop_test(tc, test_roots_cuda_scalings_give_accurate_roots, 0, 24);
  suite_add_tcase(s, tc);

#ifdef DASH_HAVE_CUDA
  if (cuda_mode()) {
    tc = tcase_create("device");
    tcase_set_timeout(tc, TEST_TIMEOUT_S);
    tcase_add_loop_test(tc, test_roots_cuda_execute_device_matches_host, 0, 8);
    tcase_add_loop_test(tc, test_roots_cuda_execute_device_on_user_stream, 0,
                        2);
    tcase_add_test(tc, test_roots_cuda_execute_device_rejects_bad_calls);
    suite_add_tcase(s, tc);
  }
#endif
  return s;
}

int main(void) {
  /* Line-buffered, so a test's observations reach the log even when it
   * ends at a failed assertion. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *want = getenv("DASH_TEST_BACKEND");
  if (want != NULL && *want != '\0') {
    dash_backend be;
    if (dash_backend_parse(want, &be) < 0 || be == DASH_BACKEND_AUTO) {
      fprintf(stderr, "DASH_TEST_BACKEND=%s: expected cpu or cuda\n", want);
      return EXIT_FAILURE;
    }
    g_backend = be;
  }
  if (cuda_mode() && !dash_roots_cuda_available()) {
    printf("skipped: no CUDA device\n");
    return 77;
  }
  if (!cuda_mode())
    printf("DASH_TEST_BACKEND=cpu: the CPU backend stands in for CUDA\n");
  SRunner *sr = srunner_create(roots_cuda_suite());
  /* See the top of the file: no fork once CUDA is initialized. */
  if (cuda_mode())
    srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
