/* A CUDA plugin for tests (libdash_cuda_sim.so, loaded with
 * DASH_CUDA_PLUGIN=/path/to/it): one simulated GPU whose memory is host
 * memory, so that the CUDA_IPC paths of dashd and libdash run on machines
 * without a GPU. The math is the CPU backend's, reached through the host
 * struct; "device" allocations are sealed memfds, and an IPC handle names
 * the exporter's fd, which the importer reopens through /proc. Everything
 * runs synchronously, so every recorded event is complete at once, unless
 * a test asks for GPU work that takes time:
 *
 * With DASH_CUDA_SIM_EVENT_DELAY_MS=N (read at every record, so a test may
 * set it before any call), an event recorded at time t is complete only
 * from t + N ms, or later when its stream waited for an event that
 * completes later: event_query says 0 until then and event_sync sleeps
 * until then. A stream is done when the events recorded on it and those
 * it waited for are, and stream_sync sleeps until then. The data moves at
 * once all the same; only the completion is late, as when a trainer's
 * GPU lags behind its CPU. Completion is not shared between processes:
 * an event opened from a handle sees only the records made through it,
 * so what another process recorded is complete to it.
 *
 * Memory of CUDA's virtual memory API (vmm_alloc, as PyTorch's
 * expandable_segments allocates) is a reserved host range with one sealed
 * memfd per physical allocation mapped back to back; vmm_export hands out
 * duplicates of those fds, as cuMemExportToShareableHandle makes POSIX fds,
 * and vmm_open maps the fds it is given into a new range. As with CUDA,
 * legacy IPC refuses such memory.
 *
 * Host memory page-locked with host_register (pinned SHM: a GPU
 * trainer's stack served by a daemon that computes on the CPU) is
 * recorded, so that copies to and from it can be told from copies of
 * memory nobody page-locked.
 *
 * Where the simulation can check what the CUDA runtime would refuse, it
 * refuses: memory that is not the device's, a handle opened in the process
 * that exported it, a handle whose allocation is gone, host memory
 * registered twice or not mapped, VMM memory given to legacy IPC, an fd
 * that is no VMM allocation of the simulation or is smaller than its size;
 * and, stricter than CUDA, a second open of one allocation in one process
 * and a stream copy of host memory that is not page-locked. Never
 * installed.
 *
 * With DASH_CUDA_SIM_TRACE=FILE, every event record, stream wait and copy
 * appends a line to FILE (shared by every process that loads the
 * simulation, in the order the calls happen):
 *   R PID EVENT STREAM      record      EVENT = CREATOR-PID:ID
 *   W PID EVENT STREAM      stream wait STREAM = PID:ADDRESS, PID:0 legacy
 *   C PID STREAM DST SRC    copy        DST, SRC = own (this process's
 *                                       allocation), peer (another's,
 *                                       opened), host
 * so that a test can check the order of the stream-ordered hand-over,
 * which the synchronous simulation cannot get wrong by itself. */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SIM_NAME "dash simulated GPU"
#define SIM_UUID "GPU-5151a7ed-0000-4000-8000-000000000000"
/* The name of a VMM allocation's memfd, which vmm_open looks for. */
#define VMM_NAME "dash-sim-vmm-"
#define MEM_MAGIC "dashsim1"
#define EVENT_MAGIC "dashsev1"
#define MAGIC_BYTES 8

/* Byte offsets in a memory handle: magic, pid, fd, size, id; the rest is
 * zero. An event handle holds magic, pid and id at the same places as the
 * first three of these, with the id where the fd is. */
#define H_PID 8
#define H_FD 16
#define H_SIZE 24
#define H_ID 32

/* An allocation of the device: a memfd, mapped here. */
struct sim_alloc {
  struct sim_alloc *next;
  unsigned char *base;
  size_t size;
  int fd;
  uint64_t id;
};

/* Another process's allocation, opened here: its file tells one
 * allocation from another, whichever handle named it. A range of VMM
 * memory opened by vmm_open is one too, with vmm set (and no file: it may
 * be mapped any number of times, as with CUDA). */
struct sim_map {
  struct sim_map *next;
  unsigned char *base;
  size_t size;
  dev_t dev;
  ino_t ino;
  int vmm;
};

/* VMM memory made here (vmm_alloc): `pieces` memfds of `piece` bytes each,
 * fds[i] mapped at base + i·piece. */
struct sim_vmm {
  struct sim_vmm *next;
  unsigned char *base;
  size_t piece, pieces;
  int *fds;
};

struct sim_event {
  struct sim_event *next;
  int64_t pid;
  uint64_t id;
  uint64_t records;
  double done_ms; /* when the newest record completes; 0: never recorded */
};

struct sim_stream {
  struct sim_stream *next;
  int high;
  double busy_ms; /* when what was queued on it so far completes */
};

/* Host memory page-locked by host_register. */
struct sim_host {
  struct sim_host *next;
  uintptr_t base;
  size_t size;
};

/* The trace file (DASH_CUDA_SIM_TRACE), or -1. */
static int g_trace = -1;

/* Set once, by the loader's one call of the entry point. */
static const struct dash__cuda_host *g_host;

/* Everything below g_lock is shared by the daemon's loop and worker
 * threads. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sim_alloc *g_allocs;
static struct sim_map *g_maps;
static struct sim_vmm *g_vmms;
static struct sim_event *g_events;
static struct sim_stream *g_streams;
static struct sim_host *g_hosts;
static uint64_t g_next_id = 1;
/* busy_ms of the legacy default stream. */
static double g_legacy_busy_ms;

/* Unlinks from `list`, a list of `type` linked through `next`, the first
 * node for which `match` holds and leaves it in `node`, or NULL there when
 * none does; `match` is an expression of `node`. Takes g_lock for the
 * walk, so the caller must not hold it. A macro rather than a function:
 * each list has its own node type, and C11 cannot walk them as one. */
#define UNLINK_FIRST(type, list, node, match)     \
  do {                                            \
    pthread_mutex_lock(&g_lock);                  \
    type **link_ = &(list);                       \
    while (((node) = *link_) != NULL && !(match)) \
      link_ = &(node)->next;                      \
    if ((node) != NULL)                           \
      *link_ = (node)->next;                      \
    pthread_mutex_unlock(&g_lock);                \
  } while (0)

/* The last failure on this thread, for tools->error(). */
static _Thread_local char t_last[512];

