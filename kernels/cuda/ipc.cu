/* GPU memory and events shared between a trainer and dashd (the CUDA_IPC
 * transport): the plugin's struct dash__cuda_ipc. The client's calls run
 * on the trainer's threads, so each one that names a device makes it
 * current for its own CUDA calls only and gives the thread its device
 * back. */
#include <stdint.h>
#include <string.h>

#include <atomic>

/* The driver API's types only (CUresult, CUdeviceptr): the one driver
 * call is looked up at run time, so the plugin links no libcuda. */
#include <cuda.h>

#include "cuda.h"

static_assert(sizeof(cudaIpcMemHandle_t) == DASH_CUDA_IPC_HANDLE_BYTES &&
                  sizeof(cudaIpcEventHandle_t) == DASH_CUDA_IPC_HANDLE_BYTES,
              "CUDA IPC handles are DASH_CUDA_IPC_HANDLE_BYTES long");

/* cuMemGetAddressRange: the runtime has no call that finds the allocation
 * holding a pointer. Looking it up through the runtime keeps the plugin
 * loadable where there is no driver at all. */
typedef CUresult (*range_fn)(CUdeviceptr *base, size_t *size, CUdeviceptr dptr);
static std::atomic<range_fn> g_range;

/* The allocation that holds p, in the current device's context. Not
 * finding one is DASH_E_BAD_MEMORY: the pointer came from outside. */
static int address_range(const void *p, uintptr_t *base, size_t *size) {
  int rc = 0;
  void *sym = NULL;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  CUdeviceptr b = 0;
  size_t s = 0;
  CUresult r;
  range_fn fn = g_range.load(std::memory_order_acquire);
  if (fn == NULL) {
    /* Threads that race here look up and store the same pointer. */
    DASH_CUDA_TRY(cudaGetDriverEntryPointByVersion(
        "cuMemGetAddressRange", &sym, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || sym == NULL) {
      rc = dash__fail(DASH_E_CUDA,
                      "cudaGetDriverEntryPointByVersion: the CUDA driver has "
                      "no cuMemGetAddressRange (query result %d)",
                      (int)q);
      goto out;
    }
    fn = (range_fn)sym;
    g_range.store(fn, std::memory_order_release);
  }
  r = fn(&b, &s, (CUdeviceptr)(uintptr_t)p);
  if (r != CUDA_SUCCESS) {
    /* The runtime's error codes carry the driver's numbers, so the sticky
     * ones are recognised by the same list. */
    rc =
        dash__fail(dash__cuda_sticky((cudaError_t)r) ? DASH_E_DEVICE_LOST
                                                     : DASH_E_BAD_MEMORY,
                   "cuMemGetAddressRange(%p): CUDA driver error %d", p, (int)r);
    goto out;
  }
  *base = (uintptr_t)b;
  *size = s;
out:
  return rc;
}

/* A call that failed on the memory it was given: DASH_E_BAD_MEMORY with
 * the runtime's text and `hint`, except that sticky errors stay
 * DASH_E_DEVICE_LOST. */
static int bad_memory(cudaError_t e, const char *call, const char *hint) {
  if (dash__cuda_sticky(e))
    return dash__cuda_status(e, call, __FILE__, __LINE__);
  (void)cudaGetLastError();
  return dash__fail(DASH_E_BAD_MEMORY, "%s: %s (%s)%s", call,
                    cudaGetErrorString(e), cudaGetErrorName(e), hint);
}

/* The driver's current-context calls, looked up like cuMemGetAddressRange:
 * cudaGetDevice() says 0 on a thread that never chose a device, and
 * cudaSetDevice(0) to "give it back" would make a context on GPU 0 of a
 * trainer that computes on another one. The context itself (NULL too) is
 * what the thread gets back. */
typedef CUresult (*ctx_get_fn)(CUcontext *ctx);
typedef CUresult (*ctx_set_fn)(CUcontext ctx);
static std::atomic<ctx_get_fn> g_ctx_get;
static std::atomic<ctx_set_fn> g_ctx_set;

static int ctx_calls(ctx_get_fn *get, ctx_set_fn *set) {
  int rc = 0;
  *get = g_ctx_get.load(std::memory_order_acquire);
  *set = g_ctx_set.load(std::memory_order_acquire);
  if (*get == NULL || *set == NULL) {
    void *g = NULL, *s = NULL;
    cudaDriverEntryPointQueryResult qg = cudaDriverEntryPointSymbolNotFound;
    cudaDriverEntryPointQueryResult qs = cudaDriverEntryPointSymbolNotFound;
    DASH_CUDA_TRY(cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &g, 12000,
                                                   cudaEnableDefault, &qg));
    DASH_CUDA_TRY(cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &s, 12000,
                                                   cudaEnableDefault, &qs));
    if (qg != cudaDriverEntryPointSuccess ||
        qs != cudaDriverEntryPointSuccess || g == NULL || s == NULL)
      return dash__fail(DASH_E_CUDA,
                        "the CUDA driver has no cuCtxGetCurrent/"
                        "cuCtxSetCurrent");
    *get = (ctx_get_fn)g;
    *set = (ctx_set_fn)s;
    g_ctx_get.store(*get, std::memory_order_release);
    g_ctx_set.store(*set, std::memory_order_release);
  }
