/**
 * @file dash.h
 * @brief libdash: the client library of dashd, a stable C ABI.
 *
 * A trainer connects to the daemon, creates a stack (the library allocates
 * the statistics buffer and two result slots as sealed memfds shared with
 * the daemon), writes its statistics, and calls dash_step() to ask for a
 * refresh: it returns once the daemon holds a snapshot, never waiting for
 * the math. dash_sync() adopts the newest finished result, which then
 * stays valid and unchanged until the next dash_sync() that returns 1.
 *
 * @code
 *   dash_client *c;
 *   dash_stack *s;
 *   dash_stack_options o = DASH_STACK_OPTIONS_INIT;
 *   o.num_blocks = n; o.block_size = b;
 *   if (dash_connect(NULL, &c) < 0 || dash_stack_create(c, &o, &s) < 0)
 *     fprintf(stderr, "dash: %s\n", dash_last_error());
 *   for (step = 0;; step++) {
 *     update_statistics(dash_stack_stats(s));
 *     if (step % 10 == 0) dash_step(s, step, NULL);
 *     if (dash_sync(s, 0, &info) == 1) use(dash_stack_result(s));
 *   }
 *   dash_stack_destroy(s);
 *   dash_disconnect(c);
 * @endcode
 *
 * Every function returns 0 (or a documented non-negative value) on
 * success and a negative ::dash_status on failure, with the detail in
 * dash_last_error(). A daemon that went away gives ::DASH_E_DISCONNECTED,
 * never a crash, a signal, or a wait longer than the timeout given.
 * Calls on one stack are thread-safe; a client's stacks share its
 * connection, and requests on it are serialised.
 */
#ifndef DASH_DASH_H
#define DASH_DASH_H

#include <stddef.h>
#include <stdint.h>

#include "dash/roots.h"
#include "dash/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A connection to dashd. Opaque. */
typedef struct dash_client dash_client;
/** A stack registered with dashd: statistics in, inverse roots out. */
typedef struct dash_stack dash_stack;

/** Version of ::dash_stack_options this header describes. */
#define DASH_STACK_OPTIONS_VERSION 1

/**
 * Options of a stack. Start from ::DASH_STACK_OPTIONS_INIT, then set
 * num_blocks and block_size. The math fields mean what their namesakes of
 * ::dash_roots_options mean and default to DASH's values.
 */
typedef struct dash_stack_options {
  unsigned int version;     /**< ::DASH_STACK_OPTIONS_VERSION */
  size_t num_blocks;        /**< N, at least 1 */
  size_t block_size;        /**< B, at least 1 */
  int root;                 /**< p; default 4 */
  dash_method method;       /**< default ::DASH_METHOD_NEWTON_DB */
  dash_scaling scaling;     /**< default ::DASH_SCALING_POWER_ITER */
  int max_steps;            /**< default 10 */
  double tol;               /**< default 1e-3 */
  double eps;               /**< default 1e-10 */
  dash_precision precision; /**< default ::DASH_PRECISION_FP32 */
  dash_fallback fallback;   /**< default ::DASH_FALLBACK_DIVERGED */
} dash_stack_options;

/** Initializer of ::dash_stack_options with every default (N = B = 0). */
#define DASH_STACK_OPTIONS_INIT                                        \
  {                                                                    \
    DASH_STACK_OPTIONS_VERSION, 0, 0, 4, DASH_METHOD_NEWTON_DB,        \
        DASH_SCALING_POWER_ITER, 10, 1e-3, 1e-10, DASH_PRECISION_FP32, \
        DASH_FALLBACK_DIVERGED                                         \
  }

/** What dash_sync() tells about the result the caller holds. */
typedef struct dash_refresh_info {
  uint64_t generation; /**< 1 for the first result of a stack, then +1 */
  uint64_t step;       /**< the step of the snapshot it came from */
  double compute_ms;   /**< the daemon's time for the computation */
  dash_method method;  /**< the method that ran (AUTO resolved) */
  int max_iterations;  /**< the most Newton steps of any block */
  uint64_t blocks_by_status[DASH_BLOCK_STATUS_COUNT]; /**< per status */
  int in_flight; /**< non-zero while a refresh is computing or
                      waiting in the daemon */
} dash_refresh_info;