static int sim_fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int sim_fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_last, sizeof(t_last), fmt, ap);
  va_end(ap);
  return g_host != NULL ? g_host->fail(status, t_last) : status;
}

static void put64(unsigned char *h, size_t at, uint64_t v) {
  memcpy(h + at, &v, sizeof(v));
}

static uint64_t get64(const unsigned char *h, size_t at) {
  uint64_t v;
  memcpy(&v, h + at, sizeof(v));
  return v;
}

/* Monotonic clock in milliseconds. */
static double sim_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* DASH_CUDA_SIM_EVENT_DELAY_MS: how long the work before an event record
 * takes; 0 when unset or not a number of milliseconds up to an hour. */
static double event_delay_ms(void) {
  const char *v = getenv("DASH_CUDA_SIM_EVENT_DELAY_MS");
  if (v == NULL || v[0] == '\0')
    return 0.0;
  char *end = NULL;
  long n = strtol(v, &end, 10);
  return *end == '\0' && n > 0 && n <= 3600L * 1000 ? (double)n : 0.0;
}

/* Sleeps until the monotonic clock reads at least `ms`. */
static void sleep_until_ms(double ms) {
  for (;;) {
    double left = ms - sim_now_ms();
    if (left <= 0)
      return;
    long long ns = (long long)(left * 1e6) + 1;
    struct timespec ts = {(time_t)(ns / 1000000000LL),
                          (long)(ns % 1000000000LL)};
    nanosleep(&ts, NULL);
  }
}

/* As the real plugin reports an ordinal that cudaSetDevice refuses. */
static int no_such_device(int device) {
  return sim_fail(DASH_E_CUDA,
                  "cudaSetDevice(%d): invalid device ordinal (the simulation "
                  "has device 0 only)",
                  device);
}

/* As the real plugin reports a stream or event CUDA does not know. */
static int not_ours(const char *what, const void *p) {
  return sim_fail(DASH_E_CUDA,
                  "%s %p is not one of the simulated GPU (invalid resource "
                  "handle)",
                  what, p);
}

/* Device -1 (the current one) or 0. */
static int check_device(int device) {
  return device == -1 || device == 0 ? 0 : no_such_device(device);
}

/* Callers hold g_lock. */
static struct sim_alloc *alloc_holding(uintptr_t p, size_t bytes) {
  for (struct sim_alloc *a = g_allocs; a != NULL; a = a->next) {
    uintptr_t base = (uintptr_t)a->base;
    if (p >= base && p - base < a->size && bytes <= a->size - (p - base))
      return a;
  }
  return NULL;
}

static int map_holds(uintptr_t p, size_t bytes) {
  for (struct sim_map *m = g_maps; m != NULL; m = m->next) {
    uintptr_t base = (uintptr_t)m->base;
    if (p >= base && p - base < m->size && bytes <= m->size - (p - base))
      return 1;
  }
  return 0;
}

/* The VMM memory made here that holds all of [p, p + bytes), or NULL;
 * with g_lock held. */
static struct sim_vmm *vmm_holding(uintptr_t p, size_t bytes) {
  for (struct sim_vmm *v = g_vmms; v != NULL; v = v->next) {
    uintptr_t base = (uintptr_t)v->base;
    size_t size = v->piece * v->pieces;
    if (p >= base && p - base < size && bytes <= size - (p - base))
      return v;
  }
  return NULL;
}

/* Non-zero when [p, p + bytes) is memory of the device made here, in one
 * allocation or in one range of VMM memory (its pieces are mapped back to
 * back, so a kernel or copy may cross from one to the next). */
static int own_holds(uintptr_t p, size_t bytes) {
  return alloc_holding(p, bytes) != NULL || vmm_holding(p, bytes) != NULL;
}

/* The registration that holds all of [p, p + bytes), or NULL. */
static struct sim_host *host_holding(uintptr_t p, size_t bytes) {
  for (struct sim_host *h = g_hosts; h != NULL; h = h->next)
    if (p >= h->base && p - h->base < h->size &&
        bytes <= h->size - (p - h->base))
      return h;
  return NULL;
}

/* Non-zero when [p, p + bytes) shares a byte with a registration. */
static int host_overlaps(uintptr_t p, size_t bytes) {
  for (struct sim_host *h = g_hosts; h != NULL; h = h->next)
    if (p < h->base + h->size && h->base < p + bytes)
      return 1;
  return 0;
}

/* Non-zero when [p, p + bytes) shares a byte with device memory. */
static int device_overlaps(uintptr_t p, size_t bytes) {
  for (struct sim_alloc *a = g_allocs; a != NULL; a = a->next)
    if (p < (uintptr_t)a->base + a->size && (uintptr_t)a->base < p + bytes)
      return 1;
  for (struct sim_map *m = g_maps; m != NULL; m = m->next)
    if (p < (uintptr_t)m->base + m->size && (uintptr_t)m->base < p + bytes)
      return 1;
  for (struct sim_vmm *v = g_vmms; v != NULL; v = v->next)
    if (p < (uintptr_t)v->base + v->piece * v->pieces &&
        (uintptr_t)v->base < p + bytes)
      return 1;
  return 0;
}

static int stream_known(const void *stream) {
  if (stream == NULL)
    return 1; /* the legacy default stream */
  for (struct sim_stream *s = g_streams; s != NULL; s = s->next)
    if ((const void *)s == stream)
      return 1;
  return 0;
}

static struct sim_event *event_known(const void *event) {
  for (struct sim_event *e = g_events; e != NULL; e = e->next)
    if ((const void *)e == event)
      return e;
  return NULL;
}

/* 0 when [p, p + bytes) lies in one allocation of the device or one
 * mapping opened here; otherwise what CUDA would say of a kernel or copy
 * touching host memory, as DASH_E_CUDA. */
static int check_device_memory(const char *what, const void *p, size_t bytes) {
  if (bytes == 0)
    return 0;
  pthread_mutex_lock(&g_lock);
  int ok = p != NULL &&
           (own_holds((uintptr_t)p, bytes) || map_holds((uintptr_t)p, bytes));
  pthread_mutex_unlock(&g_lock);
  if (!ok)
    return sim_fail(DASH_E_CUDA,
                    "%s [%p, +%zu bytes) is not memory of the simulated "
                    "GPU (an illegal address on a real one)",
                    what, p, bytes);
  return 0;
}

