/* The CPU backend: workspaces per plan, a pool of threads across blocks,
 * and the per-block driver (scaling, method, status, EVD fallback). */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../internal.h"
#include "cpu.h"

enum { kBuffers = 5 };

/* Everything one thread needs to compute one block, allocated once. */
struct worker_ws {
  float *buf[kBuffers]; /* b² each */
  float *v, *w;         /* power-iteration vectors, b·k each */
  double *coef;         /* Chebyshev coefficients */
  struct dash__evd_work evd;
};

struct cpu_state {
  int workers;      /* threads working across blocks */
  int blas_threads; /* OpenBLAS threads inside each block */
  struct worker_ws *ws;
  unsigned char *use_f64; /* per block: EVD needed fp64 last time */
};

/* OpenBLAS's thread count is process-wide, so executions that set it must
 * not overlap; they would oversubscribe the cores anyway. */
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;

static void *alloc_array(size_t count, size_t size) {
  if (count == 0)
    count = 1;
  if (count > SIZE_MAX / size)
    return NULL;
  size_t bytes = count * size;
  /* 64-byte alignment suits AVX-512 loads and keeps threads' buffers off
   * each other's cache lines. */
  bytes = (bytes + 63) & ~(size_t)63;
  return aligned_alloc(64, bytes);
}

static void ws_free(struct worker_ws *w) {
  for (int i = 0; i < kBuffers; i++)
    free(w->buf[i]);
  free(w->v);
  free(w->w);
  free(w->coef);
  dash__cpu_evd_work_free(&w->evd);
}

static int ws_init(struct worker_ws *w, const struct dash_roots_plan *plan) {
  size_t b = plan->b, nn = b * b;
  size_t k = plan->opts.scaling == DASH_SCALING_POWER_ITER_MULTI
                 ? (size_t)plan->opts.power_vectors
                 : 1;
  int ok = 1;
  for (int i = 0; i < kBuffers; i++)
    ok &= (w->buf[i] = alloc_array(nn, sizeof(float))) != NULL;
  ok &= (w->v = alloc_array(b * k, sizeof(float))) != NULL;
  ok &= (w->w = alloc_array(b * k, sizeof(float))) != NULL;
  ok &= (w->coef = alloc_array((size_t)plan->opts.cheb_degree + 1,
                               sizeof(double))) != NULL;
  if (!ok)
    return dash__fail(DASH_E_NOMEM, "CPU workspace");
  return dash__cpu_evd_work_init(&w->evd, (int)b);
}

static int online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int dash__cpu_plan_init(struct dash_roots_plan *plan) {
  struct cpu_state *st = NULL;
  int rc = 0;

  /* EVD is the fastest CPU method at every shape measured in
   * bench/RESULTS.md, and the most accurate. */
  if (plan->opts.method == DASH_METHOD_AUTO)
    plan->opts.method = DASH_METHOD_EVD;

  int threads = plan->opts.threads > 0 ? plan->opts.threads : online_cores();
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return dash__fail(DASH_E_NOMEM, "CPU backend state");
  /* Blocks are independent, so with at least one block per core a thread
   * per core across blocks, each with a single-threaded BLAS, keeps every
   * core busy without the synchronisation of a threaded GEMM. With fewer
   * blocks than cores, the cores go inside each block instead. */
  if (plan->n >= (size_t)threads) {
    st->workers = threads;
    st->blas_threads = 1;
  } else {
    st->workers = 1;
    st->blas_threads = threads;
  }
  st->use_f64 = calloc(plan->n, 1);
  st->ws = calloc((size_t)st->workers, sizeof(*st->ws));
  if (st->use_f64 == NULL || st->ws == NULL) {
    rc = dash__fail(DASH_E_NOMEM, "CPU backend state for %zu blocks", plan->n);
    goto out;
  }
  for (int i = 0; i < st->workers; i++) {
    if ((rc = ws_init(&st->ws[i], plan)) < 0) {
      if (rc == DASH_E_NOMEM)
        rc = dash__fail(DASH_E_NOMEM,
                        "CPU workspace for %d threads of %zux%zu blocks",
                        st->workers, plan->b, plan->b);
      goto out;
    }
  }
  plan->backend = st;
  st = NULL;
out:
  if (st != NULL) {
    plan->backend = st;
    dash__cpu_plan_free(plan);
  }
  return rc;
}

