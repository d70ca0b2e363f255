/* The CUDA_IPC transport: a GPU trainer's statistics and result slots,
 * opened through legacy CUDA IPC handles, and the stream-ordered
 * hand-over of DESIGN.md. Each client allocation is opened once per
 * client (a refcounted map shared by that client's stacks) and every
 * buffer is checked against the size of the allocation it names before
 * any copy touches it.
 *
 * On the GPU, per stack: the snapshot copy runs on the stack's own
 * high-priority copy stream (the trainer's next statistics update waits
 * for it), after the client's step event; the computation runs on the
 * worker's stream into a private buffer, which is copied into the result
 * slot.
 *
 * Nothing of the daemon waits for a client's GPU work, which a hung or
 * hostile trainer never finishes. Before a computation, the loop thread
 * queues the start fence on the copy stream, after a wait for the
 * client's release event: it completes once the snapshot copy and the
 * trainer's kernels that read the slot to be written are done. The loop
 * polls it (event_query, from a timer: stack.c) and only then hands the
 * computation to the worker, whose stream waits for the fence (at once)
 * and whose final stream_sync then waits for the daemon's own work. A
 * stack's teardown queues the fence again and frees the stack once it
 * completes, polled the same way. All CUDA calls go through the plugin
 * (kernels/internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../kernels/internal.h"
#include "dashd.h"
#include "log.h"

/* One client allocation mapped into the daemon: opened by its legacy IPC
 * handle, or (vmm) the physical allocations of one CUDA_VMM_FD buffer,
 * mapped back to back. */
struct dashd_cuda_map {
  uint64_t session; /* dashd_session.serial of the client that sent it */
  unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES];
  void *base;
  size_t size;
  int refs;
  int vmm;
  uint64_t *pieces; /* vmm: their sizes */
  size_t n_pieces;
  struct dashd_cuda_map *next;
};

struct dashd_cuda_stack {
  const struct dash__cuda_ipc *ipc;
  struct dashd_cuda_map *stats_map, *result_map;
  const float *stats; /* inside stats_map */
  float *results;     /* inside result_map: two slots */
  float *snaps[2];    /* private snapshots */
  float *out;         /* private result, copied into a slot */
  void *copy_stream;
  int copy_used;                          /* something was queued on it */
  void *step_event, *release_event;       /* the client's */
  void *snapshot_event, *result_event[2]; /* ours, for the client */
  void *fence; /* ours: the start fence, and the teardown's */
  unsigned char snapshot_handle[DASH_CUDA_IPC_HANDLE_BYTES];
  unsigned char result_handle[2][DASH_CUDA_IPC_HANDLE_BYTES];
  char daemon_uuid[64]; /* the GPU our events live on */
};

static void map_unref(struct dashd_server *srv, struct dashd_cuda_map *m) {
  if (m == NULL || --m->refs > 0)
    return;
  for (struct dashd_cuda_map **p = &srv->cuda_maps; *p != NULL;
       p = &(*p)->next) {
    if (*p == m) {
      *p = m->next;
      break;
    }
  }
  const struct dash__cuda_ipc *ipc = dash__cuda_load_plugin(NULL)->ipc;
  if (m->vmm)
    ipc->vmm_close(m->base, m->pieces, m->n_pieces);
  else
    ipc->mem_close(m->base);
  free(m->pieces);
  free(m);
}

/* The client's allocation behind handle, opened once per client. */
static int map_ref(struct dashd_server *srv, uint64_t session,
                   const unsigned char *handle,
                   const struct dash__cuda_ipc *ipc,
                   struct dashd_cuda_map **out) {
  for (struct dashd_cuda_map *m = srv->cuda_maps; m != NULL; m = m->next) {
    if (!m->vmm && m->session == session &&
        memcmp(m->handle, handle, DASH_CUDA_IPC_HANDLE_BYTES) == 0) {
      m->refs++;
      *out = m;
      return 0;
    }
  }
  struct dashd_cuda_map *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return dash__fail(DASH_E_NOMEM, "out of memory");
  int rc = ipc->mem_open(handle, &m->base, &m->size);
  if (rc < 0) {
    free(m);
    return rc;
  }
  m->session = session;
  memcpy(m->handle, handle, DASH_CUDA_IPC_HANDLE_BYTES);
  m->refs = 1;
  m->next = srv->cuda_maps;
  srv->cuda_maps = m;
  *out = m;
  return 0;
}

