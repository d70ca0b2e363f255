/* Reference inverse roots for the tests of roots.h, computed in float64 by
 * code that shares nothing with kernels/: matrices of known spectrum built
 * from a seeded random orthogonal basis, and a LAPACK (dsyevd) root with
 * Shampoo's eigenvalue heuristic. */
#ifndef DASH_TESTS_ROOTS_REF_H
#define DASH_TESTS_ROOTS_REF_H

#include <stddef.h>
#include <stdint.h>

/* fp32 unit roundoff, 2^-24. */
#define REF_U32 5.960464477539063e-8

/* A small deterministic generator (splitmix64), so every test input is
 * the same on every run and machine. */
typedef struct ref_rng {
  uint64_t state;
} ref_rng;

void ref_rng_seed(ref_rng *rng, uint64_t seed);
/* Uniform in [0, 1). */
double ref_rng_uniform(ref_rng *rng);
/* Standard normal (Box–Muller). */
double ref_rng_normal(ref_rng *rng);

/* Spectra of b eigenvalues. */
/* Geometric from lo to hi (lo = hi gives a constant spectrum). */
void ref_spectrum_geometric(double *lam, size_t b, double lo, double hi);
/* Evenly spaced from lo to hi. */
void ref_spectrum_linear(double *lam, size_t b, double lo, double hi);
/* Independent uniform draws in [lo, hi]. */
void ref_spectrum_uniform(double *lam, size_t b, double lo, double hi,
                          ref_rng *rng);

/* A Haar-distributed random orthogonal b×b matrix (row-major) from the
 * Householder QR of a Gaussian matrix, with the signs of R's diagonal
 * folded into Q. Returns 0, or the LAPACK info on failure. */
int ref_random_orthogonal(double *q, size_t b, ref_rng *rng);

/* x = Q·diag(d)·Qᵀ, symmetrized exactly. */
void ref_compose(double *x, const double *q, const double *d, size_t b);

/* f(λ) of the roots.h contract for an eigenvalue that already includes
 * the ridge and the shift: λ^(-1/p) for λ > 0, else 0 (pseudo-inverse). */
double ref_root_of(double lam, int p);

/* One block of known spectrum: a = float32(Q·diag(λ)·Qᵀ) and the exact
 * root of the float64 matrix, x_known = Q·diag((λ+ε)^(-1/p))·Qᵀ. Both
 * outputs are b×b row-major; x_known may be NULL. Returns 0 or a LAPACK
 * info. */
int ref_known_block(float *a, double *x_known, const double *lam, size_t b,
                    int p, double eps, ref_rng *rng);

/* The stricter reference: the root of the float32 input itself, widened
 * to float64 and decomposed by LAPACKE_dsyevd from its lower triangle,
 * with Shampoo's heuristic λ ← λ − min(λ_min, 0) + ε and pseudo-inverse
 * of what is still ≤ 0. lam_out (may be NULL) receives the eigenvalues of
 * the widened input, ascending. Returns 0 or the LAPACK info. */
int ref_evd_root(double *x, double *lam_out, const float *a, size_t b, int p,
                 double eps);

/* ‖x − ref‖_F / ‖ref‖_F, in double; n elements. When ‖ref‖_F is 0 the
 * absolute ‖x‖_F is returned. */
double ref_rel_fro(const float *x, const double *ref, size_t n);
/* The same between two float arrays, ref widened. */
double ref_rel_fro_f(const float *x, const float *ref, size_t n);
/* ‖a‖_F of a float array, in double. */
double ref_fro_f(const float *a, size_t n);

#endif