static int check_stream(const void *stream) {
  pthread_mutex_lock(&g_lock);
  int ok = stream_known(stream);
  pthread_mutex_unlock(&g_lock);
  return ok ? 0 : not_ours("stream", stream);
}

/* The device. */

static int sim_device_count(void) {
  return 1;
}

static int sim_describe(char *buf, size_t len) {
  if (buf == NULL || len == 0)
    return sim_fail(DASH_E_INVALID, "buf is NULL or empty");
  snprintf(buf, len, "%s (%s)", SIM_NAME, SIM_UUID);
  return 0;
}

/* As kernels/cuda/context.cu selects, over the one device. */
static int sim_select(const char *device) {
  if (device == NULL || device[0] == '\0')
    return sim_fail(DASH_E_INVALID, "device name is empty");
  size_t len = strlen(device);
  int ordinal = strspn(device, "0123456789") == len && len <= 5;
  int uuid = strncmp(device, "GPU-", 4) == 0 && len >= 12 &&
             strspn(device + 4, "0123456789abcdefABCDEF-") == len - 4;
  if (!ordinal && !uuid)
    return sim_fail(DASH_E_INVALID,
                    "device '%s' is neither an ordinal nor GPU-UUID "
                    "(at least 8 characters after GPU-)",
                    device);
  if (ordinal) {
    long n = strtol(device, NULL, 10);
    if (n >= 1)
      return sim_fail(DASH_E_NO_DEVICE,
                      "device %ld: only 1 CUDA device(s) are visible", n);
    return 0;
  }
  if (len > strlen(SIM_UUID) || strncasecmp(SIM_UUID, device, len) != 0)
    return sim_fail(DASH_E_NO_DEVICE, "no visible GPU has the UUID %s", device);
  return 0;
}

static int sim_device_uuid(int device, char *uuid, size_t len) {
  if (uuid == NULL || len < sizeof(SIM_UUID))
    return sim_fail(DASH_E_INVALID, "a GPU UUID needs %zu bytes",
                    sizeof(SIM_UUID));
  if (device != 0)
    return no_such_device(device);
  memcpy(uuid, SIM_UUID, sizeof(SIM_UUID));
  return 0;
}

/* The math: the CPU backend's, on "device" memory that is host memory. */

static int sim_plan_init(struct dash_roots_plan *plan) {
  return g_host->cpu_plan_init(plan);
}

static int sim_execute(struct dash_roots_plan *plan, float *out,
                       const float *in, dash_block_info *info, int on_device,
                       void *stream) {
  int rc;
  if (on_device) {
    size_t bytes = plan->n * plan->b * plan->b * sizeof(float);
    if ((rc = check_stream(stream)) < 0 ||
        (rc = check_device_memory("in", in, bytes)) < 0 ||
        (rc = check_device_memory("out", out, bytes)) < 0)
      return rc;
  }
  return g_host->cpu_execute(plan, out, in, info);
}

static void sim_plan_free(struct dash_roots_plan *plan) {
  g_host->cpu_plan_free(plan);
}

/* Memory. */

static int sim_alloc(void **ptr, size_t bytes) {
  int rc = 0, fd = -1;
  void *base = MAP_FAILED;
  struct sim_alloc *a = NULL;
  char name[64];
  uint64_t id;

  if (ptr == NULL)
    return sim_fail(DASH_E_INVALID, "ptr is NULL");
  *ptr = NULL;
  /* cudaMalloc(0) succeeds with NULL. */
  if (bytes == 0)
    return 0;
  if (bytes > (size_t)INT64_MAX)
    return sim_fail(DASH_E_NOMEM, "%zu bytes of device memory", bytes);
  pthread_mutex_lock(&g_lock);
  id = g_next_id++;
  pthread_mutex_unlock(&g_lock);
  /* The name carries the id, so that an importer can tell this
   * allocation from a later one that got the same fd number. */
  snprintf(name, sizeof(name), "dash-sim-%" PRIu64, id);
  a = calloc(1, sizeof(*a));
  fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (a == NULL || fd < 0) {
    rc = sim_fail(DASH_E_NOMEM, "device memory: %s",
                  a == NULL ? "out of memory" : strerror(errno));
    goto out;
  }
  if (ftruncate(fd, (off_t)bytes) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
    rc = sim_fail(DASH_E_NOMEM, "%zu bytes of device memory: %s", bytes,
                  strerror(errno));
    goto out;
  }
  base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    rc = sim_fail(DASH_E_NOMEM, "%zu bytes of device memory: %s", bytes,
                  strerror(errno));
    goto out;
  }
  a->base = base;
  a->size = bytes;
  a->fd = fd;
  a->id = id;
  pthread_mutex_lock(&g_lock);
  a->next = g_allocs;
  g_allocs = a;
  pthread_mutex_unlock(&g_lock);
  *ptr = base;
  a = NULL;
  fd = -1;
out:
  if (fd >= 0)
    close(fd);
  free(a);
  return rc;
}

static void sim_free(void *ptr) {
  struct sim_alloc *a = NULL;
  if (ptr == NULL)
    return;
  UNLINK_FIRST(struct sim_alloc, g_allocs, a, a->base == ptr);
  if (a == NULL)
    return; /* cudaFree would fail; there is no one to tell */
  munmap(a->base, a->size);
  close(a->fd);
  free(a);
}

static int sim_export_mem(int device, const void *ptr, size_t bytes,
                          unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                          uint64_t *offset) {
  if (handle == NULL || offset == NULL)
    return sim_fail(DASH_E_INVALID, "handle and offset must not be NULL");
  if (device < 0)
    return sim_fail(DASH_E_INVALID, "export of %p: no device given", ptr);
  if (device != 0)
    return no_such_device(device);
  pthread_mutex_lock(&g_lock);
  /* An empty range still names the byte it starts at. */
  struct sim_alloc *a = alloc_holding((uintptr_t)ptr, bytes ? bytes : 1);
  int vmm = vmm_holding((uintptr_t)ptr, 1) != NULL;
  if (a != NULL) {
    memset(handle, 0, DASH_CUDA_IPC_HANDLE_BYTES);
    memcpy(handle, MEM_MAGIC, MAGIC_BYTES);
    put64(handle, H_PID, (uint64_t)getpid());
    put64(handle, H_FD, (uint64_t)a->fd);
    put64(handle, H_SIZE, a->size);
    put64(handle, H_ID, a->id);
    *offset = (uint64_t)((const unsigned char *)ptr - a->base);
  }
  pthread_mutex_unlock(&g_lock);
  /* As cudaIpcGetMemHandle refuses memory of cuMemCreate. */
  if (vmm)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "cudaIpcGetMemHandle(%p): invalid argument; memory from "
                    "cuMemCreate (CUDA VMM, e.g. PyTorch's "
                    "expandable_segments) cannot be shared through CUDA IPC",
                    ptr);
  if (a == NULL)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "[%p, +%zu bytes) is not memory of device 0 (or leaves "
                    "its allocation)",
                    ptr, bytes);
  return 0;
}

