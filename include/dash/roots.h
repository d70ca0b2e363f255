/**
 * @file roots.h
 * @brief Stacked inverse matrix roots: the math of dashd as a library.
 *
 * Input: a stack of N symmetric positive semi-definite B×B fp32 matrices,
 * contiguous and row-major (N·B·B floats). Output: X_i ≈ (A_i + εI)^(-1/p)
 * for every block, plus per-block diagnostics.
 *
 * Typical use, with the workspace allocated once per stack shape:
 *
 * @code
 *   dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
 *   dash_roots_plan *plan;
 *   if (dash_roots_plan_create(&plan, n, b, &o) < 0) { ... }
 *   for (;;) {
 *     dash_roots_execute(plan, result, stats, infos, &report);
 *   }
 *   dash_roots_plan_destroy(plan);
 * @endcode
 *
 * Failures are per block, never per stack: a block whose input holds NaN or
 * Inf keeps its previous output and reports ::DASH_BLOCK_NONFINITE_INPUT; a
 * block whose iteration diverges or produces NaN/Inf is computed again by
 * EVD (::DASH_BLOCK_FALLBACK_EVD) unless the fallback policy says otherwise
 * (::dash_fallback); a block that merely reaches the step limit keeps its
 * last iterate and reports ::DASH_BLOCK_NOT_CONVERGED, as DASH does.
 */
#ifndef DASH_ROOTS_H
#define DASH_ROOTS_H

#include <stddef.h>
#include <stdint.h>

#include "dash/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How the inverse root is computed. */
typedef enum dash_method {
  /** The fastest method of the backend whose error is at most 1e-3
   *  relative (Frobenius) on statistics of condition number up to 1e6;
   *  the choice is reported in dash_roots_report. On CPU that is EVD,
   *  which beats every iteration there at any accuracy (bench/RESULTS.md).
   *  On CUDA it is EVD as well until GPU measurements show an iteration
   *  meeting that bound faster.
   */
  DASH_METHOD_AUTO = 0,
  /** Newton–Denman–Beavers, coupled Y/Z iteration; p = 2 or 4. */
  DASH_METHOD_NEWTON_DB = 1,
  /** Coupled Newton as in Distributed Shampoo; p = 2 or 4. */
  DASH_METHOD_COUPLED_NEWTON = 2,
  /** Eigendecomposition with Shampoo's eigenvalue heuristic; any p >= 1.
   *  Blocks of condition number above 1e4 are reduced in fp64 (the rest of
   *  the work stays fp32), so the error stays near 1e-6 at any κ. */
  DASH_METHOD_EVD = 3,
  /** Chebyshev fit of x^(-1/p), evaluated with Clenshaw; p = 2 or 4. */
  DASH_METHOD_CHEBYSHEV = 4
} dash_method;

/** How a block is scaled so that its eigenvalues lie in (0, 1]. */
typedef enum dash_scaling {
  /** s = c·λ̂_max, λ̂_max from power iteration with one start vector. */
  DASH_SCALING_POWER_ITER = 0,
  /** The same with several start vectors; the largest estimate wins. */
  DASH_SCALING_POWER_ITER_MULTI = 1,
  /** s = ‖A + εI‖_F: cheap, but pushes small eigenvalues towards 0. */
  DASH_SCALING_FROBENIUS = 2
} dash_scaling;

/** Where the computation runs. */
typedef enum dash_backend {
  /** CUDA when a device is present and the build has it, else CPU. A CUDA
   *  plan computes on the device current (cudaSetDevice) when the plan is
   *  created, on a stream of its own. */
  DASH_BACKEND_AUTO = 0,
  DASH_BACKEND_CPU = 1,
  DASH_BACKEND_CUDA = 2
} dash_backend;

/**
 * The lowest precision allowed for matrix products (GPU). The CPU backend
 * always computes in fp32, which satisfies every request. On CUDA the
 * iterations (NewtonDB, Coupled Newton, Chebyshev) honour it: TF32 keeps
 * fp32 storage and lets the tensor cores round the operands to 10-bit
 * mantissas; BF16 and FP16 store the iterates in 16 bits and multiply
 * them with fp32 accumulation, so their residual ‖I − E‖_F cannot fall
 * much below 2^-8·√B (bf16) or 2^-11·√B (fp16): use tol = 0 (a fixed
 * step count, as DASH does) or expect ::DASH_BLOCK_NOT_CONVERGED. Power
 * iteration always runs in bf16 on CUDA, as DASH's does, and EVD always in
 * fp32 (fp64 for ill-conditioned blocks), whatever the precision.
 */
