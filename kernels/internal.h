/* Names shared between the files of the root library; not installed. */
#ifndef DASH_KERNELS_INTERNAL_H
#define DASH_KERNELS_INTERNAL_H

#include <stddef.h>

#include "dash/roots.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a printf-style detail for dash_last_error() and returns status,
 * so that a failure reads `return dash__fail(DASH_E_INVALID, "...", ...);`. */
int dash__fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Forgets the detail of an earlier failure. */
void dash__clear_error(void);

/* Monotonic clock in milliseconds. */
double dash__now_ms(void);

/* Non-zero when all n floats of x are finite. */
int dash__all_finite(const float *x, size_t n);

struct dash_roots_plan {
  dash_roots_options opts; /* AUTO fields resolved */
  size_t n;                /* blocks */
  size_t b;                /* block size */
  dash_block_info *infos;  /* n entries, for callers who pass none */
  void *backend;           /* the backend's own state */
};

/* The CPU backend (kernels/cpu/). */
int dash__cpu_plan_init(struct dash_roots_plan *plan);
int dash__cpu_execute(struct dash_roots_plan *plan, float *out, const float *in,
                      dash_block_info *info);
void dash__cpu_plan_free(struct dash_roots_plan *plan);

/* Compaction of a batch whose slots 0..a−1 hold blocks slot_block[j] and
 * of which the slots with leave[j] set are done: fills each such slot
 * below the new count with a live slot from above it, recording the
 * copies (move_src[i] → move_dst[i], *moves of them, at most a) and
 * updating slot_block. Returns the new count of live slots, which then
 * occupy slots 0..count−1. */
size_t dash__slots_compact(const unsigned char *leave, size_t a,
                           int *slot_block, int *move_src, int *move_dst,
                           size_t *moves);

/* The CUDA backend. It lives in a plugin, libdash_cuda.so (kernels/cuda/),
 * loaded on first use by kernels/cuda_loader.c, so that libdash, dashd and
 * the tools load and run on machines without the CUDA libraries; those
 * machines simply have no CUDA device. The entry points below are the
 * loader's; each forwards to the plugin. */

/* The number of usable devices: 0 without the plugin, a driver or a
 * device. */
int dash__cuda_device_count(void);
/* "NAME (GPU-UUID)" of the current device; 0 or DASH_E_NO_DEVICE. */
int dash__cuda_describe(char *buf, size_t len);
/* Makes the device named by ordinal or UUID (prefix) current; 0,
 * DASH_E_INVALID or DASH_E_NO_DEVICE. */
int dash__cuda_select(const char *device);
/* Makes the plan's device state (context, workspaces) on the current
 * device and resolves AUTO fields for it. */
int dash__cuda_plan_init(struct dash_roots_plan *plan);
/* Computes the stack; out and in are host memory unless on_device, and
 * stream (a cudaStream_t, may be NULL) orders the work after the caller's
 * when they are device memory. */
int dash__cuda_execute(struct dash_roots_plan *plan, float *out,
                       const float *in, dash_block_info *info, int on_device,
                       void *stream);
void dash__cuda_plan_free(struct dash_roots_plan *plan);

/* The plugin's interface, versioned: the loader refuses a plugin of
 * another ABI or one built with other struct layouts. */
#define DASH_CUDA_PLUGIN_ABI 3
#define DASH_CUDA_PLUGIN_SYMBOL "dash_cuda_plugin_entry"

/* What the loader gives the plugin. */
struct dash__cuda_host {
  int abi;
  size_t plan_size;    /* sizeof(struct dash_roots_plan) */
  size_t options_size; /* sizeof(dash_roots_options) */
  /* Records a failure for the caller's dash_last_error(); returns status. */
  int (*fail)(int status, const char *message);
};

/* dash-bench's device helpers, as tools/bench_cuda.h declares them: the
 * plugin carries them so that dash-bench need not link CUDA itself. */
struct dash__cuda_tools {
  const char *(*error)(void);
  int (*device)(char *name, size_t name_len, char *desc, size_t desc_len);
  int (*alloc)(void **dev, size_t bytes);
  void (*free)(void *dev);
  int (*upload)(void *dev, const void *host, size_t bytes);
  int (*download)(void *host, const void *dev, size_t bytes);
  int (*sync)(void);
  int (*roofline)(size_t n, size_t b, dash_precision precision, int rounds,
                  double min_ms, double *gflops);
};

/* What the plugin gives the loader. */
struct dash__cuda_plugin {
  int abi;
  size_t plan_size, options_size;
  int (*device_count)(void);
  int (*describe)(char *buf, size_t len);
  int (*select)(const char *device);
  int (*plan_init)(struct dash_roots_plan *plan);
  int (*execute)(struct dash_roots_plan *plan, float *out, const float *in,
                 dash_block_info *info, int on_device, void *stream);
  void (*plan_free)(struct dash_roots_plan *plan);
  const struct dash__cuda_tools *tools;
};

typedef const struct dash__cuda_plugin *(*dash__cuda_plugin_entry)(
    const struct dash__cuda_host *host);

/* The loaded plugin, or NULL with a reason in *why (a static string or
 * one owned by the loader). Loads it on the first call; thread-safe. */
const struct dash__cuda_plugin *dash__cuda_load_plugin(const char **why);

#ifdef __cplusplus
}
#endif

#endif