static int sim_mem_open(const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                        void **base, size_t *size) {
  int rc = 0, fd = -1;
  void *map = MAP_FAILED;
  struct sim_map *m = NULL;
  char path[64], link[128], want[64];
  struct stat st;

  if (handle == NULL || base == NULL || size == NULL)
    return sim_fail(DASH_E_INVALID, "handle, base and size must not be NULL");
  if (memcmp(handle, MEM_MAGIC, MAGIC_BYTES) != 0)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "not a CUDA IPC handle (of the simulated GPU)");
  int64_t pid = (int64_t)get64(handle, H_PID);
  int64_t hfd = (int64_t)get64(handle, H_FD);
  uint64_t hsize = get64(handle, H_SIZE), id = get64(handle, H_ID);
  if (pid <= 0 || pid > INT_MAX || hfd < 0 || hfd > INT_MAX || hsize == 0 ||
      hsize > SIZE_MAX)
    return sim_fail(DASH_E_BAD_MEMORY, "not a CUDA IPC handle (malformed)");
  /* The runtime refuses a handle in the process that made it. */
  if (pid == (int64_t)getpid())
    return sim_fail(DASH_E_BAD_MEMORY,
                    "the CUDA IPC handle was exported by this process, "
                    "which cannot open it");
  snprintf(path, sizeof(path), "/proc/%" PRId64 "/fd/%" PRId64, pid, hfd);
  snprintf(want, sizeof(want), "/memfd:dash-sim-%" PRIu64 " (deleted)", id);
  /* The fd is gone when the exporter freed the allocation or ended. */
  ssize_t n = readlink(path, link, sizeof(link) - 1);
  if (n < 0 && errno == ENOENT)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "CUDA IPC handle of process %" PRId64
                    ": its allocation was freed or the process ended (%s: "
                    "%s)",
                    pid, path, strerror(errno));
  if (n < 0)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "CUDA IPC handle of process %" PRId64 ": %s: %s", pid, path,
                    strerror(errno));
  link[n] = '\0';
  if (strcmp(link, want) != 0)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "CUDA IPC handle of process %" PRId64
                    ": its allocation was freed (%s is %s)",
                    pid, path, link);
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    rc = sim_fail(DASH_E_BAD_MEMORY,
                  "CUDA IPC handle of process %" PRId64 ": %s: %s", pid, path,
                  strerror(errno));
    goto out;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
      (uint64_t)st.st_size != hsize) {
    rc = sim_fail(DASH_E_BAD_MEMORY,
                  "CUDA IPC handle of process %" PRId64
                  ": %s is not an allocation of %" PRIu64 " bytes",
                  pid, path, hsize);
    goto out;
  }
  m = calloc(1, sizeof(*m));
  if (m == NULL) {
    rc = sim_fail(DASH_E_NOMEM, "mapping of a CUDA IPC handle");
    goto out;
  }
  map = mmap(NULL, (size_t)hsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    rc = sim_fail(DASH_E_BAD_MEMORY, "mapping %" PRIu64 " bytes of %s: %s",
                  hsize, path, strerror(errno));
    goto out;
  }
  m->base = map;
  m->size = (size_t)hsize;
  m->dev = st.st_dev;
  m->ino = st.st_ino;
  pthread_mutex_lock(&g_lock);
  int twice = 0;
  for (struct sim_map *o = g_maps; o != NULL; o = o->next)
    twice |= !o->vmm && o->dev == m->dev && o->ino == m->ino;
  if (!twice) {
    m->next = g_maps;
    g_maps = m;
  }
  pthread_mutex_unlock(&g_lock);
  /* Stricter than CUDA 11 and later, which count a second open of one
   * handle and return the same pointer: tests then catch a daemon that
   * maps what it already holds instead of keeping one mapping. */
  if (twice) {
    rc = sim_fail(DASH_E_BAD_MEMORY,
                  "the CUDA IPC handle of process %" PRId64
                  " is already mapped in this process",
                  pid);
    goto out;
  }
  *base = map;
  *size = (size_t)hsize;
  map = MAP_FAILED;
  m = NULL;
out:
  if (map != MAP_FAILED)
    munmap(map, (size_t)hsize);
  if (fd >= 0)
    close(fd);
  free(m);
  return rc;
}

/* Unmaps what mem_open (vmm 0) or vmm_open (vmm 1) mapped at base; a
 * base that no such mapping starts at is let be. */
static void close_map(void *base, int vmm) {
  struct sim_map *m = NULL;
  if (base == NULL)
    return;
  UNLINK_FIRST(struct sim_map, g_maps, m, m->base == base && m->vmm == vmm);
  if (m == NULL)
    return;
  munmap(m->base, m->size);
  free(m);
}

static void sim_mem_close(void *base) {
  close_map(base, 0);
}

/* VMM memory: CUDA's virtual memory API, shared as POSIX fds. */

/* A memfd of `bytes` for a VMM allocation, sealed at its size as the
 * device allocations are; -1 with errno set on failure. */
