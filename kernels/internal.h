/* Names shared between the files of the root library; not installed. */
#ifndef DASH_KERNELS_INTERNAL_H
#define DASH_KERNELS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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
/* The ordinal of the visible device whose UUID ("GPU-...") is uuid, or -1
 * (no such device, no plugin, or NULL). */
int dash__cuda_device_of_uuid(const char *uuid);
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
#define DASH_CUDA_PLUGIN_ABI 7
#define DASH_CUDA_PLUGIN_SYMBOL "dash_cuda_plugin_entry"

/* What the loader gives the plugin. */
struct dash__cuda_host {
  int abi;
  size_t plan_size;    /* sizeof(struct dash_roots_plan) */
  size_t options_size; /* sizeof(dash_roots_options) */
  /* Records a failure for the caller's dash_last_error(); returns status. */
  int (*fail)(int status, const char *message);
  /* The CPU backend, for plugins that compute on host memory (the test
   * plugin that simulates a GPU in host memory, tests/cuda_sim.c). */
  int (*cpu_plan_init)(struct dash_roots_plan *plan);
  int (*cpu_execute)(struct dash_roots_plan *plan, float *out, const float *in,
                     dash_block_info *info);
  void (*cpu_plan_free)(struct dash_roots_plan *plan);
};

/* Bytes of a CUDA IPC handle (cudaIpcMemHandle_t, cudaIpcEventHandle_t). */
#define DASH_CUDA_IPC_HANDLE_BYTES 64

/* GPU memory and events shared between a trainer and dashd (the CUDA_IPC
 * transport). Streams and events are opaque (cudaStream_t, cudaEvent_t);
 * every call returns 0 or a dash_status with the detail recorded. Calls
 * that take a device run on it and leave the calling thread's current
 * device as it was: libdash runs them on the trainer's threads. */
