/* The stacks of known spectrum that the tests of roots.h (test_roots.c on
 * the CPU, test_roots_cuda.c on the GPU) compute, and the checks both make
 * of a result: one fixture, so both backends are held to the same
 * references. Check-based: failures are test failures. */
#ifndef DASH_TESTS_ROOTS_STACK_H
#define DASH_TESTS_ROOTS_STACK_H

#include <stddef.h>
#include <stdint.h>

#include "dash/roots.h"

typedef struct stack {
  size_t n, b;
  int p;
  double eps;
  float *a;        /* the input, n·b·b */
  double *lam;     /* the known spectrum, n·b */
  double *x_known; /* Q·diag((λ+ε)^(-1/p))·Qᵀ, n·b·b */
  double *x_ref;   /* the root of the float32 input (dsyevd), n·b·b */
  double *kappa;   /* condition number of A_i + εI, n */
} stack;

/* calloc that fails the test instead of returning NULL. */
void *xcalloc(size_t count, size_t size);
/* count floats, each `fill`. */
float *floats(size_t count, float fill);

/* A stack of n b×b blocks with spectra lam (n·b values) in random
 * orthogonal bases drawn from seed, with both references. */
stack *stack_new(size_t n, size_t b, int p, double eps, const double *lam,
                 uint64_t seed);
/* Recomputes x_ref after a test changed s->a. */
void stack_refresh_refs(stack *s);
void stack_free(stack *s);

/* Six 32×32 blocks of p = 4, ε = 1e-10, spectra uniform in [0.3, 1], of
 * which three hold NaN or Inf: block 1 one NaN in its upper triangle only
 * (so even EVD, which reads the lower triangle, must look at the whole
 * block), block 3 a symmetric pair of +Inf, block 4 one −Inf on the
 * diagonal. Its references were computed before the poisoning. */
stack *stack_with_nonfinite_blocks(void);

/* Prints block i's relative Frobenius error against x_ref and against
 * x_known, asserts the first is at most tol, and returns it; *err_known
 * (may be NULL) gets the second. */
double stack_check_block(const char *what, const stack *s, size_t i,
                         const float *x, double tol, double *err_known);

/* Asserts that a report agrees with the per-block infos and names the
 * method asked for (AUTO resolved), the scaling and the backend. */
void check_report_of(const dash_roots_report *r, const dash_block_info *info,
                     size_t n, dash_method requested, dash_scaling scaling,
                     dash_backend backend);

#endif