static int vmm_memfd(size_t bytes) {
  char name[64];
  pthread_mutex_lock(&g_lock);
  uint64_t id = g_next_id++;
  pthread_mutex_unlock(&g_lock);
  snprintf(name, sizeof(name), VMM_NAME "%" PRIu64, id);
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return -1;
  if (ftruncate(fd, (off_t)bytes) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Reserves `total` bytes of address space and maps the count fds into it
 * one after another, sizes[i] bytes of each; MAP_FAILED with errno set on
 * failure. */
static void *vmm_map(const int *fds, const size_t *sizes, size_t count,
                     size_t total) {
  unsigned char *base =
      mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
           -1, 0);
  if (base == MAP_FAILED)
    return MAP_FAILED;
  size_t off = 0;
  for (size_t i = 0; i < count; i++) {
    if (mmap(base + off, sizes[i], PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_FIXED, fds[i], 0) == MAP_FAILED) {
      int e = errno;
      munmap(base, total);
      errno = e;
      return MAP_FAILED;
    }
    off += sizes[i];
  }
  return base;
}

static void vmm_release(struct sim_vmm *v) {
  if (v == NULL)
    return;
  if (v->base != NULL)
    munmap(v->base, v->piece * v->pieces);
  for (size_t i = 0; v->fds != NULL && i < v->pieces; i++)
    if (v->fds[i] >= 0)
      close(v->fds[i]);
  free(v->fds);
  free(v);
}

static int sim_vmm_alloc(int device, size_t piece, size_t pieces, void **ptr) {
  int rc = 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  struct sim_vmm *v = NULL;
  size_t *sizes = NULL;

  if (ptr == NULL)
    return sim_fail(DASH_E_INVALID, "ptr is NULL");
  *ptr = NULL;
  if ((rc = check_device(device)) < 0)
    return rc;
  if (piece == 0 || pieces == 0)
    return sim_fail(DASH_E_INVALID, "%zu pieces of %zu bytes", pieces, piece);
  /* The simulation's granularity is the page. */
  if (piece > SIZE_MAX - page ||
      (piece + page - 1) / page * page > (size_t)INT64_MAX / pieces)
    return sim_fail(DASH_E_NOMEM, "%zu pieces of %zu bytes", pieces, piece);
  piece = (piece + page - 1) / page * page;
  v = calloc(1, sizeof(*v));
  sizes = calloc(pieces, sizeof(*sizes));
  if (v == NULL || sizes == NULL ||
      (v->fds = calloc(pieces, sizeof(*v->fds))) == NULL) {
    rc = sim_fail(DASH_E_NOMEM, "%zu pieces of VMM memory", pieces);
    goto out;
  }
  v->piece = piece;
  v->pieces = pieces;
  for (size_t i = 0; i < pieces; i++)
    v->fds[i] = -1;
  for (size_t i = 0; i < pieces; i++) {
    sizes[i] = piece;
    if ((v->fds[i] = vmm_memfd(piece)) < 0) {
      rc = sim_fail(DASH_E_NOMEM, "cuMemCreate(%zu bytes): %s", piece,
                    strerror(errno));
      goto out;
    }
  }
  void *base = vmm_map(v->fds, sizes, pieces, piece * pieces);
  if (base == MAP_FAILED) {
    rc = sim_fail(DASH_E_NOMEM, "mapping %zu pieces of %zu bytes: %s", pieces,
                  piece, strerror(errno));
    goto out;
  }
  v->base = base;
  pthread_mutex_lock(&g_lock);
  v->next = g_vmms;
  g_vmms = v;
  pthread_mutex_unlock(&g_lock);
  *ptr = base;
  v = NULL;
out:
  vmm_release(v);
  free(sizes);
  return rc;
}

static void sim_vmm_free(void *ptr) {
  struct sim_vmm *v = NULL;
  if (ptr == NULL)
    return;
  UNLINK_FIRST(struct sim_vmm, g_vmms, v, v->base == ptr);
  vmm_release(v);
}

static int sim_vmm_owns(int device, const void *ptr) {
  if (device != 0 || ptr == NULL)
    return 0;
  pthread_mutex_lock(&g_lock);
  int owns = vmm_holding((uintptr_t)ptr, 1) != NULL;
  pthread_mutex_unlock(&g_lock);
  return owns;
}

static int sim_vmm_export(int device, const void *ptr, size_t bytes, int *fds,
                          uint64_t *sizes, size_t max, size_t *count,
                          uint64_t *offset) {
  int rc = 0;
  size_t n = 0;
  if (fds == NULL || sizes == NULL || count == NULL || offset == NULL)
    return sim_fail(DASH_E_INVALID,
                    "fds, sizes, count and offset must not be NULL");
  *count = 0;
  *offset = 0;
  if (device < 0)
    return sim_fail(DASH_E_INVALID, "export of %p: no device given", ptr);
  if (device != 0)
    return no_such_device(device);
  /* An empty range still names the byte it starts at. */
  uintptr_t p = (uintptr_t)ptr;
  size_t span = bytes ? bytes : 1;
  pthread_mutex_lock(&g_lock);
  struct sim_vmm *v = p != 0 ? vmm_holding(p, span) : NULL;
  if (v == NULL) {
    rc = sim_fail(DASH_E_BAD_MEMORY,
                  "[%p, +%zu bytes) is not VMM memory (cuMemCreate) of "
                  "device 0 mapped back to back",
                  ptr, bytes);
    goto out;
  }
  size_t first = (p - (uintptr_t)v->base) / v->piece;
  size_t last = (p + span - 1 - (uintptr_t)v->base) / v->piece;
  if (last - first >= max) {
    rc = sim_fail(DASH_E_TOO_LARGE,
                  "[%p, +%zu bytes) spans %zu physical allocations, more "
                  "than %zu",
                  ptr, bytes, last - first + 1, max);
    goto out;
  }
  /* Under the lock: vmm_free cannot close the fds meanwhile. */
  for (n = 0; n <= last - first; n++) {
    fds[n] = fcntl(v->fds[first + n], F_DUPFD_CLOEXEC, 0);
    if (fds[n] < 0) {
      rc = sim_fail(DASH_E_CUDA, "cuMemExportToShareableHandle: %s",
                    strerror(errno));
      goto out;
    }
    sizes[n] = v->piece;
  }
  *offset = (uint64_t)(p - ((uintptr_t)v->base + first * v->piece));
  *count = n;
out:
  pthread_mutex_unlock(&g_lock);
  if (rc < 0)
    for (size_t i = 0; i < n; i++)
      close(fds[i]);
  return rc;
}

/* 0 when fd is a VMM allocation of the simulation (a sealed memfd of
 * vmm_alloc's) of at least `bytes`; else why not, as DASH_E_BAD_MEMORY. */
static int vmm_check_fd(int fd, size_t i, uint64_t bytes) {
  char path[64], link[128];
  struct stat st;
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, link, sizeof(link) - 1);
  link[n > 0 ? n : 0] = '\0';
  int seals = fcntl(fd, F_GET_SEALS);
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || seals < 0 ||
      (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
          (F_SEAL_SHRINK | F_SEAL_GROW) ||
      strncmp(link, "/memfd:" VMM_NAME, strlen("/memfd:" VMM_NAME)) != 0)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "cuMemImportFromShareableHandle: fd %d (piece %zu, %s) "
                    "is no CUDA allocation",
                    fd, i, link[0] != '\0' ? link : "closed");
  if ((uint64_t)st.st_size < bytes)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "cuMemMap: piece %zu: %" PRIu64
                    " bytes of fd %d, "
                    "whose allocation has %lld (invalid argument)",
                    i, bytes, fd, (long long)st.st_size);
  return 0;
}