/* A CudaBuffer is there and of the size the stack needs. */
static int check_declared(const Dashpb__CudaBuffer *buf, uint64_t want,
                          const char *what, const char *transport) {
  if (buf == NULL)
    return dash__fail(DASH_E_INVALID, "%s without the %s buffer", transport,
                      what);
  if (buf->bytes != want)
    return dash__fail(DASH_E_INVALID,
                      "the %s buffer is declared as %llu bytes; the stack "
                      "needs %llu",
                      what, (unsigned long long)buf->bytes,
                      (unsigned long long)want);
  return 0;
}

/* Opens the allocation of one CudaBuffer and checks that the buffer lies
 * inside it: a legacy handle opens the whole allocation, so the offset
 * and length are the client's word until checked here. */
static int open_buffer(struct dashd_server *srv, uint64_t session,
                       const struct dash__cuda_ipc *ipc,
                       const Dashpb__CudaBuffer *buf, uint64_t want,
                       const char *what, struct dashd_cuda_map **map,
                       void **ptr) {
  int rc = check_declared(buf, want, what, "CUDA_IPC");
  if (rc < 0)
    return rc;
  if (buf->handle.len != DASH_CUDA_IPC_HANDLE_BYTES)
    return dash__fail(DASH_E_INVALID,
                      "the %s handle has %zu bytes; a CUDA IPC handle has %d",
                      what, buf->handle.len, DASH_CUDA_IPC_HANDLE_BYTES);
  if (buf->offset % sizeof(float) != 0)
    return dash__fail(DASH_E_BAD_MEMORY,
                      "the %s buffer's offset %llu is not a multiple of 4",
                      what, (unsigned long long)buf->offset);
  rc = map_ref(srv, session, buf->handle.data, ipc, map);
  if (rc < 0)
    return dash__fail(rc, "cannot open the %s buffer: %s", what,
                      dash_last_error());
  size_t size = (*map)->size;
  if (buf->offset > size || want > size - buf->offset) {
    rc = dash__fail(DASH_E_BAD_MEMORY,
                    "the %s buffer (offset %llu, %llu bytes) does not lie "
                    "inside its allocation of %zu bytes",
                    what, (unsigned long long)buf->offset,
                    (unsigned long long)want, size);
    map_unref(srv, *map);
    *map = NULL;
    return rc;
  }
  *ptr = (char *)(*map)->base + buf->offset;
  return 0;
}

/* Maps the physical allocations of one CUDA_VMM_FD buffer, the next
 * buf->n_piece_bytes of the fds, and checks that the buffer lies inside
 * them. The driver refuses a piece larger than its allocation. */
static int open_vmm_buffer(struct dashd_server *srv, uint64_t session,
                           const struct dash__cuda_ipc *ipc,
                           const Dashpb__CudaBuffer *buf, uint64_t want,
                           const char *what, const int *fds, size_t *used,
                           size_t nfds, struct dashd_cuda_map **map,
                           void **ptr) {
  int rc = check_declared(buf, want, what, "CUDA_VMM_FD");
  if (rc < 0)
    return rc;
  size_t n = buf->n_piece_bytes;
  if (n == 0 || n > nfds - *used)
    return dash__fail(DASH_E_INVALID,
                      "the %s buffer names %zu allocations; the frame has "
                      "%zu fds left for it",
                      what, n, nfds - *used);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    if (buf->piece_bytes[i] == 0 ||
        __builtin_add_overflow(total, buf->piece_bytes[i], &total))
      return dash__fail(DASH_E_INVALID,
                        "the %s buffer's allocation sizes are empty or "
                        "overflow",
                        what);
  if (buf->offset % sizeof(float) != 0 || buf->offset > total ||
      want > total - buf->offset)
    return dash__fail(DASH_E_BAD_MEMORY,
                      "the %s buffer (offset %llu, %llu bytes) does not lie "
                      "inside its %zu allocations of %llu bytes",
                      what, (unsigned long long)buf->offset,
                      (unsigned long long)want, n, (unsigned long long)total);
  /* An fd that is a pipe, a socket or a directory is no allocation, and
   * the driver's import of a pipe or socket could wait for a writer that
   * never comes, on the loop thread. */
  for (size_t i = 0; i < n; i++) {
    struct stat sb;
    int fd = fds[*used + i];
    if (fstat(fd, &sb) != 0 || S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode) ||
        S_ISDIR(sb.st_mode))
      return dash__fail(DASH_E_BAD_MEMORY,
                        "the %s buffer's fd %zu of %zu is a pipe, socket or "
                        "directory, not a CUDA allocation",
                        what, i + 1, n);
  }
  struct dashd_cuda_map *m = calloc(1, sizeof(*m));
  uint64_t *pieces = calloc(n, sizeof(*pieces));
  if (m == NULL || pieces == NULL) {
    free(m);
    free(pieces);
    return dash__fail(DASH_E_NOMEM, "out of memory");
  }
  memcpy(pieces, buf->piece_bytes, n * sizeof(*pieces));
  rc = ipc->vmm_open(fds + *used, pieces, n, &m->base);
  *used += n;
  if (rc < 0) {
    free(pieces);
    free(m);
    return dash__fail(rc, "cannot map the %s buffer: %s", what,
                      dash_last_error());
  }
  m->session = session;
  m->size = (size_t)total;
  m->refs = 1;
  m->vmm = 1;
  m->pieces = pieces;
  m->n_pieces = n;
  m->next = srv->cuda_maps;
  srv->cuda_maps = m;
  *map = m;
  *ptr = (char *)m->base + buf->offset;
  return 0;
}

