/* Stacks: the client's shared memory, the private snapshots, the plan,
 * and the hand-over of result slots by generation (DESIGN.md invariants
 * 1-4). Everything here runs on the loop thread.
 *
 * CUDA stacks wait for the GPU without blocking: a computation goes to
 * the worker only once its start fence is complete (transport_cuda.c),
 * and a released stack is freed only once its copy stream is idle. Both
 * are looked at by one timer per server, gpu_poll, every millisecond
 * while something changes, backing off to every 10 ms while nothing
 * does. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dashd.h"
#include "log.h"

static void *map_private(size_t bytes) {
  /* Anonymous pages cost nothing until written, so the second snapshot
   * uses memory only once a refresh arrives while one computes. */
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* Answers a deferred Unregister, when its client is still connected. */
static void reply_unregister(struct dashd_stack *st) {
  if (st->unreg_request_id == 0)
    return;
  for (struct dashd_session *s = st->srv->sessions; s != NULL; s = s->next) {
    if (s->serial == st->unreg_session) {
      Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
      env.request_id = st->unreg_request_id;
      env.message = (char *)"";
      dashd__session_send(s, &env);
      break;
    }
  }
  st->unreg_request_id = 0;
}

/* The GPU poll's bounds, and how long a released stack may wait for its
 * copies before the log says so. */
static const uint64_t kGpuPollMinMs = 1;
static const uint64_t kGpuPollMaxMs = 10;
static const uint64_t kDrainWarnMs = 10000;

static void on_gpu_poll(uv_timer_t *t);

/* Makes the GPU poll look soon: something new waits for the GPU. */
static void gpu_poll_arm(struct dashd_server *srv) {
  if (!srv->gpu_poll_open)
    return;
  if (uv_is_active((uv_handle_t *)&srv->gpu_poll) &&
      srv->gpu_poll_ms == kGpuPollMinMs)
    return;
  srv->gpu_poll_ms = kGpuPollMinMs;
  srv->gpu_poll.data = srv;
  uv_timer_start(&srv->gpu_poll, on_gpu_poll, kGpuPollMinMs, 0);
}

/* Frees everything of st; its GPU streams are idle. */
static void stack_destroy(struct dashd_stack *st) {
  size_t bytes = st->elems * sizeof(float);
  if (st->id != 0)
    dashd__log(DASHD_LOG_DEBUG, "stack %llu freed", (unsigned long long)st->id);
  dashd__cuda_stack_free(st);
  reply_unregister(st);
  dash_roots_plan_destroy(st->plan);
  if (st->stats != NULL)
    munmap((void *)st->stats, bytes);
  if (st->results != NULL)
    munmap(st->results, 2 * bytes);
  for (int i = 0; i < 2; i++)
    if (st->snaps[i] != NULL)
      munmap(st->snaps[i], bytes);
  free(st->infos);
  free(st);
}

/* A GPU call in a stack's teardown failed: logged; a lost GPU fails the
 * daemon, on the loop's next turn (the teardown may run inside a
 * session's close). */
static void teardown_failed(struct dashd_stack *st, int rc,
                            const char *detail) {
  char why[300];
  snprintf(why, sizeof(why), "stack %llu: %s", (unsigned long long)st->id,
           detail);
  dashd__log(DASHD_LOG_WARN, "%s; freeing it now", why);
  if (rc == DASH_E_DEVICE_LOST)
    dashd__server_fail_later(st->srv, kDashdExitDeviceLost, why);
}

/* Frees st (unlinked from the server's list), or, while its copy stream
 * still holds work, which may wait for a client's GPU that never gets
 * there, puts it on the draining list, which the GPU poll frees. */
static void stack_free(struct dashd_stack *st) {
  struct dashd_server *srv = st->srv;
  int idle = dashd__cuda_stack_quiesce(st);
  if (idle == 0) {
    dashd__log(DASHD_LOG_DEBUG,
               "stack %llu: freed once its copies queued on the GPU are done",
               (unsigned long long)st->id);
    st->drain_since_ms = uv_now(srv->loop);
    st->next_all = srv->draining;
    srv->draining = st;
    gpu_poll_arm(srv);
    return;
  }
  if (idle < 0)
    teardown_failed(st, idle, dash_last_error());
  stack_destroy(st);
}