static int sim_vmm_open(const int *fds, const uint64_t *sizes, size_t count,
                        void **base) {
  int rc = 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), total = 0;
  size_t *lens = NULL;
  void *map = MAP_FAILED;
  struct sim_map *m = NULL;

  if (base == NULL || fds == NULL || sizes == NULL || count == 0)
    return sim_fail(DASH_E_INVALID,
                    "fds, sizes and base must not be NULL, count not 0");
  *base = NULL;
  for (size_t i = 0; i < count; i++) {
    /* cuMemMap takes whole granules only. */
    if (sizes[i] == 0 || sizes[i] % page != 0 || sizes[i] > SIZE_MAX - total)
      return sim_fail(DASH_E_BAD_MEMORY,
                      "piece %zu: %" PRIu64 " bytes is no size to map", i,
                      sizes[i]);
    total += (size_t)sizes[i];
    if ((rc = vmm_check_fd(fds[i], i, sizes[i])) < 0)
      return rc;
  }
  lens = calloc(count, sizeof(*lens));
  m = calloc(1, sizeof(*m));
  if (lens == NULL || m == NULL) {
    rc = sim_fail(DASH_E_NOMEM, "mapping %zu pieces of VMM memory", count);
    goto out;
  }
  for (size_t i = 0; i < count; i++)
    lens[i] = (size_t)sizes[i];
  map = vmm_map(fds, lens, count, total);
  if (map == MAP_FAILED) {
    rc = sim_fail(DASH_E_BAD_MEMORY, "mapping %zu pieces of VMM memory: %s",
                  count, strerror(errno));
    goto out;
  }
  m->base = map;
  m->size = total;
  m->vmm = 1;
  pthread_mutex_lock(&g_lock);
  m->next = g_maps;
  g_maps = m;
  pthread_mutex_unlock(&g_lock);
  *base = map;
  m = NULL;
out:
  free(lens);
  free(m);
  return rc;
}

static void sim_vmm_close(void *base, const uint64_t *sizes, size_t count) {
  close_map(base, 1);
}

/* Events and streams: work is done when it is queued, so an event is
 * complete once recorded and waiting on one is nothing, unless
 * DASH_CUDA_SIM_EVENT_DELAY_MS makes its completion late (the top of the
 * file). */

static int add_event(int64_t pid, uint64_t id, void **event) {
  struct sim_event *e = calloc(1, sizeof(*e));
  if (e == NULL)
    return sim_fail(DASH_E_NOMEM, "event");
  e->pid = pid;
  pthread_mutex_lock(&g_lock);
  e->id = id != 0 ? id : g_next_id++;
  e->next = g_events;
  g_events = e;
  pthread_mutex_unlock(&g_lock);
  *event = e;
  return 0;
}

static int sim_event_create(int device, void **event,
                            unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES]) {
  int rc;
  if (event == NULL || handle == NULL)
    return sim_fail(DASH_E_INVALID, "event and handle must not be NULL");
  *event = NULL;
  if ((rc = check_device(device)) < 0)
    return rc;
  if ((rc = add_event((int64_t)getpid(), 0, event)) < 0)
    return rc;
  const struct sim_event *e = *event;
  memset(handle, 0, DASH_CUDA_IPC_HANDLE_BYTES);
  memcpy(handle, EVENT_MAGIC, MAGIC_BYTES);
  put64(handle, H_PID, (uint64_t)e->pid);
  put64(handle, H_FD, e->id);
  return 0;
}

static int sim_event_open(
    int device, const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
    void **event) {
  int rc;
  if (handle == NULL || event == NULL)
    return sim_fail(DASH_E_INVALID, "handle and event must not be NULL");
  *event = NULL;
  if ((rc = check_device(device)) < 0)
    return rc;
  int64_t pid = (int64_t)get64(handle, H_PID);
  uint64_t id = get64(handle, H_FD);
  if (memcmp(handle, EVENT_MAGIC, MAGIC_BYTES) != 0 || pid <= 0 || id == 0)
    return sim_fail(DASH_E_CUDA,
                    "cudaIpcOpenEventHandle: not a CUDA IPC event handle (of "
                    "the simulated GPU)");
  return add_event(pid, id, event);
}

static void sim_event_destroy(void *event) {
  struct sim_event *e = NULL;
  if (event == NULL)
    return;
  UNLINK_FIRST(struct sim_event, g_events, e, (void *)e == event);
  free(e);
}

/* One line of the trace; a single write() with O_APPEND, so the lines of
 * several processes interleave whole. */
static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
  char line[160];
  va_list ap;
  if (g_trace < 0)
    return;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= (int)sizeof(line) - 1)
    return;
  line[n++] = '\n';
  if (write(g_trace, line, (size_t)n) != n)
    return;
}

/* Whose memory p is, for the trace; with g_lock held. */
static const char *owner(const void *p, size_t bytes) {
  if (own_holds((uintptr_t)p, bytes))
    return "own";
  return map_holds((uintptr_t)p, bytes) ? "peer" : "host";
}

/* The busy_ms of a known stream (NULL: the legacy default stream); with
 * g_lock held. */
static double *stream_busy(void *stream) {
  return stream == NULL ? &g_legacy_busy_ms
                        : &((struct sim_stream *)stream)->busy_ms;
}

/* Checks device, event and stream; counts a record when asked to. A
 * record completes after the delay, and after what its stream waits for;
 * a wait makes the stream busy until the event completes. */
static int use_event(int device, void *event, void *stream, int record) {
  int rc;
  if ((rc = check_device(device)) < 0)
    return rc;
  double done = sim_now_ms() + event_delay_ms();
  pthread_mutex_lock(&g_lock);
  struct sim_event *e = event_known(event);
  int stream_ok = stream_known(stream);
  if (e != NULL && stream_ok) {
    double *busy = stream_busy(stream);
    if (record) {
      e->records++;
      e->done_ms = done > *busy ? done : *busy;
      *busy = e->done_ms;
    } else if (e->done_ms > *busy) {
      *busy = e->done_ms;
    }
    trace("%c %d %" PRId64 ":%" PRIu64 " %d:%" PRIxPTR, record ? 'R' : 'W',
          (int)getpid(), e->pid, e->id, (int)getpid(), (uintptr_t)stream);
  }
  pthread_mutex_unlock(&g_lock);
  if (e == NULL)
    return not_ours("event", event);
  return stream_ok ? 0 : not_ours("stream", stream);
}