typedef enum dash_precision {
  DASH_PRECISION_FP32 = 0,
  DASH_PRECISION_TF32 = 1,
  DASH_PRECISION_BF16 = 2,
  DASH_PRECISION_FP16 = 3
} dash_precision;

/** When a block of an iterative method is recomputed by EVD. */
typedef enum dash_fallback {
  /** Never: the last iterate is kept, whatever it is. */
  DASH_FALLBACK_NONE = 0,
  /** When the iteration diverged: its residual or output went NaN/Inf, or
   *  its last residual is larger than its first. */
  DASH_FALLBACK_DIVERGED = 1,
  /** Also when the step limit was reached above the tolerance. */
  DASH_FALLBACK_UNCONVERGED = 2
} dash_fallback;

/** The outcome of one block. */
typedef enum dash_block_status {
  /** Computed by the requested method; iterations met the tolerance. */
  DASH_BLOCK_OK = 0,
  /** The input holds NaN or Inf; the block's output was left untouched. */
  DASH_BLOCK_NONFINITE_INPUT = 1,
  /** The step limit was reached with the residual at or above the
   *  tolerance, and the fallback policy kept the last iterate as the
   *  output. DASH's behaviour: with 10 steps, ill-conditioned blocks end
   *  here with their smallest eigenvalues under-inverted. */
  DASH_BLOCK_NOT_CONVERGED = 2,
  /** The fallback policy rejected the iteration (see ::dash_fallback);
   *  the output was computed by EVD instead. */
  DASH_BLOCK_FALLBACK_EVD = 3
} dash_block_status;

/** Number of ::dash_block_status values. */
#define DASH_BLOCK_STATUS_COUNT 4

/** Largest block size B accepted. */
#define DASH_ROOTS_MAX_BLOCK_SIZE 16384
/** Largest number of blocks N accepted. */
#define DASH_ROOTS_MAX_BLOCKS (1u << 24)
/** Largest stack accepted, in bytes of input (N·B·B·4). */
#define DASH_ROOTS_MAX_BYTES ((uint64_t)64 << 30)

/** Version of ::dash_roots_options this header describes. */
#define DASH_ROOTS_OPTIONS_VERSION 2

/**
 * Options of a root computation. Always start from
 * ::DASH_ROOTS_OPTIONS_INIT so that fields added later get defaults.
 * The defaults are DASH's: NewtonDB, power-iteration scaling with 10 steps
 * and c = 2, 10 Newton steps, ε = 1e-10, root 4.
 */