void dash__cpu_plan_free(struct dash_roots_plan *plan) {
  struct cpu_state *st = plan->backend;
  if (st == NULL)
    return;
  if (st->ws != NULL)
    for (int i = 0; i < st->workers; i++)
      ws_free(&st->ws[i]);
  free(st->ws);
  free(st->use_f64);
  free(st);
  plan->backend = NULL;
}

/* The EVD path of a block, as the method or as the fallback. */
static int evd_block(const struct dash_roots_plan *plan, struct worker_ws *w,
                     unsigned char *use_f64, float *out, const float *in,
                     float *lambda_max) {
  return dash__cpu_evd_root(in, out, (int)plan->b, plan->opts.root,
                            plan->opts.eps, &w->evd, use_f64, lambda_max);
}

/* Runs the iterative method on one finite block. Returns the buffer that
 * holds the result and fills the run summary. */
static float *iterate_block(const struct dash_roots_plan *plan,
                            struct worker_ws *w, size_t index, const float *in,
                            dash_block_info *info, struct dash__newton_run *run,
                            int *converged) {
  const dash_roots_options *o = &plan->opts;
  const int b = (int)plan->b, p = o->root;
  const size_t nn = plan->b * plan->b;
  float *m = w->buf[0];

  memcpy(m, in, nn * sizeof(float));
  dash__cpu_add_identity(m, b, (float)o->eps);
  double s;
  if (o->scaling == DASH_SCALING_FROBENIUS) {
    s = dash__cpu_frobenius(m, b);
    info->lambda_max = (float)s;
  } else {
    int k = o->scaling == DASH_SCALING_POWER_ITER_MULTI ? o->power_vectors : 1;
    /* A seed per block, so blocks do not share start vectors and a block's
     * estimate does not depend on which thread computed it. */
    uint64_t seed = o->seed ^ (0x9e3779b97f4a7c15ull * (index + 1));
    float lam = dash__cpu_power_iter(m, b, o->power_steps, k, seed, w->v, w->w);
    info->lambda_max = lam;
    s = o->power_scale * lam;
  }
  *converged = 1;
  memset(run, 0, sizeof(*run));
  if (s == 0.0) {
    /* Only a zero block with ε = 0: its pseudo-inverse root is zero, as
     * EVD gives. */
    dash__cpu_set_identity(m, b, 0.0f);
    return m;
  }
  if (!isfinite(s)) {
    run->r_last = INFINITY;
    return m;
  }

  float **buf = w->buf;
  float *x = NULL;
  switch (o->method) {
    case DASH_METHOD_NEWTON_DB: {
      float *y = buf[0], *z = buf[1], *e = buf[2], *t = buf[3];
      dash__cpu_scale(y, nn, (float)(1.0 / s));
      dash__cpu_newton_db(b, &y, &z, &e, &t, o->max_steps, o->tol, run);
      *converged = o->tol == 0.0 || run->r_last < o->tol;
      if (p == 4 && isfinite(run->r_last) && run->r_last <= run->r_first) {
        /* Y ≈ (M/s)^(1/2) has its eigenvalues in (0, 1] too, so a second
         * run gives Z ≈ (M/s)^(-1/4). */
        struct dash__newton_run second;
        dash__cpu_newton_db(b, &y, &z, &e, &t, o->max_steps, o->tol, &second);
        *converged &= o->tol == 0.0 || second.r_last < o->tol;
        run->steps += second.steps;
        run->r_first = second.r_first;
        run->r_last = second.r_last;
      }
      dash__cpu_scale(z, nn, (float)pow(s, -1.0 / p));
      x = z;
      break;
    }
    case DASH_METHOD_COUPLED_NEWTON: {
      float *cm = buf[0], *cx = buf[1], *t = buf[2], *tp = buf[3], *u = buf[4];
      double z0 = (p + 1.0) / (2.0 * s);
      dash__cpu_coupled_newton(b, p, z0, &cx, &cm, &t, &tp, &u, o->max_steps,
                               o->tol, run);
      *converged = o->tol == 0.0 || run->r_last < o->tol;
      x = cx;
      break;
    }
    case DASH_METHOD_CHEBYSHEV: {
      float *a = buf[0], *cx = buf[1], *q = buf[2];
      memcpy(a, in, nn * sizeof(float));
      dash__cpu_chebyshev(b, p, s, o->eps, o->cheb_degree, &a, &cx, &q,
                          w->coef);
      x = cx;
      break;
    }
    default:
      x = m;
      break;
  }
  return x;
}