static int sim_event_record(int device, void *event, void *stream) {
  return use_event(device, event, stream, 1);
}

static int sim_stream_wait(int device, void *stream, void *event) {
  return use_event(device, event, stream, 0);
}

static int sim_stream_create(int high, void **stream) {
  if (stream == NULL)
    return sim_fail(DASH_E_INVALID, "stream is NULL");
  struct sim_stream *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return sim_fail(DASH_E_NOMEM, "stream");
  s->high = high != 0;
  pthread_mutex_lock(&g_lock);
  s->next = g_streams;
  g_streams = s;
  pthread_mutex_unlock(&g_lock);
  *stream = s;
  return 0;
}

static void sim_stream_destroy(void *stream) {
  struct sim_stream *s = NULL;
  if (stream == NULL)
    return;
  UNLINK_FIRST(struct sim_stream, g_streams, s, (void *)s == stream);
  free(s);
}

static int sim_stream_sync(void *stream) {
  pthread_mutex_lock(&g_lock);
  int ok = stream_known(stream);
  double until = ok ? *stream_busy(stream) : 0.0;
  pthread_mutex_unlock(&g_lock);
  if (!ok)
    return not_ours("stream", stream);
  sleep_until_ms(until);
  return 0;
}

static int sim_copy(void *dst, const void *src, size_t bytes, void *stream) {
  int rc;
  if ((rc = check_stream(stream)) < 0 ||
      (rc = check_device_memory("copy source", src, bytes)) < 0 ||
      (rc = check_device_memory("copy destination", dst, bytes)) < 0)
    return rc;
  pthread_mutex_lock(&g_lock);
  trace("C %d %d:%" PRIxPTR " %s %s", (int)getpid(), (int)getpid(),
        (uintptr_t)stream, owner(dst, bytes), owner(src, bytes));
  pthread_mutex_unlock(&g_lock);
  if (bytes > 0)
    memmove(dst, src, bytes);
  return 0;
}

/* Pinned SHM: host memory page-locked for the device. */

static int sim_host_register(int device, void *p, size_t bytes) {
  int rc;
  uintptr_t at = (uintptr_t)p;
  long page = sysconf(_SC_PAGESIZE);
  if ((rc = check_device(device)) < 0)
    return rc;
  if (p == NULL || bytes == 0 || bytes > UINTPTR_MAX - at)
    return sim_fail(DASH_E_CUDA,
                    "cudaHostRegister(%p, %zu bytes): invalid argument", p,
                    bytes);
  /* What CUDA pins must be mapped here: msync says whether every page
   * of the range is. */
  uintptr_t first = at - at % (uintptr_t)page;
  if (msync((void *)first, bytes + (at - first), MS_ASYNC) < 0)
    return sim_fail(DASH_E_CUDA,
                    "cudaHostRegister(%p, %zu bytes): the range is not "
                    "mapped (%s)",
                    p, bytes, strerror(errno));
  struct sim_host *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return sim_fail(DASH_E_NOMEM, "host registration");
  h->base = at;
  h->size = bytes;
  pthread_mutex_lock(&g_lock);
  int device_mem = device_overlaps(at, bytes);
  int twice = !device_mem && host_overlaps(at, bytes);
  if (!device_mem && !twice) {
    h->next = g_hosts;
    g_hosts = h;
  }
  pthread_mutex_unlock(&g_lock);
  if (device_mem || twice) {
    free(h);
    const char *why = device_mem ? "the range is memory of the simulated "
                                   "GPU, not host memory"
                                 : "part of the range is registered already "
                                   "(cudaErrorHostMemoryAlreadyRegistered)";
    return sim_fail(DASH_E_CUDA, "cudaHostRegister(%p, %zu bytes): %s", p,
                    bytes, why);
  }
  return 0;
}

static int sim_host_unregister(int device, void *p) {
  int rc;
  struct sim_host *h = NULL;
  if ((rc = check_device(device)) < 0)
    return rc;
  UNLINK_FIRST(struct sim_host, g_hosts, h, h->base == (uintptr_t)p);
  if (h == NULL)
    return sim_fail(DASH_E_CUDA,
                    "cudaHostUnregister(%p): no registration starts there "
                    "(cudaErrorHostMemoryNotRegistered)",
                    p);
  free(h);
  return 0;
}

/* 0 when [p, p + bytes) is device memory or lies in one registration.
 * Stricter than CUDA, which copies pageable memory too, but then stages
 * it and may return only once the copy is done: tests catch a client
 * that forgot to page-lock. */
static int check_copy_memory(const char *what, const void *p, size_t bytes) {
  pthread_mutex_lock(&g_lock);
  int ok = p != NULL &&
           (own_holds((uintptr_t)p, bytes) || map_holds((uintptr_t)p, bytes) ||
            host_holding((uintptr_t)p, bytes) != NULL);
  pthread_mutex_unlock(&g_lock);
  if (!ok)
    return sim_fail(DASH_E_CUDA,
                    "%s [%p, +%zu bytes) is neither memory of the simulated "
                    "GPU nor page-locked host memory",
                    what, p, bytes);
  return 0;
}

static int sim_copy_on(int device, void *dst, const void *src, size_t bytes,
                       void *stream) {
  int rc;
  if ((rc = check_device(device)) < 0 || (rc = check_stream(stream)) < 0)
    return rc;
  if (bytes == 0)
    return 0;
  if ((rc = check_copy_memory("copy source", src, bytes)) < 0 ||
      (rc = check_copy_memory("copy destination", dst, bytes)) < 0)
    return rc;
  pthread_mutex_lock(&g_lock);
  trace("C %d %d:%" PRIxPTR " %s %s", (int)getpid(), (int)getpid(),
        (uintptr_t)stream, owner(dst, bytes), owner(src, bytes));
  pthread_mutex_unlock(&g_lock);
  memmove(dst, src, bytes);
  return 0;
}

/* The time the newest record of event completes, in *done_ms; -1 when
 * the event is not one of the simulated GPU. */
