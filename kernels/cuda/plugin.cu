/* The plugin's entry point and its link to the host: libdash_cuda.so is
 * loaded by kernels/cuda_loader.c, which hands over how failures reach the
 * caller's dash_last_error(), and gets the backend's entry points back. */
#include <stdarg.h>
#include <stdio.h>

#include "../../tools/bench_cuda.h"
#include "cuda.h"

/* Set once, by the loader's one call of the entry point, before anything
 * else in the plugin runs. */
static const struct dash__cuda_host *g_host;

/* The last failure inside the plugin, for messages that wrap it. */
static __thread char t_last[512];

int dash__fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_last, sizeof(t_last), fmt, ap);
  va_end(ap);
  return g_host != NULL ? g_host->fail(status, t_last) : status;
}

void dash__clear_error(void) {
  t_last[0] = '\0';
}

const char *dash__cuda_last_message(void) {
  return t_last;
}

static const struct dash__cuda_tools kTools = {
    dash__bench_cuda_error, dash__bench_cuda_device,  dash__bench_cuda_alloc,
    dash__bench_cuda_free,  dash__bench_cuda_upload,  dash__bench_cuda_download,
    dash__bench_cuda_sync,  dash__bench_cuda_roofline};

static const struct dash__cuda_ipc kIpc = {dash__cuda_ipc_export_mem,
                                           dash__cuda_ipc_device_uuid,
                                           dash__cuda_ipc_event_create,
                                           dash__cuda_ipc_event_open,
                                           dash__cuda_ipc_event_destroy,
                                           dash__cuda_ipc_event_record,
                                           dash__cuda_ipc_stream_wait,
                                           dash__cuda_ipc_mem_open,
                                           dash__cuda_ipc_mem_close,
                                           dash__cuda_ipc_stream_create,
                                           dash__cuda_ipc_stream_destroy,
                                           dash__cuda_ipc_stream_sync,
                                           dash__cuda_ipc_alloc,
                                           dash__cuda_ipc_free,
                                           dash__cuda_ipc_copy,
                                           dash__cuda_ipc_host_register,
                                           dash__cuda_ipc_host_unregister,
                                           dash__cuda_ipc_copy_on,
                                           dash__cuda_ipc_event_sync,
                                           dash__cuda_ipc_mem_check,
                                           dash__cuda_ipc_vmm_owns,
                                           dash__cuda_ipc_vmm_export,
                                           dash__cuda_ipc_vmm_open,
                                           dash__cuda_ipc_vmm_close,
                                           dash__cuda_ipc_vmm_alloc,
                                           dash__cuda_ipc_vmm_free,
                                           dash__cuda_ipc_event_query,
                                           dash__cuda_ipc_current_device};

static const struct dash__cuda_plugin kPlugin = {DASH_CUDA_PLUGIN_ABI,
                                                 sizeof(struct dash_roots_plan),
                                                 sizeof(dash_roots_options),
                                                 dash__cuda_device_count,
                                                 dash__cuda_describe,
                                                 dash__cuda_select,
                                                 dash__cuda_plan_init,
                                                 dash__cuda_execute,
                                                 dash__cuda_plan_free,
                                                 &kTools,
                                                 &kIpc};

extern "C" __attribute__((visibility("default")))
const struct dash__cuda_plugin *
dash_cuda_plugin_entry(const struct dash__cuda_host *host) {
  /* A host of another ABI or layout gets nothing: it would hand the
   * plugin plans it cannot read. */
  if (host == NULL || host->abi != DASH_CUDA_PLUGIN_ABI ||
      host->plan_size != sizeof(struct dash_roots_plan) ||
      host->options_size != sizeof(dash_roots_options))
    return NULL;
  g_host = host;
  return &kPlugin;
}