/* Checks that fd is a memfd of at least `bytes` bytes that cannot shrink
 * (DESIGN.md: a shrinking memfd turns the daemon's next read into
 * SIGBUS), then maps it. */
static int map_client_fd(int fd, size_t bytes, int writable, const char *what,
                         void **out, char *err, size_t err_size) {
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    snprintf(err, err_size, "the %s fd is not a memfd", what);
    return DASH_E_BAD_MEMORY;
  }
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    snprintf(err, err_size,
             "the %s memfd is not sealed against shrinking "
             "(F_SEAL_SHRINK); refusing it",
             what);
    return DASH_E_BAD_MEMORY;
  }
  if ((uint64_t)sb.st_size < (uint64_t)bytes) {
    snprintf(err, err_size, "the %s memfd holds %lld bytes, %zu declared", what,
             (long long)sb.st_size, bytes);
    return DASH_E_BAD_MEMORY;
  }
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *p = mmap(NULL, bytes, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    snprintf(err, err_size, "cannot map the %s memfd: %s", what,
             strerror(errno));
    return DASH_E_BAD_MEMORY;
  }
  *out = p;
  return 0;
}

static int options_from_pb(const Dashpb__StackOptions *o,
                           const struct dashd_config *cfg,
                           dash_roots_options *ro) {
  static const dash_roots_options defaults = DASH_ROOTS_OPTIONS_INIT;
  *ro = defaults;
  ro->root = o->root;
  ro->method = (dash_method)o->method;
  ro->scaling = (dash_scaling)o->scaling;
  ro->max_steps = o->max_steps;
  ro->tol = o->tol;
  ro->eps = o->eps;
  ro->precision = (dash_precision)o->precision;
  ro->fallback = (dash_fallback)o->fallback;
  ro->backend = cfg->backend;
  ro->threads = cfg->threads;
  ro->stream_priority = cfg->stream_priority;
  return 0;
}

