/* Finds and loads the CUDA plugin (libdash_cuda.so) on first use, and
 * forwards the CUDA backend's entry points to it. Without the plugin, the
 * CUDA libraries or a device, the backend simply has no device, and
 * everything else works. */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifndef DASH_CUDA_PLUGIN_DIR
#define DASH_CUDA_PLUGIN_DIR "/usr/lib/dash"
#endif
#ifndef DASH_CUDA_PLUGIN_RELDIR
#define DASH_CUDA_PLUGIN_RELDIR "lib/dash"
#endif
#define PLUGIN_NAME "libdash_cuda.so"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const struct dash__cuda_plugin *g_plugin;
/* Why there is no plugin: what each place tried said. */
static char g_why[1024];

static void note(const char *fmt, const char *arg) {
  size_t used = strlen(g_why);
  if (used + 3 >= sizeof(g_why))
    return;
  if (used > 0) {
    memcpy(g_why + used, "; ", 3);
    used += 2;
  }
  snprintf(g_why + used, sizeof(g_why) - used, fmt, arg);
}

static int host_fail(int status, const char *message) {
  return dash__fail(status, "%s", message);
}

static const struct dash__cuda_host g_host = {
    DASH_CUDA_PLUGIN_ABI,       sizeof(struct dash_roots_plan),
    sizeof(dash_roots_options), host_fail,
    dash__cpu_plan_init,        dash__cpu_execute,
    dash__cpu_plan_free};

/* Asks the opened library for its entry points; keeps it when it is a
 * plugin of this build. The library then stays loaded for the life of
 * the process: the CUDA libraries it pulls in must not go while a
 * context lives. */
static int try_handle(void *h, const char *what) {
  dash__cuda_plugin_entry entry;
  *(void **)&entry = dlsym(h, DASH_CUDA_PLUGIN_SYMBOL);
  const struct dash__cuda_plugin *p = entry ? entry(&g_host) : NULL;
  if (p == NULL || p->abi != DASH_CUDA_PLUGIN_ABI ||
      p->plan_size != sizeof(struct dash_roots_plan) ||
      p->options_size != sizeof(dash_roots_options)) {
    note("%s is not a CUDA plugin of this build of dashd", what);
    dlclose(h);
    return 0;
  }
  g_plugin = p;
  return 1;
}

/* A library name or path, opened as dlopen() does. */
static int try_open(const char *name) {
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    note("%s", e ? e : name);
    return 0;
  }
  return try_handle(h, name);
}

/* The plugin at a path, when there is a file there. */
static int try_plugin(const char *path) {
  return access(path, F_OK) == 0 && try_open(path);
}

/* Tries <dir>/<rel>/libdash_cuda.so for the directory of `file`. */
static int try_beside(const char *file, const char *rel) {
  char path[PATH_MAX];
  const char *slash = strrchr(file, '/');
  if (slash == NULL)
    return 0;
  int len = (int)(slash - file);
  if (snprintf(path, sizeof(path), "%.*s/%s/" PLUGIN_NAME, len, file, rel) >=
      (int)sizeof(path))
    return 0;
  return try_plugin(path);
}

static void load(void) {
  const char *env = secure_getenv("DASH_CUDA_PLUGIN");
  if (env != NULL && env[0] != '\0') {
    /* An explicit choice, also of none ("none", or a path that is not
     * there), is the only place looked at; a bare name is looked up the
     * way dlopen() looks up libraries. */
    int ok = strcmp(env, "none") != 0 &&
             (strchr(env, '/') != NULL ? try_plugin(env) : try_open(env));
    if (!ok)
      note("DASH_CUDA_PLUGIN=%s gives no plugin", env);
    return;
  }
  /* Beside the library holding this code (libdash.so in <libdir>: its
   * dash/ directory); beside the program (<prefix>/bin: the install's
   * <prefix>/<libdir>/dash, or lib/dash as in the build tree); then where
   * `cmake --install` put it. A relative name (a program started by a
   * relative path) says nothing reliable and is skipped. */
  Dl_info info;
  if (dladdr((void *)load, &info) != 0 && info.dli_fname != NULL &&
      info.dli_fname[0] == '/' && try_beside(info.dli_fname, "dash"))
    return;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    if (try_beside(exe, "../" DASH_CUDA_PLUGIN_RELDIR) ||
        try_beside(exe, "../lib/dash"))
      return;
  }
  if (try_plugin(DASH_CUDA_PLUGIN_DIR "/" PLUGIN_NAME))
    return;
  note("%s", "no " PLUGIN_NAME
             " beside the library, the program or in " DASH_CUDA_PLUGIN_DIR);
}

const struct dash__cuda_plugin *dash__cuda_load_plugin(const char **why) {
  pthread_once(&g_once, load);
  if (g_plugin == NULL && why != NULL)
    *why = g_why;
  return g_plugin;
}

static int unavailable(void) {
  const char *why = "";
  dash__cuda_load_plugin(&why);
  return dash__fail(DASH_E_NO_DEVICE, "no CUDA backend: %s", why);
}

int dash__cuda_device_count(void) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL ? p->device_count() : 0;
}

int dash__cuda_device_of_uuid(const char *uuid) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  char have[64];
  if (p == NULL || uuid == NULL)
    return -1;
  int n = p->device_count();
  for (int i = 0; i < n; i++)
    if (p->ipc->device_uuid(i, have, sizeof(have)) == 0 &&
        strcmp(have, uuid) == 0)
      return i;
  return -1;
}

int dash__cuda_describe(char *buf, size_t len) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL ? p->describe(buf, len) : unavailable();
}

int dash__cuda_select(const char *device) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL ? p->select(device) : unavailable();
}

int dash__cuda_plan_init(struct dash_roots_plan *plan) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL ? p->plan_init(plan) : unavailable();
}

int dash__cuda_execute(struct dash_roots_plan *plan, float *out,
                       const float *in, dash_block_info *info, int on_device,
                       void *stream) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  return p != NULL ? p->execute(plan, out, in, info, on_device, stream)
                   : unavailable();
}

void dash__cuda_plan_free(struct dash_roots_plan *plan) {
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(NULL);
  if (p != NULL)
    p->plan_free(plan);
}