out:
  return rc;
}

/* The calling thread's CUDA state, as enter() found it. */
struct saved_ctx {
  int switched;
  CUcontext ctx;
};

/* Makes `device` current (-1: the current one stays) and keeps the
 * caller's context in *saved for leave(). */
static int enter(int device, struct saved_ctx *saved) {
  int rc = 0, cur = -1;
  ctx_get_fn get;
  ctx_set_fn set;
  saved->switched = 0;
  saved->ctx = NULL;
  if (device < 0)
    return 0;
  if ((rc = ctx_calls(&get, &set)) < 0)
    return rc;
  if (get(&saved->ctx) != CUDA_SUCCESS)
    saved->ctx = NULL;
  /* A thread with a context on `device` already needs no switch. */
  if (saved->ctx != NULL && cudaGetDevice(&cur) == cudaSuccess && cur == device)
    return 0;
  DASH_CUDA_TRY(cudaSetDevice(device));
  saved->switched = 1;
out:
  return rc;
}

static void leave(const struct saved_ctx *saved) {
  ctx_get_fn get;
  ctx_set_fn set;
  /* The call's own outcome is what the caller needs; a failure to switch
   * back (only on a broken context) is not worth replacing it. */
  if (saved->switched && ctx_calls(&get, &set) == 0)
    (void)set(saved->ctx);
}

/* What a pointer is, for the message that refuses it. */
static const char *memory_kind(const cudaPointerAttributes *at) {
  switch (at->type) {
    case cudaMemoryTypeHost:
      return "page-locked host memory";
    case cudaMemoryTypeManaged:
      return "managed memory";
    default:
      return "host memory unknown to CUDA";
  }
}

/* With `device` current: DASH_E_BAD_MEMORY unless [ptr, ptr + bytes) is
 * memory of that device inside one allocation, whose base is *base. */
static int device_range(int device, const void *ptr, size_t bytes,
                        uintptr_t *base) {
  int rc = 0;
  cudaPointerAttributes at;
  uintptr_t b = 0, p = (uintptr_t)ptr;
  size_t size = 0;
  memset(&at, 0, sizeof(at));
  DASH_CUDA_TRY(cudaPointerGetAttributes(&at, ptr));
  if (at.type == cudaMemoryTypeDevice && at.device != device) {
    rc = dash__fail(DASH_E_BAD_MEMORY, "%p is memory of GPU %d, not of GPU %d",
                    ptr, at.device, device);
    goto out;
  }
  if (at.type != cudaMemoryTypeDevice) {
    rc = dash__fail(DASH_E_BAD_MEMORY, "%p is %s, not memory of GPU %d", ptr,
                    memory_kind(&at), device);
    goto out;
  }
  if ((rc = address_range(ptr, &b, &size)) < 0)
    goto out;
  /* p - b <= size holds for any pointer the driver placed in the
   * allocation; bytes is the caller's and is checked without a sum. */
  if (p < b || p - b > size || bytes > size - (p - b)) {
    rc = dash__fail(DASH_E_BAD_MEMORY,
                    "%zu bytes at %p leave their allocation (%zu bytes at "
                    "0x%llx)",
                    bytes, ptr, size, (unsigned long long)b);
    goto out;
  }
  *base = b;
out:
  return rc;
}