static void run_block(const struct dash_roots_plan *plan, struct worker_ws *w,
                      unsigned char *use_f64, size_t index, float *out,
                      const float *in, dash_block_info *info) {
  const dash_roots_options *o = &plan->opts;
  const size_t nn = plan->b * plan->b;

  memset(info, 0, sizeof(*info));
  if (!dash__all_finite(in, nn)) {
    info->status = DASH_BLOCK_NONFINITE_INPUT;
    return;
  }
  if (o->method == DASH_METHOD_EVD) {
    if (evd_block(plan, w, use_f64, out, in, &info->lambda_max) < 0)
      info->status = DASH_BLOCK_NOT_CONVERGED;
    return;
  }

  struct dash__newton_run run;
  int converged;
  float *x = iterate_block(plan, w, index, in, info, &run, &converged);
  info->iterations = run.steps;
  info->residual = run.r_last;

  int finite = isfinite(run.r_last) && dash__all_finite(x, nn);
  int diverged = !finite || run.r_last > run.r_first;
  if ((diverged && o->fallback >= DASH_FALLBACK_DIVERGED) ||
      (!converged && o->fallback == DASH_FALLBACK_UNCONVERGED)) {
    float lam;
    if (evd_block(plan, w, use_f64, out, in, &lam) == 0) {
      info->status = DASH_BLOCK_FALLBACK_EVD;
      return;
    }
  }
  memcpy(out, x, nn * sizeof(float));
  info->status =
      (converged && !diverged) ? DASH_BLOCK_OK : DASH_BLOCK_NOT_CONVERGED;
}

struct job {
  const struct dash_roots_plan *plan;
  float *out;
  const float *in;
  dash_block_info *info;
  atomic_size_t next;
};

struct worker_arg {
  struct job *job;
  struct worker_ws *ws;
};

static void *worker_main(void *p) {
  struct worker_arg *a = p;
  struct job *j = a->job;
  const struct dash_roots_plan *plan = j->plan;
  struct cpu_state *st = plan->backend;
  const size_t nn = plan->b * plan->b;
  for (;;) {
    size_t i = atomic_fetch_add(&j->next, 1);
    if (i >= plan->n)
      break;
    run_block(plan, a->ws, &st->use_f64[i], i, j->out + i * nn, j->in + i * nn,
              &j->info[i]);
  }
  return NULL;
}

int dash__cpu_execute(struct dash_roots_plan *plan, float *out, const float *in,
                      dash_block_info *info) {
  struct cpu_state *st = plan->backend;
  struct job job = {plan, out, in, info, 0};
  struct worker_arg args[st->workers];
  pthread_t tids[st->workers];
  int started = 0;

  pthread_mutex_lock(&blas_lock);
  int saved_threads = openblas_get_num_threads();
  openblas_set_num_threads(st->blas_threads);
  if (st->blas_threads == 1)
    dash__cpu_blas_warmup(st->workers);
  for (int i = 0; i < st->workers; i++) {
    args[i].job = &job;
    args[i].ws = &st->ws[i];
  }
  /* The calling thread is worker 0; a thread that cannot be started only
   * means fewer hands, since the others take every remaining block. */
  for (int i = 1; i < st->workers; i++) {
    if (pthread_create(&tids[i], NULL, worker_main, &args[i]) != 0)
      break;
    started = i;
  }
  worker_main(&args[0]);
  for (int i = 1; i <= started; i++)
    pthread_join(tids[i], NULL);
  openblas_set_num_threads(saved_threads);
  pthread_mutex_unlock(&blas_lock);
  return 0;
}