int dashd__stack_register(struct dashd_session *s,
                          const Dashpb__RegisterStack *req, int *fds, int nfds,
                          uint64_t *id_out, char *err, size_t err_size) {
  struct dashd_server *srv = s->srv;
  struct dashd_stack *st = NULL;
  int rc;

  int vmm = req->transport == DASHPB__TRANSPORT__TRANSPORT_CUDA_VMM_FD;
  int cuda = req->transport == DASHPB__TRANSPORT__TRANSPORT_CUDA_IPC || vmm;
  if (req->transport != DASHPB__TRANSPORT__TRANSPORT_SHM && !cuda) {
    snprintf(err, err_size, "transport %d is not supported here",
             (int)req->transport);
    rc = DASH_E_UNSUPPORTED;
    goto out;
  }
  if (!vmm && nfds != (cuda ? 0 : 2)) {
    snprintf(
        err, err_size, "RegisterStack carries %d fds; %s", nfds,
        cuda ? "CUDA_IPC takes none" : "SHM needs 2 (statistics, results)");
    rc = DASH_E_INVALID;
    goto out;
  }
  if (req->options == NULL) {
    snprintf(err, err_size, "RegisterStack without options");
    rc = DASH_E_INVALID;
    goto out;
  }
  if (cuda && srv->cfg.backend == DASH_BACKEND_CPU) {
    snprintf(err, err_size,
             "this daemon computes on the CPU (backend cpu): CUDA stacks "
             "need a daemon with backend cuda");
    rc = DASH_E_UNSUPPORTED;
    goto out;
  }
  if (s->n_stacks >= srv->cfg.max_stacks_per_client) {
    snprintf(err, err_size, "this client already has %u stacks, the limit",
             s->n_stacks);
    rc = DASH_E_LIMIT;
    goto out;
  }
  const Dashpb__StackOptions *o = req->options;
  if ((rc = dash_roots_check_shape((size_t)o->num_blocks,
                                   (size_t)o->block_size)) < 0) {
    snprintf(err, err_size, "%s", dash_last_error());
    goto out;
  }
  /* The shape check bounds N·B·B·4 by DASH_ROOTS_MAX_BYTES, so none of
   * these products overflow. */
  size_t elems = (size_t)o->num_blocks * o->block_size * o->block_size;
  size_t bytes = elems * sizeof(float);
  if (req->stats_bytes != bytes || req->result_bytes != 2 * (uint64_t)bytes) {
    snprintf(err, err_size,
             "declared sizes %llu and %llu do not match %llu blocks of "
             "%llux%llu (need %zu and %zu bytes)",
             (unsigned long long)req->stats_bytes,
             (unsigned long long)req->result_bytes,
             (unsigned long long)o->num_blocks,
             (unsigned long long)o->block_size,
             (unsigned long long)o->block_size, bytes, 2 * bytes);
    rc = DASH_E_INVALID;
    goto out;
  }
  /* SHM: stats, 2 slots, 2 snapshots; CUDA: 2 snapshots and the private
   * result, in the daemon's GPU memory. */
  uint64_t cost = (cuda ? 3 : 5) * (uint64_t)bytes;
  /* Stacks of this user's departed clients whose copies still wait for
   * their GPU work keep their memory: they count, so that reconnecting
   * does not pile them up without bound. */
  uint64_t draining = 0;
  for (const struct dashd_stack *d = srv->draining; d != NULL; d = d->next_all)
    if (d->uid == s->uid)
      draining += d->bytes;
  if (s->bytes + draining + cost > srv->cfg.max_bytes_per_client) {
    snprintf(err, err_size,
             "this stack needs %llu bytes; the client holds %llu of its "
             "limit of %llu%s",
             (unsigned long long)cost,
             (unsigned long long)(s->bytes + draining),
             (unsigned long long)srv->cfg.max_bytes_per_client,
             draining > 0 ? " (with stacks of its user's departed clients "
                            "still waiting for their GPU copies)"
                          : "");
    rc = DASH_E_LIMIT;
    goto out;
  }

  st = calloc(1, sizeof(*st));
  if (st == NULL) {
    rc = DASH_E_NOMEM;
    snprintf(err, err_size, "out of memory");
    goto out;
  }
  st->n = (size_t)o->num_blocks;
  st->b = (size_t)o->block_size;
  st->elems = elems;
  st->bytes = cost;
  st->uid = s->uid;
  st->computing = st->pending = st->held = st->ready = st->copying = -1;
  st->srv = srv;
  options_from_pb(o, &srv->cfg, &st->opts);

  if (cuda) {
    /* The stack lives on the GPU: its plan computes device buffers only. */
    st->opts.backend = DASH_BACKEND_CUDA;
    st->opts.device_only = 1;
    if ((rc = dashd__cuda_stack_open(st, s, req, fds, nfds)) < 0) {
      snprintf(err, err_size, "%s", dash_last_error());
      goto out;
    }
  } else {
    void *p;
    if ((rc = map_client_fd(fds[0], bytes, 0, "statistics", &p, err,
                            err_size)) < 0)
      goto out;
    st->stats = p;
    if ((rc = map_client_fd(fds[1], 2 * bytes, 1, "results", &p, err,
                            err_size)) < 0)
      goto out;
    st->results = p;
  }
  if ((rc = dash_roots_plan_create(&st->plan, st->n, st->b, &st->opts)) < 0) {
    snprintf(err, err_size, "%s", dash_last_error());
    goto out;
  }
  st->opts = *dash_roots_plan_options(st->plan);
  if (!cuda) {
    st->snaps[0] = map_private(bytes);
    st->snaps[1] = map_private(bytes);
  }
  st->infos = calloc(st->n, sizeof(*st->infos));
  if ((!cuda && (st->snaps[0] == NULL || st->snaps[1] == NULL)) ||
      st->infos == NULL) {
    snprintf(err, err_size, "out of memory for %zu bytes of snapshots",
             2 * bytes);
    rc = DASH_E_NOMEM;
    goto out;
  }

  st->id = ++srv->next_stack_id;
  st->owner = s;
  st->next_owned = s->stacks;
  s->stacks = st;
  s->n_stacks++;
  s->bytes += cost;
  st->next_all = srv->stacks;
  srv->stacks = st;
  *id_out = st->id;
  dashd__log(DASHD_LOG_INFO,
             "stack %llu registered by pid %d: %zu blocks of %zux%zu, %s, "
             "root %d, %s",
             (unsigned long long)st->id, (int)s->pid, st->n, st->b, st->b,
             dash_method_name(st->opts.method), st->opts.root,
             cuda ? "CUDA IPC" : "shared memory");
  st = NULL;
  rc = 0;
out:
  /* The mappings keep the memory; the fds themselves are never kept. */
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
  if (st != NULL)
    stack_free(st);
  return rc;
}

