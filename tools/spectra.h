/* Synthetic stacks of Shampoo statistics with a chosen condition number, and
 * the float64 oracle of their inverse roots, for dash-bench.
 *
 * A block is built the way Shampoo accumulates a Kronecker factor: an
 * exponential moving average over `steps` steps of G·Gᵀ, where G (B×r, r
 * about B/8) has singular values σ_k ∝ k^(-decay) and a part that persists
 * from step to step. Its float64 eigenvalues are then remapped log-linearly
 * onto [1/κ, 1], which keeps the decaying shape and the eigenvectors, and
 * the block is rebuilt as Q·diag(λ)·Qᵀ in float64 and rounded to float32.
 * Everything is deterministic in (seed, B, block index): the same seed gives
 * the same block i whatever N or κ, and blocks of different κ share their
 * eigenvectors.
 */
#ifndef DASH_TOOLS_SPECTRA_H
#define DASH_TOOLS_SPECTRA_H

#include <stddef.h>
#include <stdint.h>

/** How a synthetic stack is made. Start from ::SPECTRA_PARAMS_INIT. */
typedef struct spectra_params {
  /** λ_max/λ_min of every block before rounding to float32, >= 1. */
  double kappa;
  /** Seed of the random gradients. */
  uint64_t seed;
  /** EMA steps T, 1..10000. */
  int steps;
  /** EMA factor β, in [0, 1). */
  double beta;
  /** Rank r of each gradient; 0 means max(1, B/8). */
  size_t rank;
  /** Exponent α of the singular values σ_k = k^(-α), >= 0. */
  double decay;
  /** Share of each gradient that persists across steps, in [0, 1]. */
  double persist;
} spectra_params;

/** Defaults: κ = 1e4, seed 1, T = 20, β = 0.95, r = B/8, α = 1, half of
 *  every gradient persistent. */
#define SPECTRA_PARAMS_INIT \
  { 1e4, 1, 20, 0.95, 0, 1.0, 0.5 }

/**
 * Fills @p out (N·B·B floats, row-major, blocks contiguous) with N
 * symmetric positive definite blocks as described above. The float32 blocks
 * are exactly symmetric; rounding moves their smallest eigenvalues by about
 * 6e-8·λ_max, so for κ near 1e7 and above their true condition number is
 * not κ and the smallest may even be negative.
 *
 * @return 0; DASH_E_INVALID for bad parameters or sizes; DASH_E_NOMEM;
 *         DASH_E_LAPACK when an eigendecomposition fails.
 */
int spectra_build(float *out, size_t n, size_t b, const spectra_params *p);

/**
 * The float64 reference of the inverse root of every block of @p in, as
 * Shampoo's eigendecomposition computes it, but in float64: the float32
 * block is widened, decomposed (dsyevd) as QΛQᵀ, its eigenvalues set to
 * λ ← λ − min(λ_min, 0) + ε, and @p out receives Q·diag(λ^(-1/root))·Qᵀ.
 *
 * @param out   N·B·B doubles.
 * @param in    N·B·B floats, each block symmetric.
 * @param root  p >= 1.
 * @param eps   ε >= 0. With ε = 0, a block with a zero or negative
 *              eigenvalue has an infinite oracle.
 * @return 0; DASH_E_INVALID; DASH_E_NOMEM; DASH_E_LAPACK.
 */
int spectra_oracle(double *out, const float *in, size_t n, size_t b, int root,
                   double eps);

#endif