/**
 * Connects to dashd.
 * @param socket_path  NULL for the default: $DASHD_SOCKET, else
 *                     /run/dashd/dashd.sock for root, else
 *                     $XDG_RUNTIME_DIR/dashd.sock.
 * @param out          receives the client; free it with dash_disconnect().
 * @return 0; ::DASH_E_DISCONNECTED when no daemon answers there;
 *         ::DASH_E_PERMISSION when the daemon refuses this user;
 *         ::DASH_E_VERSION for an incompatible daemon; ::DASH_E_NOMEM.
 */
DASH_API int dash_connect(const char *socket_path, dash_client **out);

/** Closes the connection. Stacks still alive are destroyed first. NULL is
 *  allowed. */
DASH_API void dash_disconnect(dash_client *c);

/**
 * Creates a stack: allocates the statistics (N·B·B floats, zeroed) and two
 * result slots as memfds sealed against shrinking, maps them, and
 * registers them with the daemon.
 * @return 0; ::DASH_E_INVALID for bad options (see dash_last_error());
 *         ::DASH_E_TOO_LARGE; ::DASH_E_LIMIT when the daemon's per-client
 *         limits are reached; ::DASH_E_DISCONNECTED; ::DASH_E_NOMEM.
 */
DASH_API int dash_stack_create(dash_client *c, const dash_stack_options *o,
                               dash_stack **out);

/**
 * Creates a stack on a GPU trainer's own memory. Which transport it uses
 * depends on the daemon's backend (what dash_connect() learnt):
 * - backend cuda (CUDA_IPC): the daemon opens the two buffers through
 *   CUDA IPC handles and computes on its own stream, so the statistics
 *   never pass through the host, and the hand-over is ordered on the
 *   trainer's stream with interprocess events, never by waiting on the
 *   CPU (see dash_step() and dash_sync()). The daemon's GPU must reach
 *   `device`: the same GPU, or a peer of the GPU of its `--device`.
 *   Memory of CUDA's virtual memory API (cuMemCreate, as PyTorch's
 *   expandable_segments allocates), which CUDA IPC handles cannot share,
 *   goes as POSIX fds of its physical allocations instead (CUDA_VMM_FD):
 *   they must have been made exportable
 *   (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), and both buffers must
 *   come from the same kind of memory.
 * - backend cpu (pinned SHM): libdash makes the shared memory that
 *   dash_stack_create() makes, page-locks it for `device`, and copies
 *   between it and the two buffers on the trainer's stream: the
 *   statistics into it at dash_step(), which waits on the CPU for that
 *   copy, and each adopted result out of it into result_dev at
 *   dash_sync().
 * @param device      the CUDA ordinal, in this process, of the GPU that
 *                    holds both buffers.
 * @param stats_dev   N·B·B floats the trainer writes its statistics to.
 * @param result_dev  2·N·B·B floats: the two result slots, written by the
 *                    daemon (CUDA_IPC) or by libdash's copies (pinned
 *                    SHM) only.
 * Both buffers may be pieces of larger allocations (PyTorch's caching
 * allocator); they must stay allocated until dash_stack_destroy().
 * @return 0; ::DASH_E_INVALID; ::DASH_E_BAD_MEMORY when a buffer is not
 *         memory of that device; ::DASH_E_NO_DEVICE without a usable CUDA
 *         runtime here; ::DASH_E_CUDA when a CUDA call fails (the
 *         host memory cannot be page-locked, an unknown device);
 *         ::DASH_E_UNSUPPORTED when the daemon computes on a GPU it
 *         cannot share memory with, or VMM memory was not made
 *         exportable; ::DASH_E_LIMIT;
 *         ::DASH_E_TOO_LARGE; ::DASH_E_DISCONNECTED; ::DASH_E_NOMEM.
 */
DASH_API int dash_stack_create_cuda(dash_client *c, const dash_stack_options *o,
                                    int device, float *stats_dev,
                                    float *result_dev, dash_stack **out);

/** The adopted result slot of a CUDA stack, N·B·B floats in the trainer's
 *  GPU memory (inside result_dev); NULL before the first adoption and for
 *  host stacks. Kernels queued on the stream of dash_step() after the
 *  dash_sync() that adopted it see it complete. */
DASH_API const float *dash_stack_result_cuda(const dash_stack *s);