/* The result slot the next computation may write: neither the one the
 * client holds nor the newest finished one it has not adopted yet. With
 * two slots there is none while the client holds one and the other is
 * ready; the computation then waits for the client's next Sync, so a
 * finished result is never thrown away unseen (a trainer stepping faster
 * than the daemon computes would otherwise never get one). */
static int writable_slot(const struct dashd_stack *st) {
  if (st->held < 0)
    return st->ready == 0 ? 1 : 0;
  if (st->ready == 1 - st->held)
    return -1;
  return 1 - st->held;
}

static void push_failed(struct dashd_stack *st, uint64_t step, int status,
                        const char *why);

/* Starts the waiting snapshot when the worker is free for this stack and
 * a slot can be written. A CUDA stack's computation first waits for its
 * start fence, counted as computing meanwhile: a newer snapshot goes to
 * the other buffer, so that the fence is never chased by newer ones. */
static void try_start(struct dashd_stack *st) {
  /* A stopping daemon starts nothing: it waits for what runs. */
  if (st->computing >= 0 || st->pending < 0 || st->owner == NULL ||
      st->srv->stopping)
    return;
  int slot = writable_slot(st);
  if (slot < 0)
    return;
  int snap = st->pending;
  st->pending = -1;
  st->computing = snap;
  st->job.stack = st;
  st->job.snap = snap;
  st->job.slot = slot;
  /* Blocks with non-finite input keep the newest earlier result. */
  st->job.prev = st->ready >= 0 ? st->ready : st->held;
  st->job.step = st->snap_step[snap];
  st->job.rc = 0;
  st->job.message[0] = '\0';
  if (st->cuda != NULL) {
    int rc = dashd__cuda_fence(st);
    if (rc == 0)
      rc = dashd__cuda_fence_done(st);
    if (rc != 1) {
      /* A failure is reported by the poll too: the callers of this one
       * go on with the stack afterwards, which a failed GPU would end. */
      if (rc < 0) {
        st->job.rc = rc;
        snprintf(st->job.message, sizeof(st->job.message), "%s",
                 dash_last_error());
      }
      st->gpu_wait = 1;
      gpu_poll_arm(st->srv);
      return;
    }
  }
  dashd__sched_submit(st->srv->sched, &st->job);
}

/* One look of the GPU poll: hands over the computations whose fence is
 * complete, reports those whose fence failed, and frees the released
 * stacks whose copies are done. */
