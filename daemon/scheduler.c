/* The worker: one thread that runs the computations one after another,
 * each on every core the plan was given, off the loop thread. Jobs come
 * in through a queue; finished jobs go back through another and a
 * uv_async_t wakes the loop. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/internal.h"
#include "dashd.h"
#include "log.h"

struct dashd_sched {
  struct dashd_server *srv;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  struct dashd_job *todo_head, *todo_tail; /* guarded by lock */
  struct dashd_job *done;                  /* guarded by lock */
  int running;                             /* a job is executing */
  int quit;
  uv_async_t async;
  /* DASHD_TEST_FAULT=device-lost: the first computation reports a failed
   * GPU, for the tests of what the daemon does then (no GPU needed). */
  int fault_device_lost;
  /* The worker's stream for CUDA stacks, made on its first one. */
  void *stream;
};

/* A block whose input was not finite keeps its previous result: the
 * library left the slot's block untouched, so it is copied from the slot
 * that holds the newest earlier result. */
static void keep_previous_blocks(struct dashd_job *job) {
  struct dashd_stack *st = job->stack;
  if (job->prev < 0 || job->prev == job->slot)
    return;
  size_t bb = st->b * st->b;
  float *dst = st->results + (size_t)job->slot * st->elems;
  const float *src = st->results + (size_t)job->prev * st->elems;
  for (size_t i = 0; i < st->n; i++)
    if (st->infos[i].status == DASH_BLOCK_NONFINITE_INPUT)
      memcpy(dst + i * bb, src + i * bb, bb * sizeof(float));
}

static void run_job(struct dashd_sched *s, struct dashd_job *job) {
  struct dashd_stack *st = job->stack;
  if (s->fault_device_lost) {
    s->fault_device_lost = 0;
    job->rc = DASH_E_DEVICE_LOST;
    snprintf(job->message, sizeof(job->message),
             "injected by DASHD_TEST_FAULT=device-lost");
    return;
  }
  job->message[0] = '\0';
  if (st->cuda != NULL) {
    const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
    job->rc = 0;
    if (s->stream == NULL)
      job->rc =
          p->ipc->stream_create(s->srv->cfg.stream_priority != 0, &s->stream);
    if (job->rc == 0)
      job->rc = dashd__cuda_run(job, s->stream);
  } else {
    float *out = st->results + (size_t)job->slot * st->elems;
    job->rc = dash_roots_execute(st->plan, out, st->snaps[job->snap], st->infos,
                                 &job->report);
    if (job->rc == 0)
      keep_previous_blocks(job);
  }
  if (job->rc < 0)
    snprintf(job->message, sizeof(job->message), "%s", dash_last_error());
}

static void *worker_main(void *arg) {
  struct dashd_sched *s = arg;
  /* The GPU of --device is this thread's too: a plan's execution then
   * finds its device current and never switches to another (switching
   * back would make a context on a GPU dashd was told not to use). The
   * loop thread checked the name already. */
  if (s->srv->cfg.device[0] != '\0' &&
      dash_roots_cuda_select(s->srv->cfg.device) < 0)
    dashd__log(DASHD_LOG_WARN, "worker: device %s: %s", s->srv->cfg.device,
               dash_last_error());
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->quit && s->todo_head == NULL)
      pthread_cond_wait(&s->wake, &s->lock);
    if (s->quit)
      break;
    struct dashd_job *job = s->todo_head;
    s->todo_head = job->next;
    if (s->todo_head == NULL)
      s->todo_tail = NULL;
    s->running = 1;
    pthread_mutex_unlock(&s->lock);

    run_job(s, job);

    pthread_mutex_lock(&s->lock);
    s->running = 0;
    job->next = s->done;
    s->done = job;
    pthread_mutex_unlock(&s->lock);
    uv_async_send(&s->async);
    pthread_mutex_lock(&s->lock);
  }
  pthread_mutex_unlock(&s->lock);
  if (s->stream != NULL)
    dash__cuda_load_plugin(NULL)->ipc->stream_destroy(s->stream);
  return NULL;
}

/* On the loop thread: hands every finished job back to its stack, oldest
 * first. */
static void on_done(uv_async_t *async) {
  struct dashd_sched *s = async->data;
  pthread_mutex_lock(&s->lock);
  struct dashd_job *list = s->done;
  s->done = NULL;
  pthread_mutex_unlock(&s->lock);
  struct dashd_job *rev = NULL;
  while (list != NULL) {
    struct dashd_job *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  while (rev != NULL) {
    struct dashd_job *next = rev->next;
    dashd__stack_job_done(rev->stack);
    rev = next;
  }
}

int dashd__sched_create(struct dashd_server *srv, struct dashd_sched **out) {
  struct dashd_sched *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return DASH_E_NOMEM;
  s->srv = srv;
  const char *fault = secure_getenv("DASHD_TEST_FAULT");
  s->fault_device_lost = fault != NULL && strcmp(fault, "device-lost") == 0;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->wake, NULL);
  s->async.data = s;
  if (uv_async_init(srv->loop, &s->async, on_done) != 0) {
    free(s);
    return DASH_E_INTERNAL;
  }
  if (pthread_create(&s->thread, NULL, worker_main, s) != 0) {
    uv_close((uv_handle_t *)&s->async, NULL);
    /* The handle's memory must outlive its close; this is start-up, so
     * the loop runs it before the caller gives up. */
    uv_run(srv->loop, UV_RUN_NOWAIT);
    free(s);
    return DASH_E_INTERNAL;
  }
  *out = s;
  return 0;
}

void dashd__sched_submit(struct dashd_sched *s, struct dashd_job *job) {
  job->next = NULL;
  pthread_mutex_lock(&s->lock);
  if (s->todo_tail != NULL)
    s->todo_tail->next = job;
  else
    s->todo_head = job;
  s->todo_tail = job;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
}

int dashd__sched_busy(const struct dashd_sched *s) {
  struct dashd_sched *m = (struct dashd_sched *)s;
  pthread_mutex_lock(&m->lock);
  int busy = m->running || m->todo_head != NULL || m->done != NULL;
  pthread_mutex_unlock(&m->lock);
  return busy;
}

int dashd__sched_cancel_waiting(struct dashd_sched *s) {
  pthread_mutex_lock(&s->lock);
  int n = 0;
  /* Called on the loop thread, which owns the stacks: a dropped job
   * leaves its stack idle, so the stack can be freed. */
  for (struct dashd_job *j = s->todo_head; j != NULL; j = j->next) {
    j->stack->computing = -1;
    n++;
  }
  s->todo_head = s->todo_tail = NULL;
  pthread_mutex_unlock(&s->lock);
  return n;
}

int dashd__sched_cancel(struct dashd_sched *s, struct dashd_job *job) {
  int found = 0;
  if (s == NULL)
    return 0;
  pthread_mutex_lock(&s->lock);
  for (struct dashd_job **p = &s->todo_head, *prev = NULL; *p != NULL;
       prev = *p, p = &(*p)->next) {
    if (*p == job) {
      *p = job->next;
      if (s->todo_tail == job)
        s->todo_tail = prev;
      job->next = NULL;
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&s->lock);
  return found;
}

static void free_on_close(uv_handle_t *h) {
  free(h->data);
}

void dashd__sched_destroy(struct dashd_sched *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->lock);
  s->quit = 1;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  uv_close((uv_handle_t *)&s->async, free_on_close);
}
