/* A once-per-process warm-up of OpenBLAS's GEMM buffers.
 *
 * With OpenBLAS 0.3.21 (Debian 12), a single-threaded sgemm of B ≤ 320
 * runs 3.5× slower (12 against 42 GFLOP/s at B = 256 on the machines
 * bench/RESULTS.md was measured on) for as long as the pool buffer it gets
 * has only ever served such small products; one product of B ≥ 384 on that
 * buffer ends the slowdown for good. The likely cause is the kernels'
 * prefetches running into buffer pages that small products never touched.
 * Buffers are handed to concurrent callers one each, so the warm-up runs
 * one large product on each of `threads` threads at the same time. */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

#include "cpu.h"

enum { kWarmSize = 512 };

/* A start gate: threads wait until every one of them exists, so that all
 * are inside OpenBLAS at once and each holds a buffer of its own. */
struct gate {
  pthread_mutex_t lock;
  pthread_cond_t open;
  int is_open;
};

struct warm_arg {
  struct gate *gate;
  float *m;
};

static void *warm_one(void *p) {
  struct warm_arg *a = p;
  const int n = kWarmSize;
  pthread_mutex_lock(&a->gate->lock);
  while (!a->gate->is_open)
    pthread_cond_wait(&a->gate->open, &a->gate->lock);
  pthread_mutex_unlock(&a->gate->lock);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a->m, n,
              a->m + (size_t)n * n, n, 0.0f, a->m + 2 * (size_t)n * n, n);
  return NULL;
}

void dash__cpu_blas_warmup(int threads) {
  static int warmed; /* guarded by the caller's BLAS lock */
  if (threads <= warmed)
    return;
  const size_t nn = (size_t)kWarmSize * kWarmSize;
  float *m = calloc(3 * nn * (size_t)threads, sizeof(float));
  struct warm_arg *args = calloc((size_t)threads, sizeof(*args));
  pthread_t *tids = calloc((size_t)threads, sizeof(*tids));
  struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  int started;
  /* A warm-up that cannot run costs speed, never correctness. */
  if (m == NULL || args == NULL || tids == NULL)
    goto out;
  for (int i = 0; i < threads; i++) {
    args[i].gate = &gate;
    args[i].m = m + 3 * nn * (size_t)i;
  }
  for (started = 0; started < threads - 1; started++)
    if (pthread_create(&tids[started], NULL, warm_one, &args[started]) != 0)
      break;
  pthread_mutex_lock(&gate.lock);
  gate.is_open = 1;
  pthread_cond_broadcast(&gate.open);
  pthread_mutex_unlock(&gate.lock);
  warm_one(&args[threads - 1]);
  for (int i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  if (started == threads - 1)
    warmed = threads;
out:
  free(m);
  free(args);
  free(tids);
}