int dash__cuda_ipc_export_mem(int device, const void *ptr, size_t bytes,
                              unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                              uint64_t *offset) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaIpcMemHandle_t h;
  uintptr_t base = 0;
  cudaError_t e;
  if (device < 0)
    return dash__fail(DASH_E_INVALID, "export of %p: no device given", ptr);
  if ((rc = enter(device, &saved)) < 0 ||
      (rc = device_range(device, ptr, bytes, &base)) < 0)
    goto out;
  /* Legacy IPC exports whole cudaMalloc allocations only, by their base. */
  e = cudaIpcGetMemHandle(&h, (void *)base);
  if (e != cudaSuccess) {
    rc = bad_memory(e, "cudaIpcGetMemHandle",
                    "; memory from cuMemCreate (CUDA VMM, e.g. PyTorch's "
                    "expandable_segments) or from cudaMallocAsync pools "
                    "cannot be shared through CUDA IPC");
    goto out;
  }
  memcpy(handle, &h, sizeof(h));
  *offset = (uint64_t)((uintptr_t)ptr - base);
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_device_uuid(int device, char *uuid, size_t len) {
  int rc = 0;
  cudaDeviceProp prop;
  /* "GPU-" and 36 characters of UUID. */
  if (uuid == NULL || len < 41)
    return dash__fail(DASH_E_INVALID,
                      "a GPU UUID needs 41 bytes, the buffer has %zu", len);
  DASH_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
  dash__cuda_uuid_text(&prop.uuid, uuid, len);
out:
  return rc;
}

int dash__cuda_ipc_event_create(
    int device, void **event,
    unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES]) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaEvent_t ev = NULL;
  cudaIpcEventHandle_t h;
  *event = NULL;
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  /* Interprocess events must not time; a host that waits for one (the
   * pinned path's dash_step) sleeps instead of spinning a core. */
  DASH_CUDA_TRY(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming |
                                                  cudaEventInterprocess |
                                                  cudaEventBlockingSync));
  DASH_CUDA_TRY(cudaIpcGetEventHandle(&h, ev));
  memcpy(handle, &h, sizeof(h));
  *event = ev;
  ev = NULL;
out:
  if (ev != NULL)
    (void)cudaEventDestroy(ev);
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_event_open(
    int device, const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
    void **event) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaEvent_t ev = NULL;
  cudaIpcEventHandle_t h;
  *event = NULL;
  memcpy(&h, handle, sizeof(h));
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaIpcOpenEventHandle(&ev, h));
  *event = ev;
out:
  leave(&saved);
  return rc;
}

void dash__cuda_ipc_event_destroy(void *event) {
  if (event != NULL && cudaEventDestroy((cudaEvent_t)event) != cudaSuccess)
    (void)cudaGetLastError();
}