static int event_done_ms(void *event, double *done_ms) {
  pthread_mutex_lock(&g_lock);
  const struct sim_event *e = event_known(event);
  if (e != NULL)
    *done_ms = e->done_ms;
  pthread_mutex_unlock(&g_lock);
  return e != NULL ? 0 : -1;
}

static int sim_event_sync(int device, void *event) {
  int rc;
  double done = 0.0;
  if ((rc = check_device(device)) < 0)
    return rc;
  if (event_done_ms(event, &done) < 0)
    return not_ours("event", event);
  sleep_until_ms(done);
  return 0;
}

static int sim_event_query(void *event) {
  double done = 0.0;
  if (event_done_ms(event, &done) < 0)
    return not_ours("event", event);
  return sim_now_ms() >= done ? 1 : 0;
}

static int sim_current_device(void) {
  return 0;
}

static int sim_mem_check(int device, const void *ptr, size_t bytes) {
  if (device < 0)
    return sim_fail(DASH_E_INVALID, "check of %p: no device given", ptr);
  if (device != 0)
    return no_such_device(device);
  pthread_mutex_lock(&g_lock);
  /* An empty range still names the byte it starts at. */
  size_t span = bytes ? bytes : 1;
  uintptr_t p = (uintptr_t)ptr;
  struct sim_vmm *v = vmm_holding(p, span);
  /* The real check asks cuMemGetAddressRange, which is reported to give
   * one physical allocation of VMM memory, not the range it is mapped in:
   * a range that crosses into the next allocation is refused. */
  int in_piece =
      v != NULL && (p - (uintptr_t)v->base) / v->piece ==
                       (p + span - 1 - (uintptr_t)v->base) / v->piece;
  int ok = ptr != NULL &&
           (alloc_holding(p, span) != NULL || map_holds(p, span) || in_piece);
  pthread_mutex_unlock(&g_lock);
  if (!ok)
    return sim_fail(DASH_E_BAD_MEMORY,
                    "[%p, +%zu bytes) is not memory of device 0 (or leaves "
                    "its allocation)",
                    ptr, bytes);
  return 0;
}

/* dash-bench's helpers. */

static const char *sim_tools_error(void) {
  return t_last;
}

static int sim_tools_device(char *name, size_t name_len, char *desc,
                            size_t desc_len) {
  if (name != NULL && name_len > 0)
    snprintf(name, name_len, "%s", SIM_NAME);
  if (desc != NULL && desc_len > 0)
    snprintf(desc, desc_len,
             "device 0: %s (%s), host memory, computing with the CPU "
             "backend",
             SIM_NAME, SIM_UUID);
  return 0;
}

static int sim_tools_upload(void *dev, const void *host, size_t bytes) {
  int rc = check_device_memory("upload destination", dev, bytes);
  if (rc == 0 && bytes > 0)
    memcpy(dev, host, bytes);
  return rc;
}

static int sim_tools_download(void *host, const void *dev, size_t bytes) {
  int rc = check_device_memory("download source", dev, bytes);
  if (rc == 0 && bytes > 0)
    memcpy(host, dev, bytes);
  return rc;
}

static int sim_tools_sync(void) {
  return 0;
}

static int sim_tools_roofline(size_t n, size_t b, dash_precision precision,
                              int rounds, double min_ms, double *gflops) {
  return sim_fail(DASH_E_UNSUPPORTED,
                  "the simulated GPU has no cuBLAS to measure a roofline of");
}

static const struct dash__cuda_tools kTools = {
    .error = sim_tools_error,
    .device = sim_tools_device,
    .alloc = sim_alloc,
    .free = sim_free,
    .upload = sim_tools_upload,
    .download = sim_tools_download,
    .sync = sim_tools_sync,
    .roofline = sim_tools_roofline,
};

static const struct dash__cuda_ipc kIpc = {
    .export_mem = sim_export_mem,
    .device_uuid = sim_device_uuid,
    .event_create = sim_event_create,
    .event_open = sim_event_open,
    .event_destroy = sim_event_destroy,
    .event_record = sim_event_record,
    .stream_wait = sim_stream_wait,
    .mem_open = sim_mem_open,
    .mem_close = sim_mem_close,
    .stream_create = sim_stream_create,
    .stream_destroy = sim_stream_destroy,
    .stream_sync = sim_stream_sync,
    .alloc = sim_alloc,
    .free = sim_free,
    .copy = sim_copy,
    .host_register = sim_host_register,
    .host_unregister = sim_host_unregister,
    .copy_on = sim_copy_on,
    .event_sync = sim_event_sync,
    .mem_check = sim_mem_check,
    .vmm_owns = sim_vmm_owns,
    .vmm_export = sim_vmm_export,
    .vmm_open = sim_vmm_open,
    .vmm_close = sim_vmm_close,
    .vmm_alloc = sim_vmm_alloc,
    .vmm_free = sim_vmm_free,
    .event_query = sim_event_query,
    .current_device = sim_current_device,
};

static const struct dash__cuda_plugin kPlugin = {
    .abi = DASH_CUDA_PLUGIN_ABI,
    .plan_size = sizeof(struct dash_roots_plan),
    .options_size = sizeof(dash_roots_options),
    .device_count = sim_device_count,
    .describe = sim_describe,
    .select = sim_select,
    .plan_init = sim_plan_init,
    .execute = sim_execute,
    .plan_free = sim_plan_free,
    .tools = &kTools,
    .ipc = &kIpc,
};

__attribute__((visibility("default"))) const struct dash__cuda_plugin *
dash_cuda_plugin_entry(const struct dash__cuda_host *host);

const struct dash__cuda_plugin *dash_cuda_plugin_entry(
    const struct dash__cuda_host *host) {
  /* A host of another ABI or layout gets nothing, as from the real
   * plugin; this one also needs the CPU backend. */
  if (host == NULL || host->abi != DASH_CUDA_PLUGIN_ABI ||
      host->plan_size != sizeof(struct dash_roots_plan) ||
      host->options_size != sizeof(dash_roots_options) || host->fail == NULL ||
      host->cpu_plan_init == NULL || host->cpu_execute == NULL ||
      host->cpu_plan_free == NULL)
    return NULL;
  g_host = host;
  const char *path = getenv("DASH_CUDA_SIM_TRACE");
  if (path != NULL && path[0] != '\0' && g_trace < 0)
    g_trace = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  return &kPlugin;
}