/* Opens one of the client's events on its GPU, `device`. */
static int open_event(const struct dash__cuda_ipc *ipc, int device,
                      const ProtobufCBinaryData *h, const char *what,
                      void **ev) {
  if (h->len != DASH_CUDA_IPC_HANDLE_BYTES)
    return dash__fail(DASH_E_INVALID,
                      "the %s event handle has %zu bytes; a CUDA IPC "
                      "handle has %d",
                      what, h->len, DASH_CUDA_IPC_HANDLE_BYTES);
  int rc = ipc->event_open(device, h->data, ev);
  return rc < 0 ? dash__fail(rc, "cannot open the %s event: %s", what,
                             dash_last_error())
                : 0;
}

/* The ordinal of the visible device with this UUID, or a clear refusal:
 * GPUs are named by UUID because CUDA_VISIBLE_DEVICES renumbers
 * ordinals. */
static int check_device(const char *uuid) {
  if (uuid == NULL || strncmp(uuid, "GPU-", 4) != 0)
    return dash__fail(DASH_E_INVALID,
                      "CUDA_IPC needs the UUID of the trainer's GPU "
                      "(GPU-...), not '%s'",
                      uuid != NULL ? uuid : "");
  int device = dash__cuda_device_of_uuid(uuid);
  if (device >= 0)
    return device;
  return dash__fail(DASH_E_UNSUPPORTED,
                    "the trainer's GPU %s is not visible to this daemon "
                    "(check its CUDA_VISIBLE_DEVICES)",
                    uuid);
}

int dashd__cuda_stack_quiesce(struct dashd_stack *st) {
  struct dashd_cuda_stack *g = st->cuda;
  if (g == NULL || !g->copy_used)
    return 1;
  /* A snapshot copy, or a wait for the client's events, may still be
   * queued: the client's memory is closed and the daemon's freed (cudaFree
   * may wait for the device) only once they are done. The fence comes
   * after them all, even after a snapshot that failed half way. */
  int rc = g->ipc->event_record(-1, g->fence, g->copy_stream);
  return rc < 0 ? rc : g->ipc->event_query(g->fence);
}

void dashd__cuda_stack_free(struct dashd_stack *st) {
  struct dashd_cuda_stack *g = st->cuda;
  if (g == NULL)
    return;
  const struct dash__cuda_ipc *ipc = g->ipc;
  ipc->stream_destroy(g->copy_stream);
  ipc->event_destroy(g->step_event);
  ipc->event_destroy(g->release_event);
  ipc->event_destroy(g->snapshot_event);
  ipc->event_destroy(g->result_event[0]);
  ipc->event_destroy(g->result_event[1]);
  ipc->event_destroy(g->fence);
  ipc->free(g->snaps[0]);
  ipc->free(g->snaps[1]);
  ipc->free(g->out);
  map_unref(st->srv, g->stats_map);
  map_unref(st->srv, g->result_map);
  free(g);
  st->cuda = NULL;
}