int dash__cuda_ipc_event_record(int device, void *event, void *stream) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaEvent_t ev = (cudaEvent_t)event;
  cudaStream_t s = (cudaStream_t)stream;
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaEventRecord(ev, s));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_stream_wait(int device, void *stream, void *event) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaEvent_t ev = (cudaEvent_t)event;
  cudaStream_t s = (cudaStream_t)stream;
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaStreamWaitEvent(s, ev, 0));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_mem_open(
    const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES], void **base,
    size_t *size) {
  int rc = 0;
  cudaIpcMemHandle_t h;
  void *p = NULL;
  uintptr_t b = 0;
  size_t s = 0;
  cudaError_t e;
  *base = NULL;
  *size = 0;
  memcpy(&h, handle, sizeof(h));
  /* A handle from the wire may be garbage or outlive its exporter: both
   * are the client's memory being unusable, not a broken device. */
  e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
  if (e != cudaSuccess) {
    p = NULL;
    rc = bad_memory(e, "cudaIpcOpenMemHandle", "");
    goto out;
  }
  if ((rc = address_range(p, &b, &s)) < 0)
    goto out;
  /* The mapping is the whole allocation, so p is its base; measuring
   * from p keeps the bound right even if it were not. */
  *base = p;
  *size = s - ((uintptr_t)p - b);
  p = NULL;
out:
  if (p != NULL && cudaIpcCloseMemHandle(p) != cudaSuccess)
    (void)cudaGetLastError();
  return rc;
}

void dash__cuda_ipc_mem_close(void *base) {
  if (base != NULL && cudaIpcCloseMemHandle(base) != cudaSuccess)
    (void)cudaGetLastError();
}

int dash__cuda_ipc_stream_create(int high, void **stream) {
  int rc = 0, least = 0, greatest = 0;
  cudaStream_t s = NULL;
  *stream = NULL;
  /* Numerically lower is higher priority: `least` is the lowest. */
  DASH_CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  DASH_CUDA_TRY(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking,
                                             high ? greatest : least));
  *stream = s;
out:
  return rc;
}

void dash__cuda_ipc_stream_destroy(void *stream) {
  /* Work still queued on the stream completes; the stream goes after. */
  if (stream != NULL && cudaStreamDestroy((cudaStream_t)stream) != cudaSuccess)
    (void)cudaGetLastError();
}

int dash__cuda_ipc_stream_sync(void *stream) {
  int rc = 0;
  cudaStream_t s = (cudaStream_t)stream;
  DASH_CUDA_TRY(cudaStreamSynchronize(s));
out:
  return rc;
}

int dash__cuda_ipc_alloc(void **ptr, size_t bytes) {
  int rc = 0;
  *ptr = NULL;
  DASH_CUDA_TRY(cudaMalloc(ptr, bytes));
out:
  return rc;
}

void dash__cuda_ipc_free(void *ptr) {
  if (ptr != NULL && cudaFree(ptr) != cudaSuccess)
    (void)cudaGetLastError();
}

int dash__cuda_ipc_copy(void *dst, const void *src, size_t bytes,
                        void *stream) {
  int rc = 0;
  cudaStream_t s = (cudaStream_t)stream;
  /* With unified addressing the runtime tells the devices apart itself,
   * peers included. */
  DASH_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
out:
  return rc;
}

int dash__cuda_ipc_host_register(int device, void *p, size_t bytes) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  /* Portable: page-locked for the contexts of every device, not only for
   * the one current here, as the trainer may copy from any of them. */
  DASH_CUDA_TRY(cudaHostRegister(p, bytes, cudaHostRegisterPortable));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_host_unregister(int device, void *p) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaHostUnregister(p));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_copy_on(int device, void *dst, const void *src, size_t bytes,
                           void *stream) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaStream_t s = (cudaStream_t)stream;
  /* The stream belongs to `device`, and the legacy default stream (NULL)
   * is the current device's: the device must be current. */
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_event_sync(int device, void *event) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  cudaEvent_t ev = (cudaEvent_t)event;
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaEventSynchronize(ev));
out:
  leave(&saved);
  return rc;
}

int dash__cuda_ipc_mem_check(int device, const void *ptr, size_t bytes) {
  int rc = 0;
  struct saved_ctx saved = {0, NULL};
  uintptr_t base = 0;
  if (device < 0)
    return dash__fail(DASH_E_INVALID, "check of %p: no device given", ptr);
  if ((rc = enter(device, &saved)) < 0)
    goto out;
  rc = device_range(device, ptr, bytes, &base);
out:
  leave(&saved);
  return rc;
}