static void on_gpu_poll(uv_timer_t *t) {
  struct dashd_server *srv = t->data;
  uint64_t pass = ++srv->gpu_poll_pass;
  int waiting = 0, changed = 0;
again:
  for (struct dashd_stack *st = srv->stacks; st != NULL; st = st->next_all) {
    if (!st->gpu_wait || st->gpu_poll_pass == pass)
      continue;
    st->gpu_poll_pass = pass;
    int rc = st->job.rc < 0 ? st->job.rc : dashd__cuda_fence_done(st);
    if (rc == 0 || (rc == 1 && srv->stopping)) {
      /* Not yet; or the daemon stops, and the stack is released soon. */
      waiting++;
      continue;
    }
    st->gpu_wait = 0;
    changed = 1;
    if (rc == 1) {
      dashd__sched_submit(srv->sched, &st->job);
      continue;
    }
    if (st->job.rc == 0) {
      st->job.rc = rc;
      snprintf(st->job.message, sizeof(st->job.message), "%s",
               dash_last_error());
    }
    /* A failed computation, as if the worker had run it. That may free
     * stacks or fail the whole server, so the walk starts over. */
    dashd__stack_job_done(st);
    goto again;
  }
  /* Freeing a stack answers its Unregister, which may close a session
   * and release more stacks onto the list: it is taken whole first. */
  struct dashd_stack *list = srv->draining;
  srv->draining = NULL;
  while (list != NULL) {
    struct dashd_stack *st = list;
    list = st->next_all;
    int rc = dashd__cuda_fence_done(st);
    if (rc != 0) {
      if (rc < 0)
        teardown_failed(st, rc, dash_last_error());
      changed = 1;
      stack_destroy(st);
      continue;
    }
    if (!st->drain_warned &&
        uv_now(srv->loop) - st->drain_since_ms >= kDrainWarnMs) {
      /* Its memory stays: freeing what a queued copy will touch could
       * poison the GPU context for every client. */
      dashd__log(DASHD_LOG_WARN,
                 "stack %llu: released %llu s ago, its copies still wait "
                 "for the client's GPU work; its memory is kept until they "
                 "are done",
                 (unsigned long long)st->id,
                 (unsigned long long)(kDrainWarnMs / 1000));
      st->drain_warned = 1;
    }
    st->next_all = srv->draining;
    srv->draining = st;
  }
  if ((waiting == 0 && srv->draining == NULL) || !srv->gpu_poll_open)
    return;
  if (changed)
    srv->gpu_poll_ms = kGpuPollMinMs;
  else if (srv->gpu_poll_ms < kGpuPollMaxMs)
    srv->gpu_poll_ms = 2 * srv->gpu_poll_ms < kGpuPollMaxMs
                           ? 2 * srv->gpu_poll_ms
                           : kGpuPollMaxMs;
  uv_timer_start(t, on_gpu_poll, srv->gpu_poll_ms, 0);
}

/* Snapshots up to this size are copied on the loop thread (a few hundred
 * microseconds); larger ones on the thread pool, so that one trainer's
 * big stack does not stall every other client's requests. */
static const size_t kInlineCopyBytes = (size_t)4 << 20;

static void reply_refresh(struct dashd_stack *st, uint64_t request_id,
                          int coalesced, int behind) {
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__RefreshReply rr = DASHPB__REFRESH_REPLY__INIT;
  rr.coalesced = coalesced;
  rr.queued_behind = behind;
  env.request_id = request_id;
  env.body_case = DASHPB__ENVELOPE__BODY_REFRESH_REPLY;
  env.refresh_reply = &rr;
  dashd__session_send(st->owner, &env);
}

static void stack_remove_from_server(struct dashd_server *srv,
                                     struct dashd_stack *st);

static void copy_work(uv_work_t *w) {
  struct dashd_stack *st = w->data;
  memcpy(st->snaps[st->copying], st->stats, st->elems * sizeof(float));
}

static void copy_done(uv_work_t *w, int status) {
  struct dashd_stack *st = w->data;
  int snap = st->copying;
  st->copying = -1;
  if (st->owner == NULL) {
    /* The owner let go while the copy ran. */
    if (st->computing < 0) {
      stack_remove_from_server(st->srv, st);
      stack_free(st);
    }
    return;
  }
  st->pending = snap;
  reply_refresh(st, st->copy_request_id, st->copy_coalesced, st->copy_behind);
  try_start(st);
}

