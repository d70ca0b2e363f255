/* The CPU backend's per-block kernels, shared between kernels/cpu/ files.
 * Every matrix is B×B, row-major, contiguous. Nothing here allocates: the
 * caller passes workspaces sized by backend.c once per plan. */
#ifndef DASH_KERNELS_CPU_H
#define DASH_KERNELS_CPU_H

#include <stddef.h>
#include <stdint.h>

/* Result of one Newton run. */
struct dash__newton_run {
  int steps;     /* GEMM rounds taken */
  float r_first; /* residual of the first step */
  float r_last;  /* residual of the last step */
};

/* Warms OpenBLAS's GEMM buffers for `threads` concurrent single-threaded
 * callers (see blas_warmup.c); call under the BLAS lock. */
void dash__cpu_blas_warmup(int threads);

/* m = c·I. */
void dash__cpu_set_identity(float *m, int b, float c);
/* m += c·I. */
void dash__cpu_add_identity(float *m, int b, float c);
/* x *= c. */
void dash__cpu_scale(float *x, size_t n, float c);
/* ‖m‖_F in double. */
double dash__cpu_frobenius(const float *m, int b);

/* λ̂_max of the symmetric m by power iteration: `vectors` start vectors
 * (1 = plain power iteration) drawn from `seed`, `steps` steps, the
 * largest Rayleigh quotient wins. A damping of 1e-6 of the mean diagonal
 * is added to m inside the product so that a start vector in the null
 * space gives no 0/0. v and w hold b·vectors floats each. Returns 0 for an
 * all-zero m. */
float dash__cpu_power_iter(const float *m, int b, int steps, int vectors,
                           uint64_t seed, float *v, float *w);

/* Newton–Denman–Beavers on a matrix whose eigenvalues lie in (0, 1]:
 * *y holds it on entry; on return *y ≈ a^(1/2) and *z ≈ a^(-1/2). The four
 * pointers are swapped among the four buffers as the iteration goes. Stops
 * after the step whose ‖I − E‖_F < tol (tol > 0), on a non-finite
 * residual, or after max_steps; in the last case (tol > 0) r_last is the
 * residual of the returned iterate, measured with one more product. */
void dash__cpu_newton_db(int b, float **y, float **z, float **e, float **t,
                         int max_steps, double tol,
                         struct dash__newton_run *run);

/* Coupled Newton (Distributed Shampoo): on entry *m holds A + εI, z is
 * the initial scale (p+1)/(2s); on return *x ≈ (A + εI)^(-1/p). Residual
 * max |M − I| elementwise. Five buffers, swapped as it goes. */
void dash__cpu_coupled_newton(int b, int p, double z, float **x, float **m,
                              float **t, float **tp, float **u, int max_steps,
                              double tol, struct dash__newton_run *run);

/* Chebyshev: *x ≈ s^(-1/p)·f(A/s) with f(u) = (u + eps/s)^(-1/p) fitted by
 * degree-d interpolation on [0, 1]. *a holds A (no ridge) and is
 * overwritten. coef holds d+1 doubles. */
void dash__cpu_chebyshev(int b, int p, double s, double eps, int degree,
                         float **a, float **x, float **q, double *coef);

/* Workspace of dash__cpu_evd_root, one per thread. */
struct dash__evd_work {
  float *s_vec, *s_ref; /* b² each */
  float *s_lam, *s_tau; /* b each */
  float *s_work;
  int s_lwork;
  double *d_vec, *d_z;           /* b² each */
  double *d_lam, *d_off, *d_tau; /* b each */
  double *d_work;
  int d_lwork;
  int *iwork;
  int liwork;
};

/* Sizes and allocates the workspace for b×b blocks. 0, DASH_E_LAPACK or
 * DASH_E_NOMEM; on failure the caller still frees it (it starts zeroed). */
int dash__cpu_evd_work_init(struct dash__evd_work *w, int b);
void dash__cpu_evd_work_free(struct dash__evd_work *w);

/* X = Q·diag(λ^(-1/p))·Qᵀ from the eigendecomposition of a (lower
 * triangle), with Shampoo's heuristic λ ← λ − min(λ_min, 0) + ε and a
 * pseudo-inverse for eigenvalues still ≤ 0. Computes in fp32 and repeats
 * with the reduction in fp64 when the spectrum is too ill-conditioned for
 * fp32 (or at once when *use_f64 is set); *use_f64 tells on return which
 * path the block needed, so the next call can start there. Returns 0, or
 * DASH_E_LAPACK when LAPACK failed in both precisions. lambda_max gets the
 * largest eigenvalue after the heuristic. */
int dash__cpu_evd_root(const float *a, float *x, int b, int p, double eps,
                       struct dash__evd_work *w, unsigned char *use_f64,
                       float *lambda_max);

#endif
