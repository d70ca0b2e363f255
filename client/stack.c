/* libdash: stacks, their shared memory, and the hand-over of result
 * slots by refresh and sync. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kernels/internal.h"
#include "internal.h"

static int errno_status(int err) {
  return err == ENOMEM || err == ENOSPC || err == EFBIG || err == EMFILE ||
                 err == ENFILE
             ? DASH_E_NOMEM
             : DASH_E_IO;
}

/* A zero-filled memfd of bytes, sealed so that neither side can change
 * its size (the daemon refuses fds it could be SIGBUSed through), and
 * mapped shared. */
static int shared_memfd(const char *name, size_t bytes, int *fd_out,
                        void **map_out) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int rc = 0;
  if (fd < 0)
    return dash__fail(errno_status(errno), "memfd_create %s: %s", name,
                      strerror(errno));
  if (ftruncate(fd, (off_t)bytes) < 0) {
    rc = dash__fail(errno_status(errno), "%s: %zu bytes: %s", name, bytes,
                    strerror(errno));
    goto out;
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    rc = dash__fail(DASH_E_IO, "%s: sealing: %s", name, strerror(errno));
    goto out;
  }
  void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    rc = dash__fail(errno_status(errno), "%s: mmap of %zu bytes: %s", name,
                    bytes, strerror(errno));
    goto out;
  }
  *map_out = map;
  *fd_out = fd;
out:
  if (rc < 0)
    close(fd);
  return rc;
}

static void cuda_free(struct dash__stack_cuda *g) {
  if (g == NULL)
    return;
  const struct dash__cuda_ipc *ipc = g->ipc;
  ipc->event_destroy(g->step_event);
  ipc->event_destroy(g->release_event);
  ipc->event_destroy(g->snapshot_event);
  ipc->event_destroy(g->result_event[0]);
  ipc->event_destroy(g->result_event[1]);
  ipc->event_destroy(g->copy_event);
  free(g);
}

/* A pinned stack's mappings stop being page-locked; the copies into and
 * out of them (the last statistics and the last adopted slot) end
 * first. */
static void unpin(struct dash__stack_cuda *g) {
  if (g == NULL || !g->pinned)
    return;
  if (g->step_event != NULL)
    (void)g->ipc->event_sync(g->device, g->step_event);
  if (g->copy_event != NULL)
    (void)g->ipc->event_sync(g->device, g->copy_event);
  for (int i = 0; i < 2; i++)
    if (g->locked[i] != NULL)
      (void)g->ipc->host_unregister(g->device, g->locked[i]);
}

static void stack_free(dash_stack *s) {
  unpin(s->cuda);
  if (s->stats != NULL)
    munmap(s->stats, s->stats_bytes);
  if (s->results != NULL)
    munmap(s->results, s->result_bytes);
  cuda_free(s->cuda);
  free(s);
}

static int check_options(const dash_stack_options *o) {
  if (o->version != DASH_STACK_OPTIONS_VERSION)
    return dash__fail(DASH_E_INVALID,
                      "options version %u is not %d: start from "
                      "DASH_STACK_OPTIONS_INIT",
                      o->version, DASH_STACK_OPTIONS_VERSION);
  /* The method, root and the rest are the daemon's to judge: it builds
   * a plan from them and says what it refuses. */
  return dash_roots_check_shape(o->num_blocks, o->block_size);
}

/* The sizes of a stack of these options: N·B·B floats of statistics and
 * twice that of result slots. */
static int stack_sizes(const dash_stack_options *o, size_t *stats_bytes,
                       size_t *result_bytes) {
  size_t elems;
  if (__builtin_mul_overflow(o->num_blocks, o->block_size, &elems) ||
      __builtin_mul_overflow(elems, o->block_size, &elems) ||
      __builtin_mul_overflow(elems, sizeof(float), stats_bytes) ||
      __builtin_mul_overflow(*stats_bytes, (size_t)2, result_bytes) ||
      *result_bytes > (size_t)INT64_MAX)
    return dash__fail(DASH_E_TOO_LARGE,
                      "%zu blocks of %zux%zu do not fit this address space",
                      o->num_blocks, o->block_size, o->block_size);
  return 0;
}

/* Sends reg (its options and transport fields filled by the caller) with
 * the options o and nfds fds, and links s into c on success. *reply is
 * the daemon's RegisterStackReply, for the caller to read and free. */
