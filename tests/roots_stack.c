/* The stack fixture shared by test_roots.c and test_roots_cuda.c
 * (roots_stack.h). */
#include "roots_stack.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roots_ref.h"

void *xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size);
  ck_assert_ptr_nonnull(p);
  return p;
}

float *floats(size_t count, float fill) {
  float *x = xcalloc(count, sizeof(float));
  for (size_t i = 0; i < count; i++)
    x[i] = fill;
  return x;
}

void stack_refresh_refs(stack *s) {
  size_t nn = s->b * s->b;
  for (size_t i = 0; i < s->n; i++)
    ck_assert_int_eq(ref_evd_root(s->x_ref + i * nn, NULL, s->a + i * nn, s->b,
                                  s->p, s->eps),
                     0);
}

stack *stack_new(size_t n, size_t b, int p, double eps, const double *lam,
                 uint64_t seed) {
  stack *s = xcalloc(1, sizeof(*s));
  size_t nn = b * b;
  ref_rng rng;
  ref_rng_seed(&rng, seed);
  s->n = n;
  s->b = b;
  s->p = p;
  s->eps = eps;
  s->a = floats(n * nn, 0.0f);
  s->lam = xcalloc(n * b, sizeof(double));
  s->x_known = xcalloc(n * nn, sizeof(double));
  s->x_ref = xcalloc(n * nn, sizeof(double));
  s->kappa = xcalloc(n, sizeof(double));
  memcpy(s->lam, lam, n * b * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    const double *l = lam + i * b;
    ck_assert_int_eq(
        ref_known_block(s->a + i * nn, s->x_known + i * nn, l, b, p, eps, &rng),
        0);
    double lo = INFINITY, hi = 0.0;
    for (size_t k = 0; k < b; k++) {
      if (l[k] < lo)
        lo = l[k];
      if (l[k] > hi)
        hi = l[k];
    }
    s->kappa[i] = lo + eps > 0.0 ? (hi + eps) / (lo + eps) : INFINITY;
  }
  stack_refresh_refs(s);
  return s;
}

void stack_free(stack *s) {
  if (s == NULL)
    return;
  free(s->a);
  free(s->lam);
  free(s->x_known);
  free(s->x_ref);
  free(s->kappa);
  free(s);
}

double stack_check_block(const char *what, const stack *s, size_t i,
                         const float *x, double tol, double *err_known) {
  size_t nn = s->b * s->b;
  double err = ref_rel_fro(x + i * nn, s->x_ref + i * nn, nn);
  double known = ref_rel_fro(x + i * nn, s->x_known + i * nn, nn);
  printf(
      "  %s: block %zu kappa %.3g err %.3g (vs exact spectrum %.3g) "
      "tol %.3g\n",
      what, i, s->kappa[i], err, known, tol);
  ck_assert_msg(err <= tol, "%s: block %zu relative error %.3g > tol %.3g",
                what, i, err, tol);
  if (err_known != NULL)
    *err_known = known;
  return err;
}

void check_report_of(const dash_roots_report *r, const dash_block_info *info,
                     size_t n, dash_method requested, dash_scaling scaling,
                     dash_backend backend) {
  uint64_t count[DASH_BLOCK_STATUS_COUNT] = {0}, total = 0;
  int max_it = 0;
  for (size_t i = 0; i < n; i++) {
    ck_assert_int_ge(info[i].status, 0);
    ck_assert_int_lt(info[i].status, DASH_BLOCK_STATUS_COUNT);
    count[info[i].status]++;
    if (info[i].iterations > max_it)
      max_it = info[i].iterations;
  }
  for (int k = 0; k < DASH_BLOCK_STATUS_COUNT; k++) {
    ck_assert_uint_eq(r->blocks_by_status[k], count[k]);
    total += r->blocks_by_status[k];
  }
  ck_assert_uint_eq(total, n);
  ck_assert_int_eq(r->max_iterations, max_it);
  ck_assert_int_ne(r->method, DASH_METHOD_AUTO);
  ck_assert_ptr_nonnull(dash_method_name(r->method));
  if (requested != DASH_METHOD_AUTO)
    ck_assert_int_eq(r->method, requested);
  ck_assert_int_eq(r->scaling, scaling);
  ck_assert_int_eq(r->backend, backend);
  ck_assert(r->ms_total >= 0.0);
}

stack *stack_with_nonfinite_blocks(void) {
  enum { n = 6, b = 32, nn = 32 * 32 };
  double lam[n * b];
  ref_rng rng;
  ref_rng_seed(&rng, 71);
  for (size_t i = 0; i < n; i++)
    ref_spectrum_uniform(lam + i * b, b, 0.3, 1.0, &rng);
  stack *s = stack_new(n, b, 4, 1e-10, lam, 72);
  s->a[1 * nn + 2 * b + 5] = NAN;
  s->a[3 * nn + 4 * b + 1] = INFINITY;
  s->a[3 * nn + 1 * b + 4] = INFINITY;
  s->a[4 * nn + 7 * b + 7] = -INFINITY;
  return s;
}
