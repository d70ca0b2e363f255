/* bench_cuda.h for dash-bench: each call goes to the CUDA plugin, which
 * carries the CUDA runtime and cuBLAS work (bench_cuda.c), so dash-bench
 * itself links no CUDA library. Without the plugin every call fails with
 * DASH_E_NO_DEVICE and says why. */
#include <stdio.h>

#include "../kernels/internal.h"
#include "bench_cuda.h"

static char err[512];

/* The plugin's tools, or NULL with `err` saying why not. */
static const struct dash__cuda_tools *tools(void) {
  const char *why = "";
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(&why);
  if (p == NULL) {
    snprintf(err, sizeof(err), "no CUDA backend: %s", why);
    return NULL;
  }
  return p->tools;
}

const char *dash__bench_cuda_error(void) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL && err[0] == '\0' ? p->tools->error() : err;
}

int dash__bench_cuda_device(char *name, size_t name_len, char *desc,
                            size_t desc_len) {
  const struct dash__cuda_tools *t = tools();
  return t ? t->device(name, name_len, desc, desc_len) : DASH_E_NO_DEVICE;
}

int dash__bench_cuda_alloc(void **dev, size_t bytes) {
  const struct dash__cuda_tools *t = tools();
  *dev = NULL;
  return t ? t->alloc(dev, bytes) : DASH_E_NO_DEVICE;
}

void dash__bench_cuda_free(void *dev) {
  const struct dash__cuda_tools *t = tools();
  if (t != NULL)
    t->free(dev);
}

int dash__bench_cuda_upload(void *dev, const void *host, size_t bytes) {
  const struct dash__cuda_tools *t = tools();
  return t ? t->upload(dev, host, bytes) : DASH_E_NO_DEVICE;
}

int dash__bench_cuda_download(void *host, const void *dev, size_t bytes) {
  const struct dash__cuda_tools *t = tools();
  return t ? t->download(host, dev, bytes) : DASH_E_NO_DEVICE;
}

int dash__bench_cuda_sync(void) {
  const struct dash__cuda_tools *t = tools();
  return t ? t->sync() : DASH_E_NO_DEVICE;
}

int dash__bench_cuda_roofline(size_t n, size_t b, dash_precision precision,
                              int rounds, double min_ms, double *gflops) {
  const struct dash__cuda_tools *t = tools();
  *gflops = 0.0;
  return t ? t->roofline(n, b, precision, rounds, min_ms, gflops)
           : DASH_E_NO_DEVICE;
}