int dashd__cuda_stack_open(struct dashd_stack *st, struct dashd_session *s,
                           const Dashpb__RegisterStack *req, const int *fds,
                           int nfds) {
  const char *why = "";
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(&why);
  if (p == NULL || dash__cuda_device_count() <= 0)
    return dash__fail(DASH_E_UNSUPPORTED,
                      "this daemon has no CUDA device for CUDA stacks%s%s",
                      p == NULL ? ": " : "", p == NULL ? why : "");
  const struct dash__cuda_ipc *ipc = p->ipc;
  size_t bytes = st->elems * sizeof(float);
  int rc, device;
  if ((device = check_device(req->device_uuid)) < 0)
    return device;
  snprintf(st->memory, sizeof(st->memory), "%s %s",
           req->transport == DASHPB__TRANSPORT__TRANSPORT_CUDA_VMM_FD
               ? "cuda-vmm"
               : "cuda-ipc",
           req->device_uuid);
  struct dashd_cuda_stack *g = calloc(1, sizeof(*g));
  if (g == NULL)
    return dash__fail(DASH_E_NOMEM, "out of memory");
  st->cuda = g;
  g->ipc = ipc;
  void *stats, *results;
  if (req->transport == DASHPB__TRANSPORT__TRANSPORT_CUDA_VMM_FD) {
    size_t used = 0;
    if ((rc = open_vmm_buffer(st->srv, s->serial, ipc, req->stats_cuda, bytes,
                              "statistics", fds, &used, (size_t)nfds,
                              &g->stats_map, &stats)) < 0 ||
        (rc = open_vmm_buffer(st->srv, s->serial, ipc, req->result_cuda,
                              2 * bytes, "result", fds, &used, (size_t)nfds,
                              &g->result_map, &results)) < 0)
      return rc;
    if (used != (size_t)nfds)
      return dash__fail(DASH_E_INVALID,
                        "RegisterStack carries %d fds; its buffers name %zu "
                        "allocations",
                        nfds, used);
  } else if ((rc = open_buffer(st->srv, s->serial, ipc, req->stats_cuda, bytes,
                               "statistics", &g->stats_map, &stats)) < 0 ||
             (rc = open_buffer(st->srv, s->serial, ipc, req->result_cuda,
                               2 * bytes, "result", &g->result_map, &results)) <
                 0) {
    return rc;
  }
  g->stats = stats;
  g->results = results;
  /* The daemon writes the slots while it may read the statistics. */
  if (g->stats_map == g->result_map &&
      (const char *)g->stats < (const char *)g->results + 2 * bytes &&
      (const char *)g->results < (const char *)g->stats + bytes)
    return dash__fail(DASH_E_INVALID,
                      "the statistics and result buffers overlap");
  /* The client's events live on the trainer's GPU; ours on the daemon's
   * current one, which the reply names (dashd__cuda_stack_events). */
  if ((rc = open_event(ipc, device, &req->step_event, "step", &g->step_event)) <
          0 ||
      (rc = open_event(ipc, device, &req->release_event, "release",
                       &g->release_event)) < 0)
    return rc;
  int mine = ipc->current_device();
  if (mine < 0)
    return mine;
  if ((rc = ipc->device_uuid(mine, g->daemon_uuid, sizeof(g->daemon_uuid))) < 0)
    return rc;
  void *p0, *p1, *po;
  unsigned char unused[DASH_CUDA_IPC_HANDLE_BYTES];
  if ((rc = ipc->event_create(-1, &g->snapshot_event, g->snapshot_handle)) <
          0 ||
      (rc = ipc->event_create(-1, &g->result_event[0], g->result_handle[0])) <
          0 ||
      (rc = ipc->event_create(-1, &g->result_event[1], g->result_handle[1])) <
          0 ||
      (rc = ipc->event_create(-1, &g->fence, unused)) < 0 ||
      (rc = ipc->stream_create(1, &g->copy_stream)) < 0)
    return rc;
  if ((rc = ipc->alloc(&p0, bytes)) < 0)
    return rc;
  g->snaps[0] = p0;
  if ((rc = ipc->alloc(&p1, bytes)) < 0)
    return rc;
  g->snaps[1] = p1;
  if ((rc = ipc->alloc(&po, bytes)) < 0)
    return rc;
  g->out = po;
  return 0;
}

void dashd__cuda_stack_events(const struct dashd_stack *st,
                              Dashpb__RegisterStackReply *rr,
                              ProtobufCBinaryData results[2]) {
  struct dashd_cuda_stack *g = st->cuda;
  rr->snapshot_event.data = g->snapshot_handle;
  rr->snapshot_event.len = DASH_CUDA_IPC_HANDLE_BYTES;
  for (int k = 0; k < 2; k++) {
    results[k].data = g->result_handle[k];
    results[k].len = DASH_CUDA_IPC_HANDLE_BYTES;
  }
  rr->n_result_event = 2;
  rr->result_event = results;
  rr->device_uuid = g->daemon_uuid;
}