typedef struct dash_roots_options {
  /** Must be ::DASH_ROOTS_OPTIONS_VERSION. */
  unsigned int version;
  /** Default ::DASH_METHOD_NEWTON_DB. */
  dash_method method;
  /** Default ::DASH_SCALING_POWER_ITER. */
  dash_scaling scaling;
  /** Default ::DASH_BACKEND_CPU. */
  dash_backend backend;
  /** Default ::DASH_PRECISION_FP32. */
  dash_precision precision;
  /** The root p of A^(-1/p): 2 or 4 for the iterations, any p in 1..64
   *  for EVD. Default 4. */
  int root;
  /** Ridge ε >= 0 added to the diagonal. Default 1e-10. */
  double eps;
  /** Step limit of NewtonDB (per NewtonDB run; p = 4 runs it twice) and of
   *  Coupled Newton, 1..1000. Default 10. */
  int max_steps;
  /** Early-exit tolerance, >= 0. NewtonDB stops a block after the step in
   *  which ‖I − E‖_F < tol; Coupled Newton when max_ij |(M − I)_ij| < tol.
   *  A block that reaches the step limit without meeting it is not
   *  converged. 0 runs every step and never judges convergence (such
   *  blocks report ::DASH_BLOCK_OK unless they diverge). The CPU checks
   *  every step; CUDA checks every second step, so that the host waits on
   *  the device only there, and a block may run one step past the one
   *  that met the tolerance. Default 1e-3. */
  double tol;
  /** Power-iteration steps, 1..1000. Default 10. */
  int power_steps;
  /** Safety factor c of s = c·λ̂_max, >= 1. Default 2. */
  double power_scale;
  /** Start vectors of ::DASH_SCALING_POWER_ITER_MULTI, 1..256.
   *  Default 16. */
  int power_vectors;
  /** Degree of the Chebyshev fit, 1..200. Default 20. */
  int cheb_degree;
  /** Which blocks are recomputed by EVD. Default
   *  ::DASH_FALLBACK_DIVERGED. */
  dash_fallback fallback;
  /** CPU threads, 0..4096; 0 = every online core. Default 0. */
  int threads;
  /** Seed of the power-iteration start vectors. Default 0x5eed. */
  uint64_t seed;
  /** CUDA: the priority of the plan's stream among the device's streams:
   *  0 the lowest (CUDA's default priority too), 1 the highest. It orders
   *  streams of one CUDA context or of one MPS server's clients: there a
   *  trainer's streams made at a higher priority run first. Separate
   *  processes without MPS take turns on the GPU whatever the
   *  priorities. The CPU backend ignores it.
   *  Default 0. Since version 2: a version-1 struct, which ends before
   *  this field, is read as far as it goes and gets the default here. */
  int stream_priority;
  /** CUDA: non-zero when the plan will only compute stacks already in
   *  device memory (dash_roots_execute_device()): it then holds no
   *  staging for host buffers (2·N·B² floats of device memory less), and
   *  dash_roots_execute() on it fails with ::DASH_E_INVALID. Default 0.
   *  Since version 2. */
  int device_only;
} dash_roots_options;

/** Initializer of ::dash_roots_options holding every default. */
#define DASH_ROOTS_OPTIONS_INIT                                              \
  {                                                                          \
    DASH_ROOTS_OPTIONS_VERSION, DASH_METHOD_NEWTON_DB,                       \
        DASH_SCALING_POWER_ITER, DASH_BACKEND_CPU, DASH_PRECISION_FP32, 4,   \
        1e-10, 10, 1e-3, 10, 2.0, 16, 20, DASH_FALLBACK_DIVERGED, 0, 0x5eed, \
        0, 0                                                                 \
  }

/** Diagnostics of one block. */
typedef struct dash_block_info {
  /** Newton steps taken (both NewtonDB runs together for p = 4); 0 for
   *  EVD and Chebyshev. */
  int iterations;
  /** The last convergence measure: ‖I − E‖_F of the returned iterate
   *  (NewtonDB; of the second run for p = 4), max_ij |(M − I)_ij| (Coupled
   *  Newton, as Distributed Shampoo measures it); 0 for EVD and
   *  Chebyshev. */
  float residual;
  /** The scale estimate: λ̂_max (power iteration) or ‖A + εI‖_F; for EVD
   *  (as the method or the fallback of an iteration that did not set it)
   *  the exact largest eigenvalue after the heuristic. */
  float lambda_max;
  /** The outcome. A ::DASH_BLOCK_NONFINITE_INPUT block has every other
   *  field 0. */
  dash_block_status status;
} dash_block_info;

/** Diagnostics of one whole execution. */
typedef struct dash_roots_report {
  /** The method that ran (AUTO resolved). */
  dash_method method;
  /** The scaling of the options (EVD uses none). */
  dash_scaling scaling;
  /** The backend that ran (AUTO resolved). */
  dash_backend backend;
  /** Wall time of the execution, milliseconds. */
  double ms_total;
  /** Largest iterations of any block. */
  int max_iterations;
  /** Number of blocks with each ::dash_block_status. */
  uint64_t blocks_by_status[DASH_BLOCK_STATUS_COUNT];
} dash_roots_report;

/** A workspace for one stack shape and one set of options. Opaque. */
typedef struct dash_roots_plan dash_roots_plan;

/**
 * Checks a stack shape against the limits, as dash_roots_plan_create()
 * does, without allocating anything: for callers that must validate a
 * shape from outside (a file, a client) before they allocate for it.
 *
 * @return 0; ::DASH_E_INVALID for N or B = 0; ::DASH_E_TOO_LARGE beyond
 *         ::DASH_ROOTS_MAX_BLOCKS, ::DASH_ROOTS_MAX_BLOCK_SIZE or
 *         ::DASH_ROOTS_MAX_BYTES. dash_last_error() says which, with
 *         "N = …" or "B = …" in it.
 */