static int register_stack(dash_client *c, const dash_stack_options *o,
                          Dashpb__RegisterStack *reg, const int *fds, int nfds,
                          dash_stack *s, Dashpb__Envelope **reply) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__StackOptions opts = DASHPB__STACK_OPTIONS__INIT;
  opts.num_blocks = o->num_blocks;
  opts.block_size = o->block_size;
  opts.root = o->root;
  opts.method = (int32_t)o->method;
  opts.scaling = (int32_t)o->scaling;
  opts.max_steps = o->max_steps;
  opts.tol = o->tol;
  opts.eps = o->eps;
  opts.precision = (int32_t)o->precision;
  opts.fallback = (int32_t)o->fallback;
  reg->options = &opts;
  req.body_case = DASHPB__ENVELOPE__BODY_REGISTER_STACK;
  req.register_stack = reg;

  pthread_mutex_lock(&c->mu);
  int rc = dash__client_request_locked(c, &req, fds, nfds, reply);
  if (rc == 0 &&
      ((*reply)->body_case != DASHPB__ENVELOPE__BODY_REGISTER_STACK_REPLY ||
       (*reply)->register_stack_reply == NULL))
    rc = dash__fail(DASH_E_PROTOCOL, "dashd answered RegisterStack with %d",
                    (int)(*reply)->body_case);
  if (rc == 0) {
    s->id = (*reply)->register_stack_reply->stack_id;
    s->next = c->stacks;
    c->stacks = s;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* Checks the common arguments of the two creates and makes the stack. */
static int stack_new(dash_client *c, const dash_stack_options *o,
                     dash_stack **out, dash_stack **s_out, size_t *stats_bytes,
                     size_t *result_bytes) {
  int rc;
  if (out == NULL)
    return dash__fail(DASH_E_INVALID, "out is NULL");
  *out = NULL;
  if (c == NULL || o == NULL)
    return dash__fail(DASH_E_INVALID, "client and options must not be NULL");
  if ((rc = check_options(o)) < 0 ||
      (rc = stack_sizes(o, stats_bytes, result_bytes)) < 0)
    return rc;
  dash_stack *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return dash__fail(DASH_E_NOMEM, "stack");
  s->c = c;
  s->n = o->num_blocks;
  s->b = o->block_size;
  s->stats_bytes = *stats_bytes;
  s->result_bytes = *result_bytes;
  *s_out = s;
  return 0;
}

/* The memfds of an SHM stack, mapped into s->stats and s->results; the
 * caller closes fds[0] and fds[1] (-1 where none was made). */
static int shm_make(dash_stack *s, int fds[2]) {
  void *map = NULL;
  int rc;
  if ((rc = shared_memfd("dash-stats", s->stats_bytes, &fds[0], &map)) < 0)
    return rc;
  s->stats = map;
  if ((rc = shared_memfd("dash-results", s->result_bytes, &fds[1], &map)) < 0)
    return rc;
  s->results = map;
  return 0;
}

/* Registers s, made by shm_make(), with the daemon as an SHM stack. */
static int shm_register(dash_client *c, const dash_stack_options *o,
                        dash_stack *s, const int fds[2]) {
  Dashpb__RegisterStack reg = DASHPB__REGISTER_STACK__INIT;
  Dashpb__Envelope *reply = NULL;
  reg.transport = DASHPB__TRANSPORT__TRANSPORT_SHM;
  reg.stats_bytes = s->stats_bytes;
  reg.result_bytes = s->result_bytes;
  int rc = register_stack(c, o, &reg, fds, 2, s, &reply);
  if (reply != NULL)
    dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

static void close_fds(const int fds[2]) {
  /* The daemon holds its own copies of the fds now; the mappings stay. */
  for (int i = 0; i < 2; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

int dash_stack_create(dash_client *c, const dash_stack_options *o,
                      dash_stack **out) {
  int fds[2] = {-1, -1};
  dash_stack *s = NULL;
  size_t stats_bytes, result_bytes;
  int rc;

  dash__clear_error();
  if ((rc = stack_new(c, o, out, &s, &stats_bytes, &result_bytes)) < 0)
    return rc;
  if ((rc = shm_make(s, fds)) == 0)
    rc = shm_register(c, o, s, fds);
  close_fds(fds);
  if (rc < 0)
    stack_free(s);
  else
    *out = s;
  return rc;
}

/* DASH_E_BAD_MEMORY unless [ptr, ptr + bytes) is memory of the stack's
 * device, so that no copy the trainer's stream runs later can fault. Memory
 * of CUDA's virtual memory API may span several allocations, which only
 * their walk in vmm_export sees; the fds it makes are not needed here. */
static int check_buffer(const struct dash__stack_cuda *g, const void *ptr,
                        size_t bytes) {
  if (!g->ipc->vmm_owns(g->device, ptr))
    return g->ipc->mem_check(g->device, ptr, bytes);
  int fds[DASH_WIRE_MAX_FDS];
  uint64_t sizes[DASH_WIRE_MAX_FDS], offset;
  size_t n = 0;
  int rc = g->ipc->vmm_export(g->device, ptr, bytes, fds, sizes,
                              DASH_WIRE_MAX_FDS, &n, &offset);
  for (size_t i = 0; rc == 0 && i < n; i++)
    close(fds[i]);
  return rc;
}

/* A CUDA stack for a daemon that computes on the CPU, which cannot open
 * GPU memory: an SHM stack whose two mappings are page-locked for the
 * trainer's GPU, so that dash_step() and dash_sync() copy between them
 * and the trainer's buffers on the trainer's stream. Everything that can
 * fail here does so before the daemon hears of the stack. */
static int register_pinned(dash_client *c, const dash_stack_options *o,
                           dash_stack *s) {
  struct dash__stack_cuda *g = s->cuda;
  const struct dash__cuda_ipc *ipc = g->ipc;
  /* The events stay in this process: their handles go nowhere. */
  unsigned char unused[DASH_CUDA_IPC_HANDLE_BYTES];
  int fds[2] = {-1, -1};
  int rc;

  g->pinned = 1;
  if ((rc = check_buffer(g, g->stats, s->stats_bytes)) < 0 ||
      (rc = check_buffer(g, g->results, s->result_bytes)) < 0 ||
      (rc = shm_make(s, fds)) < 0)
    goto out;
  if ((rc = ipc->host_register(g->device, s->stats, s->stats_bytes)) < 0)
    goto out;
  g->locked[0] = s->stats;
  if ((rc = ipc->host_register(g->device, s->results, s->result_bytes)) < 0)
    goto out;
  g->locked[1] = s->results;
  if ((rc = ipc->event_create(g->device, &g->step_event, unused)) < 0 ||
      (rc = ipc->event_create(g->device, &g->copy_event, unused)) < 0)
    goto out;
  rc = shm_register(c, o, s, fds);
out:
  close_fds(fds);
  return rc;
}

/* Opens one of the daemon's event handles from its RegisterStackReply. */
static int open_daemon_event(const struct dash__stack_cuda *g, int device,
                             const ProtobufCBinaryData *h, const char *what,
                             void **ev) {
  if (h->len != DASH_CUDA_IPC_HANDLE_BYTES)
    return dash__fail(DASH_E_PROTOCOL,
                      "dashd sent a %s event handle of %zu bytes, not %d", what,
                      h->len, DASH_CUDA_IPC_HANDLE_BYTES);
  return g->ipc->event_open(device, h->data, ev);
}

/* What a CUDA stack's RegisterStack carries of its two buffers: legacy
 * IPC handles (CUDA_IPC), or the fds of the physical allocations under
 * them (CUDA_VMM_FD). */
struct cuda_share {
  int vmm;
  Dashpb__CudaBuffer buf[2]; /* statistics, results */
  unsigned char handle[2][DASH_CUDA_IPC_HANDLE_BYTES];
  int fds[DASH_WIRE_MAX_FDS];
  uint64_t sizes[DASH_WIRE_MAX_FDS];
  size_t nfds;
};

static int share_buffers(const struct dash__stack_cuda *g,
                         const size_t bytes[2], struct cuda_share *sh) {
  static const char *const what[2] = {"stats_dev", "result_dev"};
  const struct dash__cuda_ipc *ipc = g->ipc;
  const void *ptr[2] = {g->stats, g->results};
  int vmm[2] = {ipc->vmm_owns(g->device, ptr[0]) != 0,
                ipc->vmm_owns(g->device, ptr[1]) != 0};
  int rc;
  if (vmm[0] != vmm[1])
    return dash__fail(DASH_E_INVALID,
                      "stats_dev is memory of %s and result_dev of %s: both "
                      "must come from one (cudaMalloc or CUDA's virtual "
                      "memory API)",
                      vmm[0] ? "CUDA's virtual memory API" : "cudaMalloc",
                      vmm[1] ? "CUDA's virtual memory API" : "cudaMalloc");
  sh->vmm = vmm[0];
  for (int k = 0; k < 2; k++) {
    Dashpb__CudaBuffer *b = &sh->buf[k];
    dashpb__cuda_buffer__init(b);
    b->bytes = bytes[k];
    if (sh->vmm) {
      size_t n = 0;
      rc = ipc->vmm_export(g->device, ptr[k], bytes[k], sh->fds + sh->nfds,
                           sh->sizes + sh->nfds, DASH_WIRE_MAX_FDS - sh->nfds,
                           &n, &b->offset);
      b->piece_bytes = sh->sizes + sh->nfds;
      b->n_piece_bytes = n;
      sh->nfds += n;
    } else {
      rc = ipc->export_mem(g->device, ptr[k], bytes[k], sh->handle[k],
                           &b->offset);
      b->handle.data = sh->handle[k];
      b->handle.len = DASH_CUDA_IPC_HANDLE_BYTES;
    }
    if (rc < 0)
      return dash__fail(rc, "%s: %s", what[k], dash_last_error());
  }
  return 0;
}

int dash_stack_create_cuda(dash_client *c, const dash_stack_options *o,
                           int device, float *stats_dev, float *result_dev,
                           dash_stack **out) {
  Dashpb__RegisterStack reg = DASHPB__REGISTER_STACK__INIT;
  Dashpb__Envelope *reply = NULL;
  struct cuda_share sh = {0};
  unsigned char h_step[DASH_CUDA_IPC_HANDLE_BYTES];
  unsigned char h_release[DASH_CUDA_IPC_HANDLE_BYTES];
  char uuid[64];
  dash_stack *s = NULL;
  size_t stats_bytes, result_bytes;
  const char *why = "";
  int rc;

  dash__clear_error();
  if ((rc = stack_new(c, o, out, &s, &stats_bytes, &result_bytes)) < 0)
    return rc;
  if (stats_dev == NULL || result_dev == NULL) {
    rc = dash__fail(DASH_E_INVALID, "stats_dev and result_dev must be given");
    goto out;
  }
  if ((const char *)stats_dev < (const char *)result_dev + result_bytes &&
      (const char *)result_dev < (const char *)stats_dev + stats_bytes) {
    rc = dash__fail(DASH_E_INVALID,
                    "stats_dev and result_dev overlap: the daemon writes "
                    "results while it may read statistics");
    goto out;
  }
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(&why);
  if (p == NULL) {
    rc = dash__fail(DASH_E_NO_DEVICE, "no CUDA runtime for a CUDA stack: %s",
                    why);
    goto out;
  }
  struct dash__stack_cuda *g = calloc(1, sizeof(*g));
  if (g == NULL) {
    rc = dash__fail(DASH_E_NOMEM, "stack");
    goto out;
  }
  s->cuda = g;
  g->ipc = p->ipc;
  g->device = device;
  g->stats = stats_dev;
  g->results = result_dev;
  if (strcmp(c->backend, "cpu") == 0) {
    rc = register_pinned(c, o, s);
    goto out;
  }
  size_t bytes[2] = {stats_bytes, result_bytes};
  if ((rc = g->ipc->device_uuid(device, uuid, sizeof(uuid))) < 0 ||
      (rc = share_buffers(g, bytes, &sh)) < 0 ||
      (rc = g->ipc->event_create(device, &g->step_event, h_step)) < 0 ||
      (rc = g->ipc->event_create(device, &g->release_event, h_release)) < 0)
    goto out;

  reg.transport = sh.vmm ? DASHPB__TRANSPORT__TRANSPORT_CUDA_VMM_FD
                         : DASHPB__TRANSPORT__TRANSPORT_CUDA_IPC;
  reg.stats_bytes = stats_bytes;
  reg.result_bytes = result_bytes;
  reg.device_uuid = uuid;
  reg.stats_cuda = &sh.buf[0];
  reg.result_cuda = &sh.buf[1];
  reg.step_event.data = h_step;
  reg.step_event.len = sizeof(h_step);
  reg.release_event.data = h_release;
  reg.release_event.len = sizeof(h_release);
  if ((rc = register_stack(c, o, &reg, sh.fds, (int)sh.nfds, s, &reply)) < 0)
    goto out;
  const Dashpb__RegisterStackReply *rr = reply->register_stack_reply;
  if (rr->n_result_event != 2)
    rc = dash__fail(DASH_E_PROTOCOL,
                    "dashd sent %zu result event handles, not 2",
                    rr->n_result_event);
  /* Interprocess events are opened on the GPU that made them. */
  /* This process's ordinal of the daemon's GPU; the trainer's when it is
   * not visible here or the daemon did not say. */
  int daemon_device = dash__cuda_device_of_uuid(rr->device_uuid);
  if (daemon_device < 0)
    daemon_device = device;
  if (rc == 0)
    rc = open_daemon_event(g, daemon_device, &rr->snapshot_event, "snapshot",
                           &g->snapshot_event);
  for (int k = 0; k < 2 && rc == 0; k++)
    rc = open_daemon_event(g, daemon_device, &rr->result_event[k], "result",
                           &g->result_event[k]);
  if (rc < 0) {
    /* Registered, but unusable here: the daemon lets go of it again. */
    pthread_mutex_lock(&c->mu);
    int saved = rc;
    char detail[256];
    snprintf(detail, sizeof(detail), "%s", dash_last_error());
    dash__stack_destroy_locked(s);
    pthread_mutex_unlock(&c->mu);
    s = NULL;
    rc = dash__fail(saved, "%s", detail);
  }
out:
  /* The daemon holds its own copies of the allocations' fds now. */
  for (size_t i = 0; i < sh.nfds; i++)
    close(sh.fds[i]);
  if (reply != NULL)
    dashpb__envelope__free_unpacked(reply, NULL);
  if (rc < 0) {
    if (s != NULL)
      stack_free(s);
  } else {
    *out = s;
  }
  return rc;
}

float *dash_stack_stats(dash_stack *s) {
  if (s == NULL)
    return NULL;
  return s->cuda != NULL ? s->cuda->stats : s->stats;
}

const float *dash_stack_result_cuda(const dash_stack *s) {
  return s != NULL && s->cuda != NULL ? s->held : NULL;
}

const float *dash_stack_result(const dash_stack *s) {
  return s != NULL && s->cuda == NULL ? s->held : NULL;
}

size_t dash_stack_num_blocks(const dash_stack *s) {
  return s != NULL ? s->n : 0;
}

size_t dash_stack_block_size(const dash_stack *s) {
  return s != NULL ? s->b : 0;
}

/* Calls on one CUDA stack run one at a time: its events are recorded and
 * waited for in the order of its requests, which the hand-over depends
 * on (another thread's adoption must not overtake a Sync's release
 * record, nor a dash_step's copy into the shared statistics another's
 * snapshot). With c->mu held; waiting releases it. Host stacks need
 * none of this: a dash_sync() waiting for a result must not hold up a
 * dash_step() of the same stack. */
static void stack_acquire(dash_stack *s) {
  if (s->cuda == NULL)
    return;
  while (s->cuda->busy)
    pthread_cond_wait(&s->c->cv, &s->c->mu);
  s->cuda->busy = 1;
}

static void stack_release(dash_stack *s) {
  if (s->cuda == NULL)
    return;
  s->cuda->busy = 0;
  pthread_cond_broadcast(&s->c->cv);
}

/* Waits on the CPU for event without holding the connection's lock, so
 * that the client's other stacks go on meanwhile. With c->mu held and
 * the stack acquired. */
static int sync_unlocked(dash_stack *s, void *event) {
  struct dash__stack_cuda *g = s->cuda;
  pthread_mutex_unlock(&s->c->mu);
  int rc = g->ipc->event_sync(g->device, event);
  pthread_mutex_lock(&s->c->mu);
  return rc;
}

int dash_step(dash_stack *s, uint64_t step, void *cuda_stream) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Refresh refresh = DASHPB__REFRESH__INIT;
  Dashpb__Envelope *reply = NULL;

  dash__clear_error();
  if (s == NULL)
    return dash__fail(DASH_E_INVALID, "stack is NULL");
  if (cuda_stream != NULL && s->cuda == NULL)
    return dash__fail(DASH_E_INVALID,
                      "a CUDA stream was given for a stack in host memory: "
                      "pass NULL, or create it with dash_stack_create_cuda()");
  dash_client *c = s->c;
  struct dash__stack_cuda *g = s->cuda;
  refresh.stack_id = s->id;
  refresh.step = step;
  req.body_case = DASHPB__ENVELOPE__BODY_REFRESH;
  req.refresh = &refresh;

  pthread_mutex_lock(&c->mu);
  stack_acquire(s);
  int rc = 0, sent = 0;
  if (g != NULL && g->pinned) {
    /* The daemon copies the shared statistics when the Refresh arrives,
     * so the copy into them must be complete before it is sent: the CPU
     * waits for it, and so for the trainer's work queued before it. The
     * trainer's later writes to its own buffer are then free. */
    const struct dash__cuda_ipc *ipc = g->ipc;
    rc = ipc->copy_on(g->device, s->stats, g->stats, s->stats_bytes,
                      cuda_stream);
    if (rc == 0)
      rc = ipc->event_record(g->device, g->step_event, cuda_stream);
    if (rc == 0)
      rc = sync_unlocked(s, g->step_event);
  } else if (g != NULL) {
    /* The daemon's snapshot copy waits for this record: it comes after
     * the statistics update the trainer queued on its stream. */
    rc = g->ipc->event_record(g->device, g->step_event, cuda_stream);
  }
  /* Recorded before the request, so that a RefreshDone of an older step
   * read while waiting for the reply does not end this refresh. */
  int was_in_flight = s->in_flight;
  uint64_t was_step = s->want_step;
  if (rc == 0) {
    s->in_flight = 1;
    s->want_step = step;
    rc = dash__client_request_locked(c, &req, NULL, 0, &reply);
    sent = rc == 0;
  }
  if (sent && g != NULL) {
    g->stream = cuda_stream;
    /* The daemon recorded its snapshot event before replying: the
     * trainer's next statistics update waits for the copy on the GPU. */
    if (!g->pinned && (rc = g->ipc->stream_wait(g->device, cuda_stream,
                                                g->snapshot_event)) < 0) {
      /* The refresh is under way all the same; without the wait on the
       * stream, the CPU waits for the copy, so that the trainer's next
       * update cannot overtake it. */
      char why[256];
      snprintf(why, sizeof(why), "%s", dash_last_error());
      (void)sync_unlocked(s, g->snapshot_event);
      rc = dash__fail(rc, "%s", why);
    }
  }
  if (!sent && rc < 0 && s->in_flight && s->want_step == step) {
    s->in_flight = was_in_flight;
    s->want_step = was_step;
  }
  stack_release(s);
  pthread_mutex_unlock(&c->mu);
  if (reply != NULL)
    dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

void dash__stack_on_refresh_done(dash_client *c, const Dashpb__RefreshDone *d) {
  dash_stack *s = c->stacks;
  while (s != NULL && s->id != d->stack_id)
    s = s->next;
  const Dashpb__ResultInfo *r = d->result;
  if (s == NULL || r == NULL)
    return;
  if (s->in_flight && r->step >= s->want_step)
    s->in_flight = 0;
  /* Only the newest outcome matters: a success clears an older
   * failure, a failure waits for dash_sync() to report it. */
  if (r->status != 0) {
    s->failed_status = r->status < 0 ? r->status : DASH_E_PROTOCOL;
    s->failed_step = r->step;
    snprintf(s->failed_message, sizeof(s->failed_message), "%s",
             r->message != NULL && r->message[0] != '\0'
                 ? r->message
                 : dash_strerror(s->failed_status));
  } else {
    s->failed_status = 0;
    if (r->generation > s->pushed_generation)
      s->pushed_generation = r->generation;
  }
}

/* A generation pushed that neither is held nor was asked for already. */
static int newer_known(const dash_stack *s) {
  return s->pushed_generation > s->held_info.generation &&
         s->pushed_generation > s->synced_generation;
}

/* The wait of dash_sync() ends once the refresh asked for last has a
 * RefreshDone, or any result newer than the held one was pushed: the
 * daemon may hold the next computation back until the client adopts that
 * one, because both result slots are then taken. */
static int refresh_done(void *arg) {
  const dash_stack *s = arg;
  return !s->in_flight || newer_known(s);
}

/* Sync round trip with c->mu held: 1 when a newer result was adopted.
 * With nowait, a CUDA stack busy in another thread's call is left alone
 * (0): dash_sync(s, 0) only looks. */
static int adopt(dash_stack *s, int nowait) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Sync sync = DASHPB__SYNC__INIT;
  Dashpb__Envelope *reply = NULL;
  int rc = 0;

  sync.stack_id = s->id;
  req.body_case = DASHPB__ENVELOPE__BODY_SYNC;
  req.sync = &sync;
  if (nowait && s->cuda != NULL && s->cuda->busy)
    return 0;
  stack_acquire(s);
  /* Set once the daemon answered: without it, a daemon that adopts
   * nothing for a pushed generation would cost a round trip on every
   * later dash_sync(s, 0, ...); set before, a Sync that failed would
   * forget the pushed result for good. */
  uint64_t asked = s->pushed_generation;
  struct dash__stack_cuda *g = s->cuda;
  if (g != NULL && g->pinned) {
    /* The daemon may write the shared slot held once this Sync lets go
     * of it: the copy out of it must be complete (it usually is long
     * since). */
    rc = sync_unlocked(s, g->copy_event);
  } else if (g != NULL) {
    /* A CUDA stack's trainer may still have kernels queued that read the
     * slot it holds: the daemon writes that slot, once this Sync lets go
     * of it, only after this record. */
    rc = g->ipc->event_record(g->device, g->release_event, g->stream);
  }
  if (rc < 0)
    goto out;
  if ((rc = dash__client_request_locked(s->c, &req, NULL, 0, &reply)) < 0)
    goto out;
  if (asked > s->synced_generation)
    s->synced_generation = asked;
  const Dashpb__SyncReply *sr = reply->sync_reply;
  if (reply->body_case != DASHPB__ENVELOPE__BODY_SYNC_REPLY || sr == NULL) {
    rc = dash__fail(DASH_E_PROTOCOL, "dashd answered Sync with %d",
                    (int)reply->body_case);
    goto out;
  }
  /* Pushes come before the replies sent after them, so a daemon with
   * nothing in flight has no RefreshDone left to send. */
  if (!sr->in_flight)
    s->in_flight = 0;
  const Dashpb__ResultInfo *h = sr->held;
  if (h != NULL && h->status < 0) {
    rc = dash__fail(h->status, "the refresh of step %llu failed: %s",
                    (unsigned long long)h->step,
                    h->message != NULL ? h->message : "");
    goto out;
  }
  /* Generations only grow: a reply that lost a race with another
   * thread's Sync of this stack must not move the pointer back. */
  if (!sr->adopted || h == NULL || h->generation <= s->held_info.generation)
    goto out;
  if (h->slot > 1) {
    rc = dash__fail(DASH_E_PROTOCOL, "dashd handed over result slot %u",
                    h->slot);
    goto out;
  }
  size_t at = (size_t)h->slot * s->n * s->b * s->b;
  if (g != NULL && g->pinned) {
    /* The daemon wrote the shared slot before its RefreshDone. The copy
     * goes to the device slot of the same number; queued on the stream
     * of the last dash_step(), it comes after the kernels queued there
     * that may still read what that slot held before. */
    if ((rc = g->ipc->copy_on(g->device, g->results + at, s->results + at,
                              s->stats_bytes, g->stream)) < 0 ||
        (rc = g->ipc->event_record(g->device, g->copy_event, g->stream)) < 0)
      goto out;
    s->held = g->results + at;
  } else if (g != NULL) {
    /* The daemon recorded the slot's event after writing it and before
     * its RefreshDone: kernels queued from now on see it complete. The
     * daemon counts the slot as handed over whatever happens here, so it
     * is adopted all the same, after a wait on the CPU when the stream
     * could not be made to wait: it is complete then too (the failure
     * stays in dash_last_error()). */
    if (g->ipc->stream_wait(g->device, g->stream, g->result_event[h->slot]) < 0)
      (void)sync_unlocked(s, g->result_event[h->slot]);
    s->held = g->results + at;
  } else {
    s->held = s->results + at;
  }
  memset(&s->held_info, 0, sizeof(s->held_info));
  s->held_info.generation = h->generation;
  s->held_info.step = h->step;
  s->held_info.compute_ms = h->compute_ms;
  s->held_info.method = (dash_method)h->method;
  s->held_info.max_iterations = h->max_iterations;
  for (size_t i = 0; i < h->n_blocks_by_status && i < DASH_BLOCK_STATUS_COUNT;
       i++)
    s->held_info.blocks_by_status[i] = h->blocks_by_status[i];
  rc = 1;
out:
  stack_release(s);
  if (reply != NULL)
    dashpb__envelope__free_unpacked(reply, NULL);
  return rc;
}

int dash_sync(dash_stack *s, int timeout_ms, dash_refresh_info *info) {
  dash__clear_error();
  if (s == NULL)
    return dash__fail(DASH_E_INVALID, "stack is NULL");
  if (timeout_ms < -1)
    return dash__fail(DASH_E_INVALID, "timeout_ms %d: use -1, 0 or more",
                      timeout_ms);
  dash_client *c = s->c;
  pthread_mutex_lock(&c->mu);
  /* Pushes already on the socket are read first, so that polling with
   * timeout 0 sees a result as soon as it is there. */
  int rc = dash__client_drain(c);
  double deadline = dash__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  while (rc == 0) {
    if (s->failed_status < 0) {
      rc = dash__fail(s->failed_status, "the refresh of step %llu failed: %s",
                      (unsigned long long)s->failed_step, s->failed_message);
      s->failed_status = 0;
      break;
    }
    /* The result pushed may be gone by the time Sync asks for it (the
     * daemon computes the next refresh into its slot): then wait on. */
    if (newer_known(s) && (rc = adopt(s, timeout_ms == 0)) != 0)
      break;
    int left = timeout_ms;
    if (timeout_ms > 0) {
      double ms = deadline - dash__now_ms();
      left = ms > 0 ? (int)ms : 0;
    }
    if (!s->in_flight || left == 0)
      break;
    rc = dash__client_wait(c, refresh_done, s, left);
    if (rc == DASH_E_TIMEOUT) {
      dash__clear_error();
      rc = 0;
      break;
    }
  }
  if (info != NULL) {
    *info = s->held_info;
    info->in_flight = s->in_flight;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* Whether the daemon's process is still there (when it is known). */
static int daemon_lives(const dash_client *c) {
  return c->daemon_pid > 0 && (kill(c->daemon_pid, 0) == 0 || errno == EPERM);
}

int dash__stack_destroy_locked(dash_stack *s) {
  Dashpb__Envelope req = DASHPB__ENVELOPE__INIT;
  Dashpb__Unregister unreg = DASHPB__UNREGISTER__INIT;
  Dashpb__Envelope *reply = NULL;
  dash_client *c = s->c;
  struct dash__stack_cuda *g = s->cuda;
  int rc = 0;

  stack_acquire(s);
  if (g != NULL && !g->pinned && !c->dead && g->step_event != NULL &&
      g->release_event != NULL) {
    /* The trainer's stream may still have waits on the daemon's events
     * queued, and the daemon may wait for this release before its last
     * write: both end before the daemon is told to let go. */
    if (g->ipc->event_record(g->device, g->release_event, g->stream) == 0)
      (void)sync_unlocked(s, g->release_event);
  }
  if (!c->dead) {
    unreg.stack_id = s->id;
    req.body_case = DASHPB__ENVELOPE__BODY_UNREGISTER;
    req.unregister = &unreg;
    rc = dash__client_request_locked(c, &req, NULL, 0, &reply);
    if (reply != NULL)
      dashpb__envelope__free_unpacked(reply, NULL);
    if (rc == DASH_E_TIMEOUT && g != NULL && !g->pinned) {
      /* The daemon answers once it no longer touches the trainer's
       * memory; without the answer it may still write result_dev and
       * use this stack's events. The events are left alive, and the
       * caller is told to keep its buffers. */
      g->step_event = g->release_event = NULL;
      rc = dash__fail(DASH_E_TIMEOUT,
                      "dashd did not confirm within %d ms that it let go of "
                      "the stack: keep stats_dev and result_dev allocated "
                      "(it may still write result_dev)",
                      c->reply_timeout_ms);
    } else if (rc == DASH_E_DISCONNECTED || rc == DASH_E_TIMEOUT) {
      /* A daemon that is gone has let go of the stack already (its
       * mappings went with it). */
      rc = 0;
    }
  }
  if (rc == 0 && c->dead && g != NULL && !g->pinned && daemon_lives(c)) {
    /* The connection is lost but not the daemon: it lets go of the
     * stack once it notices, maybe after a computation that writes
     * result_dev. Freeing the trainer's buffers before then is undefined
     * (CUDA IPC) or worse; the caller is told, and the events stay. */
    g->step_event = g->release_event = NULL;
    rc = dash__fail(DASH_E_DISCONNECTED,
                    "the connection to dashd (pid %d) was lost while it may "
                    "still use this stack's GPU buffers: keep stats_dev and "
                    "result_dev allocated until it has let go of them "
                    "(dashctl status) or exited",
                    (int)c->daemon_pid);
  }
  stack_release(s);
  for (dash_stack **p = &c->stacks; *p != NULL; p = &(*p)->next) {
    if (*p == s) {
      *p = s->next;
      break;
    }
  }
  stack_free(s);
  return rc;
}

int dash_stack_destroy(dash_stack *s) {
  dash__clear_error();
  if (s == NULL)
    return 0;
  dash_client *c = s->c;
  pthread_mutex_lock(&c->mu);
  int rc = dash__stack_destroy_locked(s);
  pthread_mutex_unlock(&c->mu);
  return rc;
}