int dashd__cuda_snapshot(struct dashd_stack *st, int snap) {
  struct dashd_cuda_stack *g = st->cuda;
  const struct dash__cuda_ipc *ipc = g->ipc;
  int rc;
  g->copy_used = 1;
  /* After the trainer's update (its step event), before its next one
   * (which waits for the snapshot event the client gets with the
   * reply): invariant 1 on the GPU. */
  if ((rc = ipc->stream_wait(-1, g->copy_stream, g->step_event)) < 0 ||
      (rc = ipc->copy(g->snaps[snap], g->stats, st->elems * sizeof(float),
                      g->copy_stream)) < 0 ||
      (rc = ipc->event_record(-1, g->snapshot_event, g->copy_stream)) < 0)
    return rc;
  return 0;
}

int dashd__cuda_fence(struct dashd_stack *st) {
  struct dashd_cuda_stack *g = st->cuda;
  const struct dash__cuda_ipc *ipc = g->ipc;
  int rc;
  g->copy_used = 1;
  /* The copy stream holds the snapshot copies in order, so the fence
   * follows the one to be computed. The slot to be written may still be
   * read by kernels the trainer queued before the Sync that let go of it:
   * the release event recorded then comes after them, and so does any
   * newer record of it, which is the one waited for here (the client
   * records it on its stream, in order). */
  if ((rc = ipc->stream_wait(-1, g->copy_stream, g->release_event)) < 0 ||
      (rc = ipc->event_record(-1, g->fence, g->copy_stream)) < 0)
    return rc;
  return 0;
}

int dashd__cuda_fence_done(struct dashd_stack *st) {
  struct dashd_cuda_stack *g = st->cuda;
  return g->ipc->event_query(g->fence);
}

int dashd__cuda_run(struct dashd_job *job, void *stream) {
  struct dashd_stack *st = job->stack;
  struct dashd_cuda_stack *g = st->cuda;
  const struct dash__cuda_ipc *ipc = g->ipc;
  size_t bb = st->b * st->b;
  float *slot = g->results + (size_t)job->slot * st->elems;
  int rc, queued = 0;
  /* The loop thread handed this job over once the fence was complete,
   * and queues it again only after the job: the wait orders the stream
   * after the snapshot copy and the client's release and is satisfied at
   * once, so the final stream_sync waits for the daemon's own work. The
   * client's events themselves are never waited for here: a newer record
   * of them could be one that never completes. */
  if ((rc = ipc->stream_wait(-1, stream, g->fence)) < 0)
    goto out;
  queued = 1;
  if ((rc = dash_roots_execute_device(st->plan, g->out, g->snaps[job->snap],
                                      st->infos, &job->report, stream)) < 0)
    goto out;
  /* A block whose input was not finite keeps the newest earlier result,
   * as on the CPU. */
  if (job->prev >= 0 && job->prev != job->slot) {
    const float *prev = g->results + (size_t)job->prev * st->elems;
    for (size_t i = 0; i < st->n; i++)
      if (st->infos[i].status == DASH_BLOCK_NONFINITE_INPUT &&
          (rc = ipc->copy(g->out + i * bb, prev + i * bb, bb * sizeof(float),
                          stream)) < 0)
        goto out;
  }
  if ((rc = ipc->copy(slot, g->out, st->elems * sizeof(float), stream)) == 0)
    rc = ipc->event_record(-1, g->result_event[job->slot], stream);
out:
  /* Whatever is queued ends before the job does: the stack may be freed
   * then. Errors of the queued work belong to this computation; the
   * first one is what the client is told, unless the GPU failed since,
   * which the daemon must act on (dashd__stack_job_done). */
  if (queued) {
    char first[256], then[256];
    snprintf(first, sizeof(first), "%s", rc < 0 ? dash_last_error() : "");
    int sync = ipc->stream_sync(stream);
    if (rc == 0) {
      rc = sync;
    } else if (sync == DASH_E_DEVICE_LOST && rc != sync) {
      snprintf(then, sizeof(then), "%s", dash_last_error());
      rc = dash__fail(sync, "%s; then the GPU failed: %s", first, then);
    } else if (sync < 0) {
      rc = dash__fail(rc, "%s", first);
    }
  }
  return rc;
}