DASH_API int dash_roots_check_shape(size_t num_blocks, size_t block_size);

/**
 * Checks the options and shape and allocates every workspace a computation
 * needs, so that dash_roots_execute() allocates nothing.
 *
 * @param out         receives the plan; the caller frees it with
 *                    dash_roots_plan_destroy(). Untouched on failure.
 * @param num_blocks  N, 1..::DASH_ROOTS_MAX_BLOCKS.
 * @param block_size  B, 1..::DASH_ROOTS_MAX_BLOCK_SIZE.
 * @param opts        the options (copied); NULL means the defaults.
 * @return 0; ::DASH_E_INVALID for a bad option, a zero size or a wrong
 *         options version; ::DASH_E_TOO_LARGE for sizes over the limits;
 *         ::DASH_E_UNSUPPORTED for a method/root pair that does not exist
 *         or a backend this build lacks; ::DASH_E_NO_DEVICE when CUDA was
 *         asked for and no device is present; ::DASH_E_NOMEM.
 *         dash_last_error() names the offending field and value.
 */
DASH_API int dash_roots_plan_create(dash_roots_plan **out, size_t num_blocks,
                                    size_t block_size,
                                    const dash_roots_options *opts);

/**
 * Computes the inverse roots of the stack @p in into @p out.
 *
 * Thread safety: one plan is used by one thread at a time; plans are
 * independent. The CPU backend sets OpenBLAS's process-wide thread count
 * while it runs (and restores it), and CPU executions of all plans in the
 * process run one at a time, each on every core it was given.
 *
 * @param plan    a plan made for this stack shape.
 * @param out     N·B·B floats; a block with non-finite input keeps its
 *                contents. Must not overlap @p in.
 * @param in      N·B·B floats, each block symmetric positive semi-definite
 *                (only the lower triangle is trusted by EVD).
 * @param info    NULL, or N entries that receive each block's diagnostics.
 * @param report  NULL, or receives the execution's diagnostics.
 * @return 0 when every block was handled (look at @p info for per-block
 *         outcomes); ::DASH_E_INVALID for NULL or overlapping buffers;
 *         ::DASH_E_LAPACK or ::DASH_E_CUDA when the backend itself failed;
 *         ::DASH_E_DEVICE_LOST when the GPU failed in a way that poisons
 *         the process's CUDA context (an illegal address, a launch
 *         failure): every later CUDA call fails, and only a new process
 *         can use the GPU again.
 */
DASH_API int dash_roots_execute(dash_roots_plan *plan, float *out,
                                const float *in, dash_block_info *info,
                                dash_roots_report *report);

/**
 * Like dash_roots_execute(), for a stack that already lives in the memory
 * of the plan's CUDA device: no copy through the host. The plan's device is
 * the one current (cudaSetDevice) when the plan was created. (A CUDA plan
 * also holds staging for dash_roots_execute() from host memory, 2·N·B²
 * floats, so that neither call allocates, unless it was made with
 * dash_roots_options.device_only.)
 *
 * The work is ordered after everything already queued on @p stream and
 * runs on the plan's own stream; the call returns once the results are
 * written and @p info is filled (deciding each block's fate needs the
 * host), so @p out may be used on any stream afterwards.
 *
 * @param plan    a plan with backend ::DASH_BACKEND_CUDA.
 * @param out     N·B·B floats in device memory; a block with non-finite
 *                input keeps its contents. Must not overlap @p in.
 * @param in      N·B·B floats in device memory.
 * @param info    NULL, or N host entries for each block's diagnostics.
 * @param report  NULL, or receives the execution's diagnostics.
 * @param stream  a cudaStream_t of the plan's device, or NULL for the
 *                legacy default stream.
 * @return 0; ::DASH_E_INVALID for NULL or overlapping buffers or a plan of
 *         another backend; ::DASH_E_CUDA when a CUDA call failed
 *         (dash_last_error() names it).
 */
DASH_API int dash_roots_execute_device(dash_roots_plan *plan, float *out,
                                       const float *in, dash_block_info *info,
                                       dash_roots_report *report, void *stream);

