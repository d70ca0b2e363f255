/* GPU memory and events shared between a trainer and dashd (the CUDA_IPC
 * transport): the plugin's struct dash__cuda_ipc. The client's calls run
 * on the trainer's threads, so each one that names a device makes it
 * current for its own CUDA calls only and gives the thread its device
 * back. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

/* The driver API's types and prototypes only (CUresult, CUdeviceptr): the
 * driver calls are looked up at run time, so the plugin links no
 * libcuda. */
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

int dash__cuda_ipc_event_query(void *event) {
  int rc = 0;
  cudaError_t e = cudaEventQuery((cudaEvent_t)event);
  if (e == cudaErrorNotReady) {
    /* Not a failure: the work before the record still runs. Cleared in
     * case the runtime kept it as this thread's last error, which the
     * next launch check would then report. */
    (void)cudaGetLastError();
    return 0;
  }
  DASH_CUDA_TRY(e);
  rc = 1;
out:
  return rc;
}

int dash__cuda_ipc_current_device(void) {
  int rc = 0, device = -1;
  DASH_CUDA_TRY(cudaGetDevice(&device));
  rc = device;
out:
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

/* CUDA_VMM_FD: memory of CUDA's virtual memory API (cuMemCreate and
 * cuMemMap, as PyTorch's expandable_segments allocates), shared as one
 * POSIX fd per physical allocation. The runtime has no such calls; the
 * driver's are looked up like cuMemGetAddressRange, their types taken from
 * the prototypes in <cuda.h> (decltype needs no definition). Every one of
 * them is an ABI of CUDA 10.2 or 11.0 that CUDA 12.0 still had. */
#define DASH_VMM_CALLS(X)                               \
  X(retain, cuMemRetainAllocationHandle)                \
  X(release, cuMemRelease)                              \
  X(properties, cuMemGetAllocationPropertiesFromHandle) \
  X(granularity, cuMemGetAllocationGranularity)         \
  X(export_fd, cuMemExportToShareableHandle)            \
  X(import_fd, cuMemImportFromShareableHandle)          \
  X(create, cuMemCreate)                                \
  X(reserve, cuMemAddressReserve)                       \
  X(address_free, cuMemAddressFree)                     \
  X(map, cuMemMap)                                      \
  X(unmap, cuMemUnmap)                                  \
  X(set_access, cuMemSetAccess)                         \
  X(error_name, cuGetErrorName)

struct vmm_api {
#define DASH_VMM_FIELD(field, fn) decltype(&fn) field;
  DASH_VMM_CALLS(DASH_VMM_FIELD)
#undef DASH_VMM_FIELD
};

static struct vmm_api g_vmm;
static std::atomic<bool> g_vmm_ready;
static std::mutex g_vmm_lock;

/* One driver entry point into *sym; 0 or the reason it is missing. */
static int vmm_lookup(const char *name, void **sym) {
  int rc = 0;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  *sym = NULL;
  DASH_CUDA_TRY(cudaGetDriverEntryPointByVersion(name, sym, 12000,
                                                 cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || *sym == NULL)
    rc = dash__fail(DASH_E_CUDA,
                    "cudaGetDriverEntryPointByVersion: the CUDA driver has "
                    "no %s (query result %d)",
                    name, (int)q);
out:
  return rc;
}

/* The driver's virtual memory calls, looked up on first use. A failed
 * look-up is tried again by the next call, as address_range() does. */
static int vmm_calls(const struct vmm_api **api) {
  int rc = 0;
  void *sym = NULL;
  struct vmm_api found;
  *api = NULL;
  if (g_vmm_ready.load(std::memory_order_acquire)) {
    *api = &g_vmm;
    return 0;
  }
  memset(&found, 0, sizeof(found));
#define DASH_VMM_LOOKUP(field, fn)                  \
  if (rc == 0 && (rc = vmm_lookup(#fn, &sym)) == 0) \
    found.field = (decltype(&fn))sym;
  DASH_VMM_CALLS(DASH_VMM_LOOKUP)
#undef DASH_VMM_LOOKUP
  if (rc < 0)
    return rc;
  /* Threads that race here found the same pointers; one stores them. */
  {
    std::lock_guard<std::mutex> hold(g_vmm_lock);
    if (!g_vmm_ready.load(std::memory_order_relaxed)) {
      g_vmm = found;
      g_vmm_ready.store(true, std::memory_order_release);
    }
  }
  *api = &g_vmm;
  return 0;
}

/* The driver's name of r. */
static const char *cu_name(const struct vmm_api *api, CUresult r) {
  const char *name = NULL;
  if (api == NULL || api->error_name(r, &name) != CUDA_SUCCESS || name == NULL)
    name = "unknown CUDA driver error";
  return name;
}

/* What a failed driver call is: sticky errors DASH_E_DEVICE_LOST and a
 * lack of memory DASH_E_NOMEM, as for the runtime's (the driver's codes are
 * the runtime's numbers for the same errors); anything else `status`. */
static int cu_status(CUresult r, int status) {
  if (dash__cuda_sticky((cudaError_t)r))
    return DASH_E_DEVICE_LOST;
  return r == CUDA_ERROR_OUT_OF_MEMORY ? DASH_E_NOMEM : status;
}

static int cu_fail(const struct vmm_api *api, CUresult r, int status,
                   const char *call, const char *file, int line) {
  return dash__fail(cu_status(r, status), "%s failed at %s:%d: %s (%d)", call,
                    file, line, cu_name(api, r), (int)r);
}

/* Runs the driver call x of `api`; on failure stores what cu_fail makes of
 * it (status, unless sticky or out of memory) in `rc` and jumps to `out`. */
#define DASH_CU_TRY(x, status)                                      \
  do {                                                              \
    CUresult dash_r_ = (x);                                         \
    if (dash_r_ != CUDA_SUCCESS) {                                  \
      rc = cu_fail(api, dash_r_, (status), #x, __FILE__, __LINE__); \
      goto out;                                                     \
    }                                                               \
  } while (0)

/* 1 when the allocation mapped at address a is h's, 0 when it is another
 * or none is mapped there, DASH_E_DEVICE_LOST when the driver cannot
 * tell. */
static int same_allocation(const struct vmm_api *api,
                           CUmemGenericAllocationHandle h, uintptr_t a) {
  CUmemGenericAllocationHandle other = 0;
  CUresult r = api->retain(&other, (void *)a);
  if (r != CUDA_SUCCESS)
    return dash__cuda_sticky((cudaError_t)r)
               ? cu_fail(api, r, DASH_E_DEVICE_LOST,
                         "cuMemRetainAllocationHandle", __FILE__, __LINE__)
               : 0;
  (void)api->release(other);
  /* The driver returns "the same handle value used to map the memory"
   * (cuMemRetainAllocationHandle's documentation), so equal values are one
   * allocation. */
  return other == h;
}

/* The physical allocation mapped at address `at` on `device`: *h (retained,
 * for the caller to release) and the extent [*start, *stop) of its mapping.
 * cuMemGetAddressRange is not asked: NVIDIA documents it for cuMemAlloc
 * only, and what it reports for memory of cuMemMap (the one allocation or
 * the whole reservation) is not promised. Mappings start and end on
 * multiples of the allocation's minimum granularity (cuMemMap's
 * documentation), so stepping by it from `at` finds where the same
 * allocation stops being mapped. */
static int vmm_piece(const struct vmm_api *api, int device, uintptr_t at,
                     CUmemGenericAllocationHandle *h, uintptr_t *start,
                     uintptr_t *stop) {
  int rc = 0, held = 0, same = 0;
  CUmemGenericAllocationHandle mine = 0;
  CUmemAllocationProp prop;
  size_t gran = 0;
  uintptr_t lo, hi;
  CUresult r;
  memset(&prop, 0, sizeof(prop));
  r = api->retain(&mine, (void *)at);
  if (r != CUDA_SUCCESS) {
    rc = dash__fail(cu_status(r, DASH_E_BAD_MEMORY),
                    "0x%llx is not memory mapped with CUDA's virtual memory "
                    "API (cuMemCreate/cuMemMap): "
                    "cuMemRetainAllocationHandle: %s (%d)",
                    (unsigned long long)at, cu_name(api, r), (int)r);
    goto out;
  }
  held = 1;
  DASH_CU_TRY(api->properties(&prop, mine), DASH_E_CUDA);
  if (prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    rc = dash__fail(DASH_E_BAD_MEMORY,
                    "0x%llx is not memory of a GPU (location type %d)",
                    (unsigned long long)at, (int)prop.location.type);
    goto out;
  }
  if (prop.location.id != device) {
    rc = dash__fail(DASH_E_BAD_MEMORY,
                    "0x%llx is memory of GPU %d, not of GPU %d",
                    (unsigned long long)at, prop.location.id, device);
    goto out;
  }
  if ((prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) ==
      0) {
    rc =
        dash__fail(DASH_E_UNSUPPORTED,
                   "the allocation at 0x%llx was made without "
                   "CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR in its "
                   "requestedHandleTypes (0x%x), so it cannot be shared as a "
                   "file descriptor; the allocation must be made exportable "
                   "(PyTorch's expandable_segments: with POSIX file "
                   "descriptor handles, not fabric handles)",
                   (unsigned long long)at, (unsigned)prop.requestedHandleTypes);
    goto out;
  }
  DASH_CU_TRY(api->granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
              DASH_E_CUDA);
  if (gran == 0) {
    rc = dash__fail(DASH_E_CUDA, "cuMemGetAllocationGranularity: 0 bytes");
    goto out;
  }
  lo = at - at % gran;
  hi = lo + gran;
  while (lo >= gran && (same = same_allocation(api, mine, lo - gran)) > 0)
    lo -= gran;
  if (same < 0) {
    rc = same;
    goto out;
  }
  while ((same = same_allocation(api, mine, hi)) > 0)
    hi += gran;
  if (same < 0) {
    rc = same;
    goto out;
  }
  *h = mine;
  *start = lo;
  *stop = hi;
  held = 0;
out:
  if (held)
    (void)api->release(mine);
  return rc;
}

int dash__cuda_ipc_vmm_owns(int device, const void *ptr) {
  struct saved_ctx saved = {0, NULL};
  const struct vmm_api *api = NULL;
  CUmemGenericAllocationHandle h = 0;
  cudaPointerAttributes at;
  int owns = 0;
  if (device < 0 || ptr == NULL)
    return 0;
  memset(&at, 0, sizeof(at));
  if (enter(device, &saved) < 0 || vmm_calls(&api) < 0)
    goto out;
  /* Only memory mapped with cuMemMap has an allocation handle. */
  if (api->retain(&h, (void *)ptr) != CUDA_SUCCESS)
    goto out;
  (void)api->release(h);
  if (cudaPointerGetAttributes(&at, ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    goto out;
  }
  owns = at.type == cudaMemoryTypeDevice && at.device == device;
out:
  leave(&saved);
  return owns;
}

int dash__cuda_ipc_vmm_export(int device, const void *ptr, size_t bytes,
                              int *fds, uint64_t *sizes, size_t max,
                              size_t *count, uint64_t *offset) {
  int rc = 0, held = 0, fd = -1;
  struct saved_ctx saved = {0, NULL};
  const struct vmm_api *api = NULL;
  CUmemGenericAllocationHandle h = 0;
  uintptr_t p = (uintptr_t)ptr, end = 0, at, start = 0, stop = 0;
  size_t n = 0;
  if (fds == NULL || sizes == NULL || count == NULL || offset == NULL)
    return dash__fail(DASH_E_INVALID,
                      "fds, sizes, count and offset must not be NULL");
  *count = 0;
  *offset = 0;
  if (device < 0)
    return dash__fail(DASH_E_INVALID, "export of %p: no device given", ptr);
  /* An empty range still names the byte it starts at. */
  if (p == 0 || (bytes ? bytes : 1) > UINTPTR_MAX - p)
    return dash__fail(DASH_E_BAD_MEMORY,
                      "%zu bytes at %p are not memory of GPU %d", bytes, ptr,
                      device);
  end = p + (bytes ? bytes : 1);
  if ((rc = enter(device, &saved)) < 0 || (rc = vmm_calls(&api)) < 0)
    goto out;
  for (at = p; at < end; at = stop) {
    if ((rc = vmm_piece(api, device, at, &h, &start, &stop)) < 0)
      goto out;
    held = 1;
    if (n == 0) {
      *offset = (uint64_t)(p - start);
    } else if (start != at) {
      /* The allocation at `at` is mapped below it too: the range is not
       * one allocation after another. */
      rc = dash__fail(DASH_E_BAD_MEMORY,
                      "%zu bytes at %p: the allocations are not mapped back "
                      "to back (one maps 0x%llx, not 0x%llx onwards)",
                      bytes, ptr, (unsigned long long)start,
                      (unsigned long long)at);
      goto out;
    }
    if (n == max) {
      rc = dash__fail(DASH_E_TOO_LARGE,
                      "%zu bytes at %p span more than %zu physical "
                      "allocations",
                      bytes, ptr, max);
      goto out;
    }
    DASH_CU_TRY(
        api->export_fd(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
        DASH_E_CUDA);
    /* Children the trainer forks (data loader workers) must not keep the
     * GPU memory alive; libdash sends the fd and closes it. */
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    fds[n] = fd;
    sizes[n] = (uint64_t)(stop - start);
    n++;
    (void)api->release(h);
    held = 0;
  }
  *count = n;
out:
  if (held)
    (void)api->release(h);
  if (rc < 0)
    for (size_t i = 0; i < n; i++)
      (void)close(fds[i]);
  leave(&saved);
  return rc;
}

/* Unmaps the count mappings of sizes[i] bytes laid back to back from va
 * and frees the reservation of their total; errors are of no use here. */
static void vmm_unmap(const struct vmm_api *api, CUdeviceptr va,
                      const uint64_t *sizes, size_t mapped, size_t total) {
  CUdeviceptr at = va;
  for (size_t i = 0; i < mapped; i++) {
    (void)api->unmap(at, (size_t)sizes[i]);
    at += sizes[i];
  }
  (void)api->address_free(va, total);
}

int dash__cuda_ipc_vmm_open(const int *fds, const uint64_t *sizes, size_t count,
                            void **base) {
  int rc = 0, dev = -1;
  const struct vmm_api *api = NULL;
  CUmemGenericAllocationHandle *h = NULL;
  CUmemAllocationProp prop;
  CUmemAccessDesc access;
  CUdeviceptr va = 0, at;
  size_t imported = 0, mapped = 0, total = 0, align = 0, gran = 0, i;
  CUresult r;
  if (base == NULL || fds == NULL || sizes == NULL || count == 0)
    return dash__fail(DASH_E_INVALID,
                      "fds, sizes and base must not be NULL, count not 0");
  *base = NULL;
  /* The sizes came from the wire: checked before anything is made. */
  for (i = 0; i < count; i++) {
    if (sizes[i] == 0 || sizes[i] > SIZE_MAX - total)
      return dash__fail(DASH_E_BAD_MEMORY,
                        "piece %zu of %zu: %llu bytes is no size to map", i,
                        count, (unsigned long long)sizes[i]);
    total += (size_t)sizes[i];
  }
  if ((rc = vmm_calls(&api)) < 0)
    goto out;
  /* The driver calls below act for the current device, whose context the
   * runtime makes on its first call that needs one. */
  DASH_CUDA_TRY(cudaGetDevice(&dev));
  DASH_CUDA_TRY(cudaFree(NULL));
  h = (CUmemGenericAllocationHandle *)calloc(count, sizeof(*h));
  if (h == NULL) {
    rc = dash__fail(DASH_E_NOMEM, "handles of %zu allocations", count);
    goto out;
  }
  for (i = 0; i < count; i++) {
    /* The fd is not consumed: the caller closes it. */
    r = api->import_fd(&h[i], (void *)(uintptr_t)fds[i],
                       CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    if (r != CUDA_SUCCESS) {
      rc = dash__fail(cu_status(r, DASH_E_BAD_MEMORY),
                      "fd %d (piece %zu) is no CUDA allocation: "
                      "cuMemImportFromShareableHandle: %s (%d)",
                      fds[i], i, cu_name(api, r), (int)r);
      goto out;
    }
    imported++;
    memset(&prop, 0, sizeof(prop));
    DASH_CU_TRY(api->properties(&prop, h[i]), DASH_E_CUDA);
    DASH_CU_TRY(
        api->granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
        DASH_E_CUDA);
    if (gran == 0 || sizes[i] % gran != 0) {
      rc = dash__fail(DASH_E_BAD_MEMORY,
                      "piece %zu: %llu bytes is not a multiple of its "
                      "allocation's granularity (%zu bytes)",
                      i, (unsigned long long)sizes[i], gran);
      goto out;
    }
    if (gran > align)
      align = gran;
  }
  DASH_CU_TRY(api->reserve(&va, total, align, 0, 0), DASH_E_CUDA);
  for (i = 0, at = va; i < count; i++) {
    /* The driver refuses a mapping larger than the allocation: the size
     * came from the client and does not fit what it sent. */
    r = api->map(at, (size_t)sizes[i], 0, h[i], 0);
    if (r != CUDA_SUCCESS) {
      rc = dash__fail(cu_status(r, DASH_E_BAD_MEMORY),
                      "piece %zu: %llu bytes of fd %d do not map (more than "
                      "its allocation?): cuMemMap: %s (%d)",
                      i, (unsigned long long)sizes[i], fds[i], cu_name(api, r),
                      (int)r);
      goto out;
    }
    mapped++;
    at += sizes[i];
  }
  memset(&access, 0, sizeof(access));
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = dev;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  DASH_CU_TRY(api->set_access(va, total, &access, 1), DASH_E_CUDA);
  *base = (void *)(uintptr_t)va;
out:
  if (rc < 0 && va != 0)
    vmm_unmap(api, va, sizes, mapped, total);
  /* The mappings keep the memory; the handles are not needed any more
   * (cuMemRelease's documentation). */
  for (i = 0; i < imported; i++)
    (void)api->release(h[i]);
  free(h);
  return rc;
}

void dash__cuda_ipc_vmm_close(void *base, const uint64_t *sizes, size_t count) {
  const struct vmm_api *api = NULL;
  size_t total = 0;
  if (base == NULL || sizes == NULL || vmm_calls(&api) < 0)
    return;
  for (size_t i = 0; i < count; i++)
    total += (size_t)sizes[i];
  vmm_unmap(api, (CUdeviceptr)(uintptr_t)base, sizes, count, total);
}

/* What vmm_alloc made, for vmm_free: `pieces` mappings of `piece` bytes
 * from base on `device`. */
struct vmm_block {
  struct vmm_block *next;
  uintptr_t base;
  size_t piece, pieces;
  int device;
};

static std::mutex g_blocks_lock;
static struct vmm_block *g_blocks;

int dash__cuda_ipc_vmm_alloc(int device, size_t piece, size_t pieces,
                             void **ptr) {
  int rc = 0, dev = -1;
  struct saved_ctx saved = {0, NULL};
  const struct vmm_api *api = NULL;
  CUmemGenericAllocationHandle *h = NULL;
  CUmemAllocationProp prop;
  CUmemAccessDesc access;
  CUdeviceptr va = 0;
  struct vmm_block *block = NULL;
  size_t gran = 0, created = 0, mapped = 0, total = 0, i;
  if (ptr == NULL)
    return dash__fail(DASH_E_INVALID, "ptr is NULL");
  *ptr = NULL;
  if (piece == 0 || pieces == 0)
    return dash__fail(DASH_E_INVALID, "%zu pieces of %zu bytes", pieces, piece);
  if ((rc = enter(device, &saved)) < 0 || (rc = vmm_calls(&api)) < 0)
    goto out;
  DASH_CUDA_TRY(cudaGetDevice(&dev));
  memset(&prop, 0, sizeof(prop));
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  DASH_CU_TRY(api->granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
              DASH_E_CUDA);
  if (gran == 0 || piece > SIZE_MAX - (gran - 1) ||
      (piece + gran - 1) / gran * gran > SIZE_MAX / pieces) {
    rc = dash__fail(DASH_E_NOMEM, "%zu pieces of %zu bytes (granularity %zu)",
                    pieces, piece, gran);
    goto out;
  }
  piece = (piece + gran - 1) / gran * gran;
  total = piece * pieces;
  h = (CUmemGenericAllocationHandle *)calloc(pieces, sizeof(*h));
  block = (struct vmm_block *)calloc(1, sizeof(*block));
  if (h == NULL || block == NULL) {
    rc = dash__fail(DASH_E_NOMEM, "handles of %zu allocations", pieces);
    goto out;
  }
  for (created = 0; created < pieces; created++)
    DASH_CU_TRY(api->create(&h[created], piece, &prop, 0), DASH_E_CUDA);
  DASH_CU_TRY(api->reserve(&va, total, gran, 0, 0), DASH_E_CUDA);
  for (mapped = 0; mapped < pieces; mapped++)
    DASH_CU_TRY(api->map(va + mapped * piece, piece, 0, h[mapped], 0),
                DASH_E_CUDA);
  memset(&access, 0, sizeof(access));
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = dev;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  DASH_CU_TRY(api->set_access(va, total, &access, 1), DASH_E_CUDA);
  block->base = (uintptr_t)va;
  block->piece = piece;
  block->pieces = pieces;
  block->device = dev;
  {
    std::lock_guard<std::mutex> hold(g_blocks_lock);
    block->next = g_blocks;
    g_blocks = block;
  }
  block = NULL;
  *ptr = (void *)(uintptr_t)va;
out:
  if (rc < 0 && va != 0) {
    for (i = 0; i < mapped; i++)
      (void)api->unmap(va + i * piece, piece);
    (void)api->address_free(va, total);
  }
  /* The mappings keep the memory; vmm_free unmaps it and it goes. */
  for (i = 0; i < created; i++)
    (void)api->release(h[i]);
  free(h);
  free(block);
  leave(&saved);
  return rc;
}

void dash__cuda_ipc_vmm_free(void *ptr) {
  struct vmm_block *block = NULL;
  struct saved_ctx saved = {0, NULL};
  const struct vmm_api *api = NULL;
  if (ptr == NULL)
    return;
  {
    std::lock_guard<std::mutex> hold(g_blocks_lock);
    for (struct vmm_block **pp = &g_blocks; *pp != NULL; pp = &(*pp)->next) {
      if ((*pp)->base == (uintptr_t)ptr) {
        block = *pp;
        *pp = block->next;
        break;
      }
    }
  }
  if (block == NULL)
    return; /* not vmm_alloc's; there is no one to tell */
  if (enter(block->device, &saved) == 0 && vmm_calls(&api) == 0) {
    for (size_t i = 0; i < block->pieces; i++)
      (void)api->unmap(block->base + i * block->piece, block->piece);
    (void)api->address_free(block->base, block->piece * block->pieces);
  }
  leave(&saved);
  free(block);
}