int dashd__stack_refresh(struct dashd_stack *st, uint64_t step,
                         uint64_t request_id) {
  size_t bytes = st->elems * sizeof(float);
  if (st->copying >= 0)
    return DASH_E_INVALID;
  int behind = st->computing >= 0;
  int coalesced = st->pending >= 0;
  /* The buffer the worker is not reading: a waiting snapshot is replaced
   * by this newer one (invariant 4). The trainer waits in dash_step until
   * the reply, which comes after the copy, and writes its statistics only
   * then, so the snapshot is consistent (invariant 1). */
  int snap = st->computing >= 0 ? 1 - st->computing
                                : (st->pending >= 0 ? st->pending : 0);
  if (st->cuda != NULL) {
    /* Queued on the GPU; the reply lets the client order its stream. */
    int rc = dashd__cuda_snapshot(st, snap);
    if (rc < 0) {
      /* The copy may be queued half: the buffer holds no snapshot to
       * compute from, and no refresh was taken. A waiting one was in it:
       * its client is told it will never come. */
      if (coalesced) {
        char why[200];
        snprintf(why, sizeof(why),
                 "its snapshot was lost when the copy of a newer one "
                 "failed: %.120s",
                 dash_last_error());
        st->failures++;
        push_failed(st, st->snap_step[snap], rc, why);
      }
      st->pending = -1;
      return rc == DASH_E_INVALID ? DASH_E_CUDA : rc;
    }
  }
  st->refreshes++;
  st->last_step_requested = step;
  if (coalesced) {
    st->coalesced++;
    st->srv->metrics.coalesced++;
  }
  st->snap_step[snap] = step;
  if (st->cuda != NULL) {
    st->pending = snap;
    reply_refresh(st, request_id, coalesced, behind);
    try_start(st);
    return 0;
  }
  if (bytes > kInlineCopyBytes) {
    /* The waiting snapshot is being overwritten: it must not start. */
    st->pending = -1;
    st->copying = snap;
    st->copy_request_id = request_id;
    st->copy_coalesced = coalesced;
    st->copy_behind = behind;
    st->copy.data = st;
    if (uv_queue_work(st->srv->loop, &st->copy, copy_work, copy_done) == 0)
      return 0;
    /* No thread pool: copy here after all. */
    st->copying = -1;
  }
  memcpy(st->snaps[snap], st->stats, bytes);
  st->pending = snap;
  reply_refresh(st, request_id, coalesced, behind);
  try_start(st);
  return 0;
}

int dashd__stack_sync(struct dashd_stack *st) {
  if (st->ready < 0)
    return 0;
  st->held = st->ready;
  st->ready = -1;
  /* The slot the client let go of can take the waiting computation. */
  try_start(st);
  return 1;
}

static void stack_unlink(struct dashd_stack *st) {
  struct dashd_session *s = st->owner;
  if (s != NULL) {
    for (struct dashd_stack **p = &s->stacks; *p != NULL;
         p = &(*p)->next_owned) {
      if (*p == st) {
        *p = st->next_owned;
        break;
      }
    }
    s->n_stacks--;
    s->bytes -= st->bytes;
    st->owner = NULL;
  }
}

static void stack_remove_from_server(struct dashd_server *srv,
                                     struct dashd_stack *st) {
  for (struct dashd_stack **p = &srv->stacks; *p != NULL; p = &(*p)->next_all) {
    if (*p == st) {
      *p = st->next_all;
      return;
    }
  }
}

int dashd__stack_unregister(struct dashd_stack *st, uint64_t request_id) {
  /* SHM stacks are answered now: the client's mappings keep the memory. */
  int deferred = st->cuda != NULL;
  if (deferred) {
    st->unreg_request_id = request_id;
    st->unreg_session = st->owner->serial;
  }
  dashd__stack_release(st);
  return deferred;
}

void dashd__stack_release(struct dashd_stack *st) {
  struct dashd_server *srv = st->srv;
  stack_unlink(st);
  st->pending = -1;
  /* A computation that has not started is dropped, so that an Unregister
   * waits for one running computation at most: one that waits for its
   * fence, or in the worker's queue behind other stacks'. */
  if (st->gpu_wait) {
    st->gpu_wait = 0;
    st->computing = -1;
    /* Its fence had failed: a lost GPU is no less lost for the owner
     * having gone. */
    if (st->job.rc == DASH_E_DEVICE_LOST)
      teardown_failed(st, st->job.rc, st->job.message);
  } else if (st->computing >= 0 && dashd__sched_cancel(srv->sched, &st->job)) {
    st->computing = -1;
  }
  if (st->computing >= 0 || st->copying >= 0)
    return; /* freed by dashd__stack_job_done or copy_done */
  stack_remove_from_server(srv, st);
  stack_free(st);
}