/** The statistics, N·B·B floats, row-major blocks, for the trainer to
 *  write (for a CUDA stack: stats_dev). Valid until
 *  dash_stack_destroy(). */
DASH_API float *dash_stack_stats(dash_stack *s);

/**
 * Asks for a refresh from the statistics as they are now and returns once
 * the daemon holds its snapshot: the trainer may overwrite the statistics
 * as soon as this returns. Never waits for the math; a refresh asked for
 * while one computes replaces any refresh still waiting (coalescing).
 * For a CUDA stack the snapshot is taken on the GPU, ordered after the
 * work queued so far on cuda_stream, and work queued on cuda_stream after
 * this call waits for the copy; the CPU waits for neither, only for the
 * daemon's reply (one socket round trip).
 * A CUDA stack on pinned SHM (a daemon with backend cpu) is the
 * exception, the one place where the CPU waits for the trainer's GPU
 * work: the copy of the statistics to host memory is queued on
 * cuda_stream, and this call waits until it is complete, and so for all
 * the work queued on cuda_stream before it, since the daemon takes its
 * snapshot from host memory as the request arrives. Writes to the
 * statistics queued after this call need no ordering at all.
 * @param step         the trainer's step, reported back with the result.
 * @param cuda_stream  NULL for host stacks; for a CUDA stack the trainer's
 *                     cudaStream_t (NULL: the legacy default stream),
 *                     which dash_sync() then also orders its hand-over on.
 * @return 0; ::DASH_E_DISCONNECTED; ::DASH_E_NOT_FOUND; ::DASH_E_INVALID
 *         for a stream given with a host stack; ::DASH_E_CUDA or
 *         ::DASH_E_DEVICE_LOST when a CUDA call on cuda_stream fails.
 */
DASH_API int dash_step(dash_stack *s, uint64_t step, void *cuda_stream);

/**
 * Adopts the newest finished result. A result newer than the one held
 * is adopted at once; when none has finished yet and a refresh is in
 * flight, the call waits for one as the timeout allows.
 * @param timeout_ms  0: only look (no round trip when nothing new was
 *                    pushed); -1: wait as long as a refresh is in flight
 *                    (returns at once when none is); > 0: wait at most
 *                    this long.
 * @param info        NULL, or receives what the held result is.
 * For a CUDA stack, kernels queued on the stream of the last dash_step()
 * before this call may still read the slot held before; those queued
 * after a call that returns 1 see the adopted slot complete. Neither
 * waits on the CPU. On pinned SHM (a daemon with backend cpu), adopting
 * queues the copy of the result from host memory into its slot of
 * result_dev on that stream; the next call that asks the daemon for a
 * newer result first waits on the CPU until that copy alone is complete
 * (it usually is long since), because the daemon may then write the
 * host memory it was copied from.
 * @return 1 when a newer result was adopted; 0 when none was (nothing
 *         newer yet, or the wait timed out); < 0 on error.
 */
DASH_API int dash_sync(dash_stack *s, int timeout_ms, dash_refresh_info *info);

/** The adopted result, N·B·B floats; NULL before the first adoption and
 *  for CUDA stacks (see dash_stack_result_cuda()). Unchanged until the
 *  next dash_sync() that returns 1. */
DASH_API const float *dash_stack_result(const dash_stack *s);

/** The stack's N and B. */
DASH_API size_t dash_stack_num_blocks(const dash_stack *s);
DASH_API size_t dash_stack_block_size(const dash_stack *s);

/**
 * Unregisters the stack and frees its memory. NULL is allowed (returns
 * 0). Returns 0 even when the daemon is gone: the memory is freed.
 * A CUDA stack (not on pinned SHM) returns once the daemon no longer
 * uses the trainer's buffers, which may then be freed; when that cannot
 * be known it returns ::DASH_E_TIMEOUT (the daemon did not confirm in
 * time) or ::DASH_E_DISCONNECTED (the connection was lost while the
 * daemon still runs), and stats_dev and result_dev must stay allocated
 * until the daemon has let go of them (dashctl status) or exited.
 */
DASH_API int dash_stack_destroy(dash_stack *s);

/** Round trip to the daemon; *rtt_ms (may be NULL) gets its time. */
DASH_API int dash_ping(dash_client *c, double *rtt_ms);

#ifdef __cplusplus
}
#endif

#endif /* DASH_DASH_H */