struct dash__cuda_ipc {
  /* The client's side. */
  /* The allocation that holds [ptr, ptr + bytes) on `device`: its IPC
   * handle and the offset of ptr inside it (PyTorch's caching allocator
   * hands out pieces of larger allocations). DASH_E_BAD_MEMORY when ptr
   * is not memory of that device or the range leaves its allocation. */
  int (*export_mem)(int device, const void *ptr, size_t bytes,
                    unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                    uint64_t *offset);
  /* "GPU-xxxxxxxx-xxxx-..." of the device with this ordinal. */
  int (*device_uuid)(int device, char *uuid, size_t len);
  /* An interprocess event (no timing) on `device` (-1: the current
   * device), and its handle. */
  int (*event_create)(int device, void **event,
                      unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES]);
  /* Opens another process's event on `device` (-1: the current one). */
  int (*event_open)(int device,
                    const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                    void **event);
  /* Destroys an event made or opened by the calls above; NULL is fine. */
  void (*event_destroy)(void *event);
  /* Records event on stream (NULL: the legacy default stream); both are
   * of `device` (-1: the current device). */
  int (*event_record)(int device, void *event, void *stream);
  /* Makes stream (of `device`, -1: the current one) wait for the newest
   * record of event, which may be of any device; the CPU goes on. */
  int (*stream_wait)(int device, void *stream, void *event);

  /* The daemon's side, on the current device. */
  /* Maps another process's allocation; *size is the whole allocation's
   * (cuMemGetAddressRange of the mapped base), which bounds what a client
   * may name inside it. Peer access is enabled when the allocation lives
   * on another GPU. */
  int (*mem_open)(const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                  void **base, size_t *size);
  void (*mem_close)(void *base);
  /* A non-blocking stream; high != 0 asks for the highest priority. */
  int (*stream_create)(int high, void **stream);
  void (*stream_destroy)(void *stream);
  int (*stream_sync)(void *stream);
  int (*alloc)(void **ptr, size_t bytes);
  void (*free)(void *ptr);
  /* Queues a copy of bytes between any two device pointers (of this or a
   * peer GPU) on stream. */
  int (*copy)(void *dst, const void *src, size_t bytes, void *stream);

  /* Pinned SHM, the client's side: a GPU trainer's stack served by a
   * daemon that computes on the CPU, through host memory that both
   * processes map. */
  /* Page-locks [p, p + bytes) of host memory (cudaHostRegister, portable:
   * for every device of the process), with `device` current. */
  int (*host_register)(int device, void *p, size_t bytes);
  /* Undoes host_register of the range that starts at p; `device` is
   * current while it does (-1: the current one). */
  int (*host_unregister)(int device, void *p);
  /* Queues a copy of bytes between device memory and page-locked host
   * memory, either way, on stream (NULL: the legacy default stream) of
   * `device` (-1: the current one); the CPU goes on. */
  int (*copy_on)(int device, void *dst, const void *src, size_t bytes,
                 void *stream);
  /* Waits on the CPU until the newest record of event is complete (at
   * once when it was never recorded); `device` as for host_unregister. */
  int (*event_sync)(int device, void *event);
  /* What export_mem checks, without exporting: DASH_E_BAD_MEMORY unless
   * [ptr, ptr + bytes) lies in one allocation of `device`. No IPC handle
   * is made, so the memory need not be one that CUDA IPC can share. */
  int (*mem_check)(int device, const void *ptr, size_t bytes);

  /* CUDA_VMM_FD: memory of CUDA's virtual memory API (cuMemCreate, as
   * PyTorch's expandable_segments allocates), which legacy IPC handles
   * cannot share, shared as POSIX fds of its physical allocations. */
  /* Non-zero when [ptr, ptr + 1) is such memory of `device`. */
  int (*vmm_owns)(int device, const void *ptr);
  /* The client's side: the physical allocations mapped over [ptr,
   * ptr + bytes) on `device`, in address order, each exported as a POSIX
   * fd (fds[i], which the caller closes) of sizes[i] bytes: at most max of
   * them, *count in all; *offset is where ptr lies past the start of the
   * first. DASH_E_BAD_MEMORY when the range is not wholly such memory of
   * that device, mapped back to back; DASH_E_UNSUPPORTED when an
   * allocation was made without CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
   * DASH_E_TOO_LARGE for more than max pieces. On failure no fd is left
   * open. */
  int (*vmm_export)(int device, const void *ptr, size_t bytes, int *fds,
                    uint64_t *sizes, size_t max, size_t *count,
                    uint64_t *offset);
  /* The daemon's side, on the current device: imports the count fds
   * (without closing them) and maps them one after another, sizes[i]
   * bytes of each, into a new address range that the current device may
   * read and write; *base is its start. An fd that is no such allocation,
   * or one smaller than its size, is DASH_E_BAD_MEMORY. */
  int (*vmm_open)(const int *fds, const uint64_t *sizes, size_t count,
                  void **base);
  /* Unmaps and releases what vmm_open mapped at base. */
  void (*vmm_close)(void *base, const uint64_t *sizes, size_t count);
  /* For tests: `pieces` physical allocations of `piece` bytes each on
   * `device`, exportable as POSIX fds, mapped back to back at *ptr (the
   * granularity rounds piece up), and their release. */
  int (*vmm_alloc)(int device, size_t piece, size_t pieces, void **ptr);
  void (*vmm_free)(void *ptr);

  /* Whether the newest record of event (of any device) is complete,
   * without waiting: 1 when it is, and when the event was never
   * recorded; 0 while the work before it still runs; else a dash_status
   * (DASH_E_DEVICE_LOST for an error that poisons the context). The
   * daemon polls the client's GPU progress with it, never waiting on
   * it. */
  int (*event_query)(void *event);
  /* The ordinal of the calling thread's current device, or a
   * dash_status. */
  int (*current_device)(void);
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
  const struct dash__cuda_ipc *ipc;
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