void dashd__result_to_pb(const struct dashd_result *r, int slot,
                         Dashpb__ResultInfo *pb, uint64_t *counts) {
  dashpb__result_info__init(pb);
  pb->generation = r->generation;
  pb->step = r->step;
  pb->slot = (uint32_t)slot;
  pb->compute_ms = r->compute_ms;
  pb->method = (int32_t)r->method;
  pb->max_iterations = r->max_iterations;
  for (int i = 0; i < DASH_BLOCK_STATUS_COUNT; i++)
    counts[i] = r->blocks_by_status[i];
  pb->n_blocks_by_status = DASH_BLOCK_STATUS_COUNT;
  pb->blocks_by_status = counts;
  pb->status = r->status;
  pb->message = (char *)r->message;
}

/* Pushes the RefreshDone of result r in `slot` to the owner. */
static void push_done(struct dashd_stack *st, const struct dashd_result *r,
                      int slot) {
  Dashpb__Envelope env = DASHPB__ENVELOPE__INIT;
  Dashpb__RefreshDone done = DASHPB__REFRESH_DONE__INIT;
  Dashpb__ResultInfo info;
  uint64_t counts[DASH_BLOCK_STATUS_COUNT];
  dashd__result_to_pb(r, slot, &info, counts);
  done.stack_id = st->id;
  done.result = &info;
  env.body_case = DASHPB__ENVELOPE__BODY_REFRESH_DONE;
  env.refresh_done = &done;
  dashd__session_send(st->owner, &env);
}

/* Pushes that the refresh of `step` failed, or will never be computed. */
static void push_failed(struct dashd_stack *st, uint64_t step, int status,
                        const char *why) {
  struct dashd_result failed;
  memset(&failed, 0, sizeof(failed));
  failed.step = step;
  failed.status = status;
  snprintf(failed.message, sizeof(failed.message), "%s", why);
  push_done(st, &failed, 0);
}

void dashd__stack_job_done(struct dashd_stack *st) {
  struct dashd_job *job = &st->job;
  struct dashd_result *r = &st->slot_result[job->slot];
  st->computing = -1;
  dashd__metrics_record(st->srv, job);

  if (job->rc == 0) {
    memset(r, 0, sizeof(*r));
    r->generation = ++st->generation;
    r->step = job->step;
    r->compute_ms = job->report.ms_total;
    r->method = job->report.method;
    r->max_iterations = job->report.max_iterations;
    memcpy(r->blocks_by_status, job->report.blocks_by_status,
           sizeof(r->blocks_by_status));
    st->ready = job->slot;
    st->last_step_done = job->step;
    st->last_refresh_ms = job->report.ms_total;
  } else {
    st->failures++;
    dashd__log(DASHD_LOG_WARN, "stack %llu: refresh of step %llu failed: %s",
               (unsigned long long)st->id, (unsigned long long)job->step,
               job->message);
  }

  if (st->owner == NULL) {
    /* The owner let go while this computed; a copy still running frees
     * it when it ends. A failed GPU fails the daemon all the same. */
    struct dashd_server *srv = st->srv;
    char why[300] = "";
    if (job->rc == DASH_E_DEVICE_LOST)
      snprintf(why, sizeof(why), "the GPU failed (%s)", job->message);
    if (st->copying < 0) {
      stack_remove_from_server(srv, st);
      stack_free(st);
    }
    if (why[0] != '\0')
      dashd__server_fail(srv, kDashdExitDeviceLost, why);
    return;
  }

  /* Tell the owner. A failed computation is reported with its status;
   * the slot it wrote into is not handed over. */
  if (job->rc < 0)
    push_failed(st, job->step, job->rc, job->message);
  else
    push_done(st, r, job->slot);

  if (job->rc == DASH_E_DEVICE_LOST) {
    /* No later computation in this process can use the GPU: the clients
     * are told, and a restarted daemon serves them again. This stack is
     * freed with its owner's session, so it is not touched after. */
    char why[300];
    snprintf(why, sizeof(why), "the GPU failed (%s)", job->message);
    dashd__server_fail(st->srv, kDashdExitDeviceLost, why);
    return;
  }
  try_start(st);
}