/** Frees a plan and its workspaces. NULL is allowed. */
DASH_API void dash_roots_plan_destroy(dash_roots_plan *plan);

/** Returns the options a plan was made with, AUTO fields resolved. */
DASH_API const dash_roots_options *dash_roots_plan_options(
    const dash_roots_plan *plan);

/**
 * One-shot convenience: plan, execute, destroy. Same parameters and errors
 * as the three calls it makes.
 */
DASH_API int dash_roots_compute(float *out, const float *in, size_t num_blocks,
                                size_t block_size,
                                const dash_roots_options *opts,
                                dash_block_info *info,
                                dash_roots_report *report);

/** Name of a method as the tools spell it ("ndb", "cn", "evd", "cheb",
 *  "auto"); NULL for an unknown value. */
DASH_API const char *dash_method_name(dash_method method);
/** Parses a name of dash_method_name(); also accepts the long names
 *  ("newton_db", "coupled_newton", "eigh", "chebyshev"). 0 or
 *  ::DASH_E_INVALID. The other parsers below work alike; the long name
 *  each accepts is given with it. */
DASH_API int dash_method_parse(const char *name, dash_method *out);
/** "pi", "pi-multi", "fro" (long: "power_iter", "power_iter_multi",
 *  "frobenius"); NULL for an unknown value. */
DASH_API const char *dash_scaling_name(dash_scaling scaling);
/** Parses a name of dash_scaling_name(). 0 or ::DASH_E_INVALID. */
DASH_API int dash_scaling_parse(const char *name, dash_scaling *out);
/** "auto", "cpu", "cuda" (long: "gpu"); NULL for an unknown value. */
DASH_API const char *dash_backend_name(dash_backend backend);
/** Parses a name of dash_backend_name(). 0 or ::DASH_E_INVALID. */
DASH_API int dash_backend_parse(const char *name, dash_backend *out);
/** "fp32", "tf32", "bf16", "fp16" (long: "float32", "bfloat16",
 *  "float16"); NULL for an unknown value. */
DASH_API const char *dash_precision_name(dash_precision precision);
/** Parses a name of dash_precision_name(). 0 or ::DASH_E_INVALID. */
DASH_API int dash_precision_parse(const char *name, dash_precision *out);
/** "none", "diverged", "unconverged"; NULL for an unknown value. */
DASH_API const char *dash_fallback_name(dash_fallback fallback);
/** Parses a name of dash_fallback_name(). 0 or ::DASH_E_INVALID. */
DASH_API int dash_fallback_parse(const char *name, dash_fallback *out);
/** "OK", "NONFINITE_INPUT", "NOT_CONVERGED", "FALLBACK_EVD"; NULL for an
 *  unknown value. */
DASH_API const char *dash_block_status_name(dash_block_status status);

/** Non-zero when this build has the CUDA backend and a device is present. */
DASH_API int dash_roots_cuda_available(void);

/**
 * Describes the current CUDA device (the one a plan made now would use) as
 * "NAME (GPU-UUID)", the UUID as nvidia-smi prints it: GPUs are told apart
 * by UUID, since CUDA_VISIBLE_DEVICES renumbers ordinals.
 *
 * @param buf  receives the text, NUL-terminated, truncated to fit.
 * @param len  size of @p buf.
 * @return 0; ::DASH_E_INVALID for a NULL or empty buffer;
 *         ::DASH_E_NO_DEVICE without a device or CUDA in the build.
 */
DASH_API int dash_roots_cuda_describe(char *buf, size_t len);

/**
 * Makes a CUDA device current on the calling thread, so that plans made on
 * it afterwards compute there.
 *
 * @param device  an ordinal ("0", "1", …, as CUDA numbers the visible
 *                devices) or a UUID as nvidia-smi prints it
 *                ("GPU-5e3c…"; a unique prefix of at least 8 characters
 *                after "GPU-" will do).
 * @return 0; ::DASH_E_INVALID for NULL or a malformed name;
 *         ::DASH_E_NO_DEVICE when no such device is present (or no CUDA).
 */
DASH_API int dash_roots_cuda_select(const char *device);

#ifdef __cplusplus
}
#endif

#endif /* DASH_ROOTS_H */
