/* The simulated GPU (tests/cuda_sim.c, libdash_cuda_sim.so) that the
 * CUDA_IPC tests of dashd and libdash run on where there is no GPU: it
 * loads as the CUDA plugin, computes exactly what the CPU backend computes,
 * shares its memory with another process through IPC handles, and refuses
 * what the CUDA runtime refuses (or, for a second open of one handle, what
 * a daemon must never do). ctest runs it with
 * DASH_CUDA_PLUGIN=$<TARGET_FILE:dash_cuda_sim>.
 *
 * Memory is shared with a forked child, the exporter: it allocates, fills
 * and exports, sends the handle up a pipe (or, for VMM memory, its fds
 * over a Unix socket), and waits for commands; the test (the importer)
 * opens and checks. */
#define _GNU_SOURCE

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kernels/internal.h"

#define TEST_TIMEOUT_S 30
#define SIM_DESCRIPTION \
  "dash simulated GPU (GPU-5151a7ed-0000-4000-8000-000000000000)"
#define SIM_UUID "GPU-5151a7ed-0000-4000-8000-000000000000"

/* The loaded simulation, with both of its tables. */
static const struct dash__cuda_plugin *sim(void) {
  const char *why = "";
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(&why);
  ck_assert_msg(p != NULL, "the simulation did not load: %s", why);
  ck_assert_ptr_nonnull(p->tools);
  ck_assert_ptr_nonnull(p->ipc);
  return p;
}

static const struct dash__cuda_ipc *ipc(void) {
  return sim()->ipc;
}

static void *dev_alloc(size_t bytes) {
  void *p = NULL;
  ck_assert_int_eq(ipc()->alloc(&p, bytes), 0);
  ck_assert_ptr_nonnull(p);
  return p;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* 0, or -1 at an error or end of file before len bytes. */
static int read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* A child process holding one allocation of kFloats floats, 1, 2, 3, …,
 * of which it exported the piece from float kAt on. */
enum { kFloats = 1024, kAt = 64 };

struct exporter {
  pid_t pid;
  int up, down; /* the child's replies; commands to it */
  unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES];
  uint64_t offset;
};

/* The child's side: exits 0 when its memory still holds what it wrote,
 * 10 when the importer changed float kAt to −1, another code when
 * something failed. Commands: 'r' frees the allocation and makes another
 * of the same size (likely at the same fd), replying 'k'; end of file
 * ends the child. */
static int exporter_main(int up, int down) {
  const struct dash__cuda_ipc *x = dash__cuda_load_plugin(NULL)->ipc;
  float *v = NULL;
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  uint64_t off = 0;
  char cmd;
  if (x->alloc((void **)&v, kFloats * sizeof(float)) != 0)
    return 1;
  for (int i = 0; i < kFloats; i++)
    v[i] = (float)(i + 1);
  if (x->export_mem(0, v + kAt, (kFloats - kAt) * sizeof(float), h, &off) !=
          0 ||
      write_all(up, h, sizeof(h)) < 0 || write_all(up, &off, sizeof(off)) < 0)
    return 2;
  while (read_all(down, &cmd, 1) == 0) {
    if (cmd != 'r')
      return 3;
    x->free(v);
    if (x->alloc((void **)&v, kFloats * sizeof(float)) != 0 ||
        write_all(up, "k", 1) < 0)
      return 4;
    v[kAt] = (float)(kAt + 1);
  }
  int status = v[kAt] == -1.0f ? 10 : v[kAt] == (float)(kAt + 1) ? 0 : 5;
  x->free(v);
  return status;
}

static void start_exporter(struct exporter *ex) {
  int up[2], down[2];
  sim(); /* loaded here, so the child has it */
  ck_assert_int_eq(pipe(up), 0);
  ck_assert_int_eq(pipe(down), 0);
  ex->pid = fork();
  ck_assert_int_ge(ex->pid, 0);
  if (ex->pid == 0) {
    close(up[0]);
    close(down[1]);
    _exit(exporter_main(up[1], down[0]));
  }
  close(up[1]);
  close(down[0]);
  ex->up = up[0];
  ex->down = down[1];
  ck_assert_int_eq(read_all(ex->up, ex->handle, sizeof(ex->handle)), 0);
  ck_assert_int_eq(read_all(ex->up, &ex->offset, sizeof(ex->offset)), 0);
}

/* Frees the child's allocation and makes another in its place. */
static void exporter_reallocate(struct exporter *ex) {
  char reply = 0;
  ck_assert_int_eq(write_all(ex->down, "r", 1), 0);
  ck_assert_int_eq(read_all(ex->up, &reply, 1), 0);
  ck_assert_int_eq(reply, 'k');
}

/* Ends the child; its exit code. */
static int finish_exporter(struct exporter *ex) {
  int status = 0;
  close(ex->down);
  ck_assert_int_eq(waitpid(ex->pid, &status, 0), ex->pid);
  close(ex->up);
  ck_assert_msg(WIFEXITED(status), "the exporter died (status %d)", status);
  return WEXITSTATUS(status);
}

/* A stack of n b×b symmetric positive definite blocks: M·Mᵀ + b·I with M
 * of a fixed pseudo-random sequence. */
static float *spd_stack(size_t n, size_t b) {
  float *a = calloc(n * b * b, sizeof(float));
  float *m = calloc(b * b, sizeof(float));
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(m);
  uint64_t s = 0x5151a7edu;
  for (size_t k = 0; k < n; k++) {
    for (size_t i = 0; i < b * b; i++) {
      s = s * 6364136223846793005u + 1442695040888963407u;
      m[i] = (float)((double)(s >> 40) / (double)(1u << 24)) - 0.5f;
    }
    float *blk = a + k * b * b;
    for (size_t i = 0; i < b; i++) {
      for (size_t j = 0; j < b; j++) {
        double acc = i == j ? (double)b : 0.0;
        for (size_t l = 0; l < b; l++)
          acc += (double)m[i * b + l] * m[j * b + l];
        blk[i * b + j] = (float)acc;
      }
    }
  }
  free(m);
  return a;
}

START_TEST(test_cuda_sim_loads_as_the_cuda_plugin) {
  const struct dash__cuda_plugin *p = sim();
  ck_assert_int_eq(p->abi, DASH_CUDA_PLUGIN_ABI);
  ck_assert_ptr_eq(dash__cuda_load_plugin(NULL), p);
  ck_assert_int_eq(p->device_count(), 1);
  ck_assert_int_eq(dash_roots_cuda_available(), 1);

  char text[128];
  ck_assert_int_eq(dash_roots_cuda_describe(text, sizeof(text)), 0);
  ck_assert_str_eq(text, SIM_DESCRIPTION);
  char uuid[64];
  ck_assert_int_eq(p->ipc->device_uuid(0, uuid, sizeof(uuid)), 0);
  ck_assert_str_eq(uuid, SIM_UUID);
  ck_assert_int_eq(p->ipc->device_uuid(1, uuid, sizeof(uuid)), DASH_E_CUDA);
  ck_assert_int_eq(p->ipc->device_uuid(0, uuid, 8), DASH_E_INVALID);

  char name[64], desc[256];
  ck_assert_int_eq(p->tools->device(name, sizeof(name), desc, sizeof(desc)), 0);
  ck_assert_str_eq(name, "dash simulated GPU");
}
END_TEST

START_TEST(test_cuda_sim_selects_device_zero_by_ordinal_or_uuid_prefix) {
  sim();
  ck_assert_int_eq(dash_roots_cuda_select("0"), 0);
  ck_assert_int_eq(dash_roots_cuda_select("GPU-5151a7ed"), 0);
  ck_assert_int_eq(dash_roots_cuda_select("gpu-5151A7ED-0000"), DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_cuda_select("GPU-5151A7ED-0000"), 0);
  ck_assert_int_eq(dash_roots_cuda_select(SIM_UUID), 0);
  ck_assert_int_eq(dash_roots_cuda_select("1"), DASH_E_NO_DEVICE);
  ck_assert_int_eq(dash_roots_cuda_select("GPU-deadbeef"), DASH_E_NO_DEVICE);
  ck_assert_int_eq(dash_roots_cuda_select(SIM_UUID "0"), DASH_E_NO_DEVICE);
  ck_assert_int_eq(dash_roots_cuda_select("GPU-5151"), DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_cuda_select("cuda:0"), DASH_E_INVALID);
  ck_assert_int_eq(dash_roots_cuda_select(""), DASH_E_INVALID);
}
END_TEST

/* Same code, same thread count: the results must be bitwise equal. */
START_TEST(test_cuda_sim_computes_what_the_cpu_backend_computes) {
  static const dash_method methods[] = {DASH_METHOD_AUTO, DASH_METHOD_NEWTON_DB,
                                        DASH_METHOD_COUPLED_NEWTON,
                                        DASH_METHOD_EVD, DASH_METHOD_CHEBYSHEV};
  const size_t n = 3, b = 8, total = n * b * b, bytes = total * sizeof(float);
  const struct dash__cuda_ipc *x = ipc();
  float *in = spd_stack(n, b);
  float *want = calloc(total, sizeof(float)), *got = calloc(total, 4);
  ck_assert_ptr_nonnull(want);
  ck_assert_ptr_nonnull(got);
  float *d_in = dev_alloc(bytes), *d_out = dev_alloc(bytes);
  void *stream = NULL;
  ck_assert_int_eq(x->stream_create(0, &stream), 0);
  memcpy(d_in, in, bytes);

  for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
    dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
    o.method = methods[k];
    o.threads = 1;
    dash_block_info want_info[3], got_info[3];
    dash_roots_report rep;
    dash_roots_plan *cpu = NULL, *gpu = NULL;
    ck_assert_int_eq(dash_roots_plan_create(&cpu, n, b, &o), 0);
    o.backend = DASH_BACKEND_CUDA;
    ck_assert_int_eq(dash_roots_plan_create(&gpu, n, b, &o), 0);
    ck_assert_int_eq(dash_roots_plan_options(gpu)->backend, DASH_BACKEND_CUDA);
    ck_assert_int_eq(dash_roots_plan_options(gpu)->method,
                     dash_roots_plan_options(cpu)->method);
    ck_assert_int_ne(dash_roots_plan_options(gpu)->method, DASH_METHOD_AUTO);

    ck_assert_int_eq(dash_roots_execute(cpu, want, in, want_info, NULL), 0);
    memset(d_out, 0, bytes);
    ck_assert_int_eq(
        dash_roots_execute_device(gpu, d_out, d_in, got_info, &rep, stream), 0);
    ck_assert_int_eq(rep.backend, DASH_BACKEND_CUDA);
    ck_assert_msg(memcmp(d_out, want, bytes) == 0,
                  "method %s: the device result differs from the CPU's",
                  dash_method_name(methods[k]));
    ck_assert_int_eq(memcmp(got_info, want_info, sizeof(want_info)), 0);
    /* From host buffers, and on the legacy default stream. */
    ck_assert_int_eq(dash_roots_execute(gpu, got, in, NULL, NULL), 0);
    ck_assert_int_eq(memcmp(got, want, bytes), 0);
    ck_assert_int_eq(
        dash_roots_execute_device(gpu, d_out, d_in, NULL, NULL, NULL), 0);
    ck_assert_int_eq(memcmp(d_out, want, bytes), 0);
    dash_roots_plan_destroy(gpu);
    dash_roots_plan_destroy(cpu);
  }
  x->stream_destroy(stream);
  x->free(d_out);
  x->free(d_in);
  free(got);
  free(want);
  free(in);
}
END_TEST

START_TEST(test_cuda_sim_device_only_plan_takes_device_buffers_only) {
  const size_t n = 2, b = 4, bytes = n * b * b * sizeof(float);
  float *in = spd_stack(n, b), out[32];
  float *d_in = dev_alloc(bytes), *d_out = dev_alloc(bytes);
  memcpy(d_in, in, bytes);
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  o.device_only = 1;
  dash_roots_plan *plan = NULL;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, &o), 0);
  ck_assert_int_eq(dash_roots_execute(plan, out, in, NULL, NULL),
                   DASH_E_INVALID);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d_out, d_in, NULL, NULL, NULL), 0);
  dash_roots_plan_destroy(plan);
  ipc()->free(d_out);
  ipc()->free(d_in);
  free(in);
}
END_TEST

START_TEST(test_cuda_sim_execute_device_refuses_host_memory) {
  const size_t n = 2, b = 4, bytes = n * b * b * sizeof(float);
  float *in = spd_stack(n, b), out[32];
  float *d_in = dev_alloc(bytes), *d_out = dev_alloc(bytes);
  int not_a_stream = 0;
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  dash_roots_plan *plan = NULL;
  ck_assert_int_eq(dash_roots_plan_create(&plan, n, b, &o), 0);
  ck_assert_int_eq(dash_roots_execute_device(plan, d_out, in, NULL, NULL, NULL),
                   DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not memory"));
  ck_assert_int_eq(dash_roots_execute_device(plan, out, d_in, NULL, NULL, NULL),
                   DASH_E_CUDA);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d_out, d_in, NULL, NULL, &not_a_stream),
      DASH_E_CUDA);
  dash_roots_plan_destroy(plan);
  /* A stack that runs past the end of its allocation. */
  ck_assert_int_eq(dash_roots_plan_create(&plan, n + 1, b, &o), 0);
  ck_assert_int_eq(
      dash_roots_execute_device(plan, d_out, d_in, NULL, NULL, NULL),
      DASH_E_CUDA);
  dash_roots_plan_destroy(plan);
  ipc()->free(d_out);
  ipc()->free(d_in);
  free(in);
}
END_TEST

START_TEST(test_cuda_sim_shares_memory_with_another_process) {
  struct exporter ex;
  start_exporter(&ex);
  ck_assert_int_eq(ex.offset, kAt * sizeof(float));
  void *base = NULL;
  size_t size = 0;
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &base, &size), 0);
  ck_assert_uint_eq(size, kFloats * sizeof(float));
  const float *v = base;
  for (int i = 0; i < kFloats; i++)
    ck_assert_float_eq(v[i], (float)(i + 1));
  /* The opened memory is device memory here: a copy into it reaches the
   * exporter. */
  float *mine = dev_alloc(sizeof(float));
  *mine = -1.0f;
  ck_assert_int_eq(
      ipc()->copy((char *)base + ex.offset, mine, sizeof(float), NULL), 0);
  ipc()->free(mine);
  ipc()->mem_close(base);
  ck_assert_int_eq(finish_exporter(&ex), 10);
}
END_TEST

START_TEST(test_cuda_sim_refuses_a_second_open_of_one_handle) {
  struct exporter ex;
  start_exporter(&ex);
  void *base = NULL, *again = NULL;
  size_t size = 0;
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &base, &size), 0);
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &again, &size),
                   DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "already mapped"));
  ck_assert_ptr_null(again);
  /* Once closed, it opens again. */
  ipc()->mem_close(base);
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &again, &size), 0);
  ipc()->mem_close(again);
  ck_assert_int_eq(finish_exporter(&ex), 0);
}
END_TEST

START_TEST(test_cuda_sim_refuses_a_handle_of_freed_memory) {
  struct exporter ex;
  start_exporter(&ex);
  exporter_reallocate(&ex);
  void *base = NULL;
  size_t size = 0;
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &base, &size), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "freed"));
  ck_assert_int_eq(finish_exporter(&ex), 0);
}
END_TEST

START_TEST(test_cuda_sim_refuses_a_handle_of_a_dead_exporter) {
  struct exporter ex;
  start_exporter(&ex);
  ck_assert_int_eq(finish_exporter(&ex), 0);
  void *base = NULL;
  size_t size = 0;
  ck_assert_int_eq(ipc()->mem_open(ex.handle, &base, &size), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "process ended"));
  ck_assert_ptr_null(base);
}
END_TEST

START_TEST(test_cuda_sim_refuses_a_handle_of_this_process) {
  const struct dash__cuda_ipc *x = ipc();
  float *p = dev_alloc(64);
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  uint64_t off = 1;
  void *base = NULL;
  size_t size = 0;
  ck_assert_int_eq(x->export_mem(0, p, 64, h, &off), 0);
  ck_assert_uint_eq(off, 0);
  ck_assert_int_eq(x->mem_open(h, &base, &size), DASH_E_BAD_MEMORY);
  x->free(p);
}
END_TEST

START_TEST(test_cuda_sim_rejects_a_bad_magic) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES] = {0}, ev[sizeof(h)];
  void *base = NULL, *event = NULL;
  size_t size = 0;
  ck_assert_int_eq(x->mem_open(h, &base, &size), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not a CUDA IPC handle"));
  ck_assert_int_eq(x->event_open(-1, h, &event), DASH_E_CUDA);
  ck_assert_ptr_null(event);

  /* An event's handle is no memory handle, and the reverse. */
  void *mine = NULL;
  ck_assert_int_eq(x->event_create(0, &mine, ev), 0);
  ck_assert_int_eq(x->mem_open(ev, &base, &size), DASH_E_BAD_MEMORY);
  float *p = dev_alloc(64);
  uint64_t off;
  ck_assert_int_eq(x->export_mem(0, p, 64, h, &off), 0);
  ck_assert_int_eq(x->event_open(0, h, &event), DASH_E_CUDA);
  x->free(p);
  x->event_destroy(mine);
}
END_TEST

START_TEST(test_cuda_sim_rejects_an_out_of_range_export) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  uint64_t off = 0;
  char *p = dev_alloc(4096);
  float host[4];
  ck_assert_int_eq(x->export_mem(0, p + 4000, 96, h, &off), 0);
  ck_assert_uint_eq(off, 4000);
  ck_assert_int_eq(x->export_mem(0, p + 4000, 97, h, &off), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not memory of device 0"));
  ck_assert_int_eq(x->export_mem(0, p - 1, 2, h, &off), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->export_mem(0, p + 4096, 0, h, &off), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->export_mem(0, p, SIZE_MAX, h, &off), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->export_mem(0, host, sizeof(host), h, &off),
                   DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->export_mem(1, p, 16, h, &off), DASH_E_CUDA);
  ck_assert_int_eq(x->export_mem(-1, p, 16, h, &off), DASH_E_INVALID);
  x->free(p);
  ck_assert_int_eq(x->export_mem(0, p, 16, h, &off), DASH_E_BAD_MEMORY);
}
END_TEST

START_TEST(test_cuda_sim_events_record_and_wait_at_once) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  void *event = NULL, *opened = NULL, *s1 = NULL, *s2 = NULL;
  int not_ours = 0;
  ck_assert_int_eq(x->stream_create(0, &s1), 0);
  ck_assert_int_eq(x->stream_create(1, &s2), 0);
  ck_assert_ptr_nonnull(s1);
  ck_assert_ptr_ne(s1, s2);
  ck_assert_int_eq(x->event_create(0, &event, h), 0);
  ck_assert_int_eq(x->event_create(1, &opened, h), DASH_E_CUDA);
  ck_assert_int_eq(x->event_open(1, h, &opened), DASH_E_CUDA);
  ck_assert_int_eq(x->event_open(-1, h, &opened), 0);
  ck_assert_ptr_nonnull(opened);
  ck_assert_ptr_ne(opened, event);
  ck_assert_int_eq(x->event_record(0, event, s1), 0);
  ck_assert_int_eq(x->event_record(-1, event, NULL), 0);
  ck_assert_int_eq(x->stream_wait(-1, s2, opened), 0);
  ck_assert_int_eq(x->stream_wait(0, NULL, event), 0);
  ck_assert_int_eq(x->event_record(0, opened, s2), 0);
  ck_assert_int_eq(x->stream_sync(s1), 0);
  ck_assert_int_eq(x->stream_sync(NULL), 0);

  ck_assert_int_eq(x->event_record(1, event, s1), DASH_E_CUDA);
  ck_assert_int_eq(x->event_record(0, &not_ours, s1), DASH_E_CUDA);
  ck_assert_int_eq(x->event_record(0, event, &not_ours), DASH_E_CUDA);
  ck_assert_int_eq(x->stream_wait(0, s1, NULL), DASH_E_CUDA);
  ck_assert_int_eq(x->stream_wait(0, &not_ours, event), DASH_E_CUDA);
  ck_assert_int_eq(x->stream_sync(&not_ours), DASH_E_CUDA);

  x->event_destroy(opened);
  x->event_destroy(event);
  x->event_destroy(NULL);
  x->stream_destroy(s2);
  x->stream_destroy(s1);
  x->stream_destroy(NULL);
}
END_TEST

/* Monotonic clock in milliseconds. */
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

START_TEST(test_cuda_sim_event_query_says_complete_without_a_delay) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  void *event = NULL, *opened = NULL, *stream = NULL;
  int not_ours = 0;
  ck_assert_int_eq(unsetenv("DASH_CUDA_SIM_EVENT_DELAY_MS"), 0);
  ck_assert_int_eq(x->current_device(), 0);
  ck_assert_int_eq(x->stream_create(0, &stream), 0);
  ck_assert_int_eq(x->event_create(0, &event, h), 0);
  ck_assert_int_eq(x->event_open(-1, h, &opened), 0);
  /* Never recorded: complete, as in CUDA. */
  ck_assert_int_eq(x->event_query(event), 1);
  ck_assert_int_eq(x->event_query(opened), 1);
  ck_assert_int_eq(x->event_record(0, event, stream), 0);
  ck_assert_int_eq(x->event_query(event), 1);
  ck_assert_int_eq(x->event_record(-1, opened, NULL), 0);
  ck_assert_int_eq(x->event_query(opened), 1);
  ck_assert_int_eq(x->event_query(&not_ours), DASH_E_CUDA);
  ck_assert_int_eq(x->event_query(NULL), DASH_E_CUDA);
  x->event_destroy(opened);
  x->event_destroy(event);
  x->stream_destroy(stream);
}
END_TEST

/* DASH_CUDA_SIM_EVENT_DELAY_MS: a record completes that much later;
 * event_sync and stream_sync wait for it, event_query does not; a stream
 * that waited for an event completes no earlier than it; a process's own
 * records only count (an opened handle of the event is another event to
 * it, never recorded, so complete). */
START_TEST(test_cuda_sim_event_query_follows_the_delay) {
  const struct dash__cuda_ipc *x = ipc();
  const double delay = 200.0;
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES], h2[DASH_CUDA_IPC_HANDLE_BYTES];
  void *event = NULL, *later = NULL, *opened = NULL, *s1 = NULL, *s2 = NULL;
  ck_assert_int_eq(setenv("DASH_CUDA_SIM_EVENT_DELAY_MS", "200", 1), 0);
  ck_assert_int_eq(x->stream_create(0, &s1), 0);
  ck_assert_int_eq(x->stream_create(0, &s2), 0);
  ck_assert_int_eq(x->event_create(0, &event, h), 0);
  ck_assert_int_eq(x->event_create(0, &later, h2), 0);
  ck_assert_int_eq(x->event_open(-1, h, &opened), 0);
  ck_assert_int_eq(x->event_query(event), 1);

  double t0 = now_ms();
  ck_assert_int_eq(x->event_record(0, event, s1), 0);
  ck_assert_int_eq(x->event_query(event), 0);
  ck_assert_int_eq(x->event_query(opened), 1);
  /* s2 waits for it, then records without a delay of its own: its
   * record is late all the same. */
  ck_assert_int_eq(x->stream_wait(-1, s2, event), 0);
  ck_assert_int_eq(setenv("DASH_CUDA_SIM_EVENT_DELAY_MS", "0", 1), 0);
  ck_assert_int_eq(x->event_record(0, later, s2), 0);
  ck_assert_int_eq(x->event_query(later), 0);
  ck_assert_int_eq(x->event_sync(0, event), 0);
  double synced = now_ms() - t0;
  ck_assert_msg(synced >= delay - 1.0, "event_sync returned after %.1f ms",
                synced);
  ck_assert_int_eq(x->event_query(event), 1);
  ck_assert_int_eq(x->stream_sync(s2), 0);
  ck_assert_int_eq(x->event_query(later), 1);

  /* stream_sync waits for what was recorded on the stream. */
  ck_assert_int_eq(setenv("DASH_CUDA_SIM_EVENT_DELAY_MS", "200", 1), 0);
  t0 = now_ms();
  ck_assert_int_eq(x->event_record(0, event, s1), 0);
  ck_assert_int_eq(x->event_query(event), 0);
  ck_assert_int_eq(x->stream_sync(s1), 0);
  synced = now_ms() - t0;
  ck_assert_msg(synced >= delay - 1.0, "stream_sync returned after %.1f ms",
                synced);
  ck_assert_int_eq(x->event_query(event), 1);
  ck_assert_int_eq(unsetenv("DASH_CUDA_SIM_EVENT_DELAY_MS"), 0);
  x->event_destroy(opened);
  x->event_destroy(later);
  x->event_destroy(event);
  x->stream_destroy(s2);
  x->stream_destroy(s1);
}
END_TEST

START_TEST(test_cuda_sim_copies_between_device_buffers_only) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char *a = dev_alloc(256), *b = dev_alloc(256);
  unsigned char host[16] = {0};
  void *stream = NULL;
  ck_assert_int_eq(x->stream_create(0, &stream), 0);
  for (int i = 0; i < 256; i++)
    a[i] = (unsigned char)i;
  ck_assert_int_eq(x->copy(b, a + 16, 128, stream), 0);
  ck_assert_int_eq(b[0], 16);
  ck_assert_int_eq(b[127], 143);
  /* Overlapping, within one allocation. */
  ck_assert_int_eq(x->copy(a + 1, a, 255, NULL), 0);
  ck_assert_int_eq(a[255], 254);
  ck_assert_int_eq(x->copy(b, a, 0, NULL), 0);
  ck_assert_int_eq(x->copy(host, a, sizeof(host), NULL), DASH_E_CUDA);
  ck_assert_int_eq(x->copy(a, host, sizeof(host), NULL), DASH_E_CUDA);
  ck_assert_int_eq(x->copy(a + 200, b, 57, NULL), DASH_E_CUDA);
  ck_assert_int_eq(x->stream_sync(stream), 0);
  x->stream_destroy(stream);
  x->free(b);
  x->free(a);

  /* The allocations of alloc(0) and the bench's tools are the same
   * memory. */
  void *none = &none;
  ck_assert_int_eq(x->alloc(&none, 0), 0);
  ck_assert_ptr_null(none);
  x->free(NULL);
}
END_TEST

START_TEST(test_cuda_sim_registers_host_memory_once) {
  const struct dash__cuda_ipc *x = ipc();
  long page = sysconf(_SC_PAGESIZE);
  size_t len = 4 * (size_t)page;
  unsigned char *h = mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(h, MAP_FAILED);
  unsigned char *dev = dev_alloc(256);

  ck_assert_int_eq(x->host_register(0, h, len), 0);
  /* Once: the whole range, a piece of it, or a range reaching into it. */
  ck_assert_int_eq(x->host_register(0, h, len), DASH_E_CUDA);
  ck_assert_int_eq(x->host_register(-1, h + 100, 10), DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "registered already"));
  /* Only where a registration starts. */
  ck_assert_int_eq(x->host_unregister(0, h + 1), DASH_E_CUDA);
  ck_assert_int_eq(x->host_unregister(0, h), 0);
  ck_assert_int_eq(x->host_unregister(0, h), DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "NotRegistered"));
  /* Two neighbours, not overlapping, at any alignment. */
  ck_assert_int_eq(x->host_register(0, h + 3, (size_t)page), 0);
  ck_assert_int_eq(x->host_register(-1, h + 3 + page, 5), 0);
  ck_assert_int_eq(x->host_unregister(-1, h + 3), 0);
  ck_assert_int_eq(x->host_unregister(0, h + 3 + page), 0);

  /* Host memory only, and mapped. */
  ck_assert_int_eq(x->host_register(0, dev + 16, 16), DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not host memory"));
  ck_assert_int_eq(x->host_register(0, NULL, 16), DASH_E_CUDA);
  ck_assert_int_eq(x->host_register(0, h, 0), DASH_E_CUDA);
  ck_assert_int_eq(x->host_register(1, h, len), DASH_E_CUDA);
  ck_assert_int_eq(x->host_unregister(1, h), DASH_E_CUDA);
  ck_assert_int_eq(munmap(h + 2 * page, 2 * (size_t)page), 0);
  ck_assert_int_eq(x->host_register(0, h + page, 2 * (size_t)page),
                   DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not mapped"));
  ck_assert_int_eq(x->host_register(0, h, 2 * (size_t)page), 0);
  ck_assert_int_eq(x->host_unregister(0, h), 0);
  munmap(h, 2 * (size_t)page);
  x->free(dev);
}
END_TEST

START_TEST(test_cuda_sim_copies_on_a_stream_with_page_locked_host_memory) {
  const struct dash__cuda_ipc *x = ipc();
  float *dev = dev_alloc(64 * sizeof(float));
  float *pinned = calloc(64, sizeof(float));
  float *pageable = calloc(64, sizeof(float));
  void *stream = NULL, *event = NULL;
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  int not_ours = 0;
  ck_assert_ptr_nonnull(pinned);
  ck_assert_ptr_nonnull(pageable);
  ck_assert_int_eq(x->stream_create(0, &stream), 0);
  ck_assert_int_eq(x->event_create(0, &event, h), 0);
  ck_assert_int_eq(x->host_register(0, pinned, 64 * sizeof(float)), 0);
  for (int i = 0; i < 64; i++)
    dev[i] = (float)i;

  /* Device to host and back, on a stream or the legacy default one. */
  ck_assert_int_eq(x->copy_on(0, pinned, dev + 8, 32 * sizeof(float), stream),
                   0);
  ck_assert_float_eq(pinned[0], 8.0f);
  ck_assert_float_eq(pinned[31], 39.0f);
  ck_assert_int_eq(x->copy_on(-1, dev + 32, pinned, 32 * sizeof(float), NULL),
                   0);
  ck_assert_float_eq(dev[32], 8.0f);
  ck_assert_float_eq(dev[63], 39.0f);
  /* Device to device too, and nothing at all. */
  ck_assert_int_eq(x->copy_on(0, dev, dev + 32, 4 * sizeof(float), stream), 0);
  ck_assert_float_eq(dev[3], 11.0f);
  ck_assert_int_eq(x->copy_on(0, pageable, dev, 0, stream), 0);
  /* The record after a copy is complete at once. */
  ck_assert_int_eq(x->event_record(0, event, stream), 0);
  ck_assert_int_eq(x->event_sync(0, event), 0);
  ck_assert_int_eq(x->event_sync(-1, event), 0);

  /* Host memory that is not page-locked, or beyond what is. */
  ck_assert_int_eq(x->copy_on(0, pageable, dev, 16, stream), DASH_E_CUDA);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "page-locked"));
  ck_assert_int_eq(x->copy_on(0, dev, pageable, 16, stream), DASH_E_CUDA);
  ck_assert_int_eq(x->copy_on(0, pinned + 60, dev, 8 * sizeof(float), stream),
                   DASH_E_CUDA);
  ck_assert_int_eq(x->copy_on(0, dev + 60, pinned, 8 * sizeof(float), stream),
                   DASH_E_CUDA);
  /* Streams, events and devices the simulation does not have. */
  ck_assert_int_eq(x->copy_on(0, pinned, dev, 16, &not_ours), DASH_E_CUDA);
  ck_assert_int_eq(x->copy_on(1, pinned, dev, 16, stream), DASH_E_CUDA);
  ck_assert_int_eq(x->event_sync(0, &not_ours), DASH_E_CUDA);
  ck_assert_int_eq(x->event_sync(0, NULL), DASH_E_CUDA);
  ck_assert_int_eq(x->event_sync(1, event), DASH_E_CUDA);

  /* Once unregistered, the memory is pageable again. */
  ck_assert_int_eq(x->host_unregister(0, pinned), 0);
  ck_assert_int_eq(x->copy_on(0, pinned, dev, 16, stream), DASH_E_CUDA);
  x->event_destroy(event);
  x->stream_destroy(stream);
  x->free(dev);
  free(pinned);
  free(pageable);
}
END_TEST

START_TEST(test_cuda_sim_checks_device_memory_without_exporting) {
  const struct dash__cuda_ipc *x = ipc();
  unsigned char *dev = dev_alloc(256);
  unsigned char host[16];
  ck_assert_int_eq(x->mem_check(0, dev, 256), 0);
  ck_assert_int_eq(x->mem_check(0, dev + 100, 156), 0);
  ck_assert_int_eq(x->mem_check(0, dev + 256, 0), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->mem_check(0, dev + 100, 157), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->mem_check(0, host, sizeof(host)), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->mem_check(0, NULL, 16), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->mem_check(1, dev, 16), DASH_E_CUDA);
  ck_assert_int_eq(x->mem_check(-1, dev, 16), DASH_E_INVALID);
  /* Page-locked host memory is still not the device's. */
  ck_assert_int_eq(x->host_register(0, host, sizeof(host)), 0);
  ck_assert_int_eq(x->mem_check(0, host, sizeof(host)), DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->host_unregister(0, host), 0);
  x->free(dev);
  ck_assert_int_eq(x->mem_check(0, dev, 16), DASH_E_BAD_MEMORY);
}
END_TEST

START_TEST(test_cuda_sim_tools_move_memory_and_have_no_roofline) {
  const struct dash__cuda_tools *t = sim()->tools;
  float host[8] = {1, 2, 3, 4, 5, 6, 7, 8}, back[8] = {0};
  void *dev = NULL;
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  uint64_t off;
  double gflops = 0;
  ck_assert_int_eq(t->alloc(&dev, sizeof(host)), 0);
  ck_assert_float_eq(((float *)dev)[7], 0.0f); /* zeroed */
  ck_assert_int_eq(t->upload(dev, host, sizeof(host)), 0);
  ck_assert_int_eq(t->sync(), 0);
  ck_assert_int_eq(t->download(back, dev, sizeof(back)), 0);
  ck_assert_int_eq(memcmp(back, host, sizeof(host)), 0);
  ck_assert_int_eq(ipc()->export_mem(0, dev, sizeof(host), h, &off), 0);
  ck_assert_int_eq(t->upload(back, host, sizeof(host)), DASH_E_CUDA);
  ck_assert_int_eq(t->roofline(4, 8, DASH_PRECISION_FP32, 1, 0.0, &gflops),
                   DASH_E_UNSUPPORTED);
  ck_assert_str_ne(t->error(), "");
  t->free(dev);
}
END_TEST

/* CUDA_VMM_FD. */

/* Physical allocations of the VMM memory the tests make, and the floats
 * of the buffer shared across the first two of them. */
enum { kPieces = 3, kSpan = 64 };

static size_t page_size(void) {
  return (size_t)sysconf(_SC_PAGESIZE);
}

/* The fds this process has open: a call that leaks one changes it. */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  ck_assert_ptr_nonnull(d);
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

/* Sends len bytes of data and n fds in one message. */
static int send_fds(int sock, const int *fds, size_t n, const void *data,
                    size_t len) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * kPieces)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr mh;
  if (n > kPieces)
    return -1;
  memset(&mh, 0, sizeof(mh));
  memset(&ctl, 0, sizeof(ctl));
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (n > 0) {
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  }
  return sendmsg(sock, &mh, 0) == (ssize_t)len ? 0 : -1;
}

/* Receives what send_fds sent: len bytes into data, the fds (at most
 * kPieces) into fds; the number of fds, or -1. */
static int recv_fds(int sock, int *fds, void *data, size_t len) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * kPieces)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr mh;
  int n = 0;
  memset(&mh, 0, sizeof(mh));
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl.buf;
  mh.msg_controllen = sizeof(ctl.buf);
  if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != (ssize_t)len ||
      (mh.msg_flags & MSG_CTRUNC) != 0)
    return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL;
       c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    if (k > (size_t)(kPieces - n))
      return -1;
    memcpy(fds + n, CMSG_DATA(c), k * sizeof(int));
    n += (int)k;
  }
  return n;
}

/* What the VMM exporter sends with its fds. */
struct vmm_export_msg {
  uint64_t sizes[kPieces];
  uint64_t count;
  uint64_t offset;
};

/* The child's side: VMM memory of kPieces pages holding 1, 2, 3, … as
 * floats, of which it exports the kSpan floats that start kSpan/2 before
 * the end of the first piece; exits 10 when the importer changed the last
 * of them to −1 and said 'w', another code when something failed. */
static int vmm_exporter_main(int sock) {
  const struct dash__cuda_ipc *x = dash__cuda_load_plugin(NULL)->ipc;
  size_t per = page_size() / sizeof(float);
  struct vmm_export_msg msg;
  int fds[kPieces];
  size_t count = 0;
  float *v = NULL;
  char cmd = 0;
  memset(&msg, 0, sizeof(msg));
  if (x->vmm_alloc(0, page_size(), kPieces, (void **)&v) != 0)
    return 1;
  for (size_t i = 0; i < kPieces * per; i++)
    v[i] = (float)(i + 1);
  float *buf = v + per - kSpan / 2;
  if (x->vmm_export(0, buf, kSpan * sizeof(float), fds, msg.sizes, kPieces,
                    &count, &msg.offset) != 0)
    return 2;
  msg.count = count;
  int sent = send_fds(sock, fds, count, &msg, sizeof(msg));
  for (size_t i = 0; i < count; i++)
    close(fds[i]);
  if (sent < 0)
    return 3;
  if (read_all(sock, &cmd, 1) < 0 || cmd != 'w')
    return 4;
  int status = buf[kSpan - 1] == -1.0f ? 10 : 5;
  x->vmm_free(v);
  return status;
}

START_TEST(test_cuda_sim_shares_vmm_memory_with_another_process) {
  const struct dash__cuda_ipc *x = ipc(); /* loaded here, so the child has it */
  size_t page = page_size(), per = page / sizeof(float);
  struct vmm_export_msg msg;
  int sv[2], fds[kPieces], status = 0;
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(sv[0]);
    _exit(vmm_exporter_main(sv[1]));
  }
  close(sv[1]);
  int n = recv_fds(sv[0], fds, &msg, sizeof(msg));
  /* The buffer spans the first two pieces; the fds are of those. */
  ck_assert_int_eq(n, 2);
  ck_assert_uint_eq(msg.count, 2);
  ck_assert_uint_eq(msg.sizes[0], page);
  ck_assert_uint_eq(msg.sizes[1], page);
  ck_assert_uint_eq(msg.offset, page - kSpan / 2 * sizeof(float));

  void *base = NULL;
  ck_assert_int_eq(x->vmm_open(fds, msg.sizes, msg.count, &base), 0);
  ck_assert_ptr_nonnull(base);
  float *buf = (float *)((char *)base + msg.offset);
  for (size_t i = 0; i < kSpan; i++)
    ck_assert_float_eq(buf[i], (float)(per - kSpan / 2 + i + 1));
  /* The mapping is device memory here, across the pieces: copies from it
   * and into it run, and one into it reaches the exporter. */
  float *mine = dev_alloc(kSpan * sizeof(float));
  ck_assert_int_eq(x->copy(mine, buf, kSpan * sizeof(float), NULL), 0);
  ck_assert_int_eq(memcmp(mine, buf, kSpan * sizeof(float)), 0);
  mine[0] = -1.0f;
  ck_assert_int_eq(x->copy(buf + kSpan - 1, mine, sizeof(float), NULL), 0);
  /* Past what was opened, it is not. */
  ck_assert_int_eq(x->copy(mine, (char *)base + 2 * page - 4, 8, NULL),
                   DASH_E_CUDA);
  ck_assert_int_eq(write_all(sv[0], "w", 1), 0);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status), "the exporter died (status %d)", status);
  ck_assert_int_eq(WEXITSTATUS(status), 10);
  /* The mapping outlives the exporter, as CUDA's does. */
  ck_assert_float_eq(buf[0], (float)(per - kSpan / 2 + 1));
  x->vmm_close(base, msg.sizes, msg.count);
  x->free(mine);
  for (int i = 0; i < n; i++)
    close(fds[i]);
  close(sv[0]);
}
END_TEST

START_TEST(test_cuda_sim_vmm_export_takes_one_range_of_vmm_memory_only) {
  const struct dash__cuda_ipc *x = ipc();
  size_t page = page_size();
  char *v = NULL, *plain = dev_alloc(page), host[16];
  int fds[kPieces];
  uint64_t sizes[kPieces], off = 0;
  size_t count = 0;
  unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
  ck_assert_int_eq(x->vmm_alloc(0, page - 100, kPieces, (void **)&v), 0);
  ck_assert_ptr_nonnull(v);
  int before = open_fds();

  /* The granularity rounds the pieces up. */
  ck_assert_int_eq(x->vmm_owns(0, v), 1);
  ck_assert_int_eq(x->vmm_owns(0, v + kPieces * page - 1), 1);
  ck_assert_int_eq(x->vmm_owns(0, v + kPieces * page), 0);
  ck_assert_int_eq(x->vmm_owns(0, plain), 0);
  ck_assert_int_eq(x->vmm_owns(0, host), 0);
  ck_assert_int_eq(x->vmm_owns(1, v), 0);

  /* All of it, one piece, and a range across two. */
  ck_assert_int_eq(
      x->vmm_export(0, v, kPieces * page, fds, sizes, kPieces, &count, &off),
      0);
  ck_assert_uint_eq(count, kPieces);
  ck_assert_uint_eq(off, 0);
  for (size_t i = 0; i < count; i++) {
    ck_assert_uint_eq(sizes[i], page);
    close(fds[i]);
  }
  ck_assert_int_eq(
      x->vmm_export(0, v + page + 5, 10, fds, sizes, 1, &count, &off), 0);
  ck_assert_uint_eq(count, 1);
  ck_assert_uint_eq(off, 5);
  close(fds[0]);
  ck_assert_int_eq(
      x->vmm_export(0, v + 2 * page - 8, 16, fds, sizes, kPieces, &count, &off),
      0);
  ck_assert_uint_eq(count, 2);
  ck_assert_uint_eq(off, page - 8);
  close(fds[0]);
  close(fds[1]);

  /* Plain device memory, host memory, past the end, more pieces than
   * asked for: refused, with no fd left open. */
  ck_assert_int_eq(
      x->vmm_export(0, plain, 16, fds, sizes, kPieces, &count, &off),
      DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "not VMM memory"));
  ck_assert_int_eq(
      x->vmm_export(0, host, sizeof(host), fds, sizes, kPieces, &count, &off),
      DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->vmm_export(0, v + kPieces * page - 8, 16, fds, sizes,
                                 kPieces, &count, &off),
                   DASH_E_BAD_MEMORY);
  ck_assert_int_eq(x->vmm_export(0, v + kPieces * page, 0, fds, sizes, kPieces,
                                 &count, &off),
                   DASH_E_BAD_MEMORY);
  ck_assert_int_eq(
      x->vmm_export(0, v, SIZE_MAX, fds, sizes, kPieces, &count, &off),
      DASH_E_BAD_MEMORY);
  ck_assert_int_eq(
      x->vmm_export(0, v + page - 8, 16, fds, sizes, 1, &count, &off),
      DASH_E_TOO_LARGE);
  ck_assert_int_eq(
      x->vmm_export(0, v, kPieces * page, fds, sizes, 2, &count, &off),
      DASH_E_TOO_LARGE);
  ck_assert_uint_eq(count, 0);
  ck_assert_int_eq(x->vmm_export(1, v, 16, fds, sizes, 1, &count, &off),
                   DASH_E_CUDA);
  ck_assert_int_eq(x->vmm_export(-1, v, 16, fds, sizes, 1, &count, &off),
                   DASH_E_INVALID);
  ck_assert_int_eq(open_fds(), before);

  /* Legacy IPC refuses VMM memory, as cudaIpcGetMemHandle does; host
   * registration too. A check without export takes one piece, as
   * cuMemGetAddressRange is reported to. */
  ck_assert_int_eq(x->export_mem(0, v, 16, h, &off), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "cuMemCreate"));
  ck_assert_int_eq(x->host_register(0, v + 16, 16), DASH_E_CUDA);
  ck_assert_int_eq(x->mem_check(0, v + page, page), 0);
  ck_assert_int_eq(x->mem_check(0, v + page - 8, 16), DASH_E_BAD_MEMORY);

  /* Freed, it is nobody's. */
  x->vmm_free(v);
  ck_assert_int_eq(x->vmm_owns(0, v), 0);
  ck_assert_int_eq(x->vmm_export(0, v, 16, fds, sizes, 1, &count, &off),
                   DASH_E_BAD_MEMORY);
  x->vmm_free(NULL);
  x->free(plain);
}
END_TEST

START_TEST(test_cuda_sim_vmm_open_takes_vmm_allocations_of_their_size_only) {
  const struct dash__cuda_ipc *x = ipc();
  size_t page = page_size();
  char *v = NULL, *base = NULL;
  int fds[2], pipe_fds[2];
  uint64_t sizes[2], off = 0;
  size_t count = 0;
  ck_assert_int_eq(x->vmm_alloc(-1, page, 2, (void **)&v), 0);
  ck_assert_int_eq(x->vmm_export(0, v, 2 * page, fds, sizes, 2, &count, &off),
                   0);
  ck_assert_uint_eq(count, 2);
  ck_assert_int_eq(pipe(pipe_fds), 0);
  FILE *file = tmpfile();
  ck_assert_ptr_nonnull(file);
  ck_assert_int_eq(ftruncate(fileno(file), (off_t)page), 0);
  int foreign = memfd_create("not-a-vmm-allocation", MFD_CLOEXEC);
  ck_assert_int_ge(foreign, 0);
  ck_assert_int_eq(ftruncate(foreign, (off_t)page), 0);
  int before = open_fds();

  /* Opened here too, as CUDA allows: the same memory, twice over. */
  ck_assert_int_eq(x->vmm_open(fds, sizes, 2, (void **)&base), 0);
  ck_assert_ptr_ne(base, v);
  v[page + 3] = 42;
  ck_assert_int_eq(base[page + 3], 42);
  x->vmm_close(base, sizes, 2);

  /* More than an fd holds, or less than a granule. */
  uint64_t big[2] = {page, 2 * page}, odd[2] = {page, page - 1};
  ck_assert_int_eq(x->vmm_open(fds, big, 2, (void **)&base), DASH_E_BAD_MEMORY);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "allocation has"));
  ck_assert_ptr_null(base);
  ck_assert_int_eq(x->vmm_open(fds, odd, 2, (void **)&base), DASH_E_BAD_MEMORY);
  /* fds that are no VMM allocation: a pipe, a file, a memfd of someone
   * else's, one not open. */
  int others[] = {pipe_fds[0], fileno(file), foreign, -1};
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    int two[2] = {fds[0], others[i]};
    ck_assert_int_eq(x->vmm_open(two, sizes, 2, (void **)&base),
                     DASH_E_BAD_MEMORY);
    ck_assert_ptr_nonnull(strstr(dash_last_error(), "no CUDA allocation"));
    ck_assert_ptr_null(base);
  }
  ck_assert_int_eq(x->vmm_open(fds, sizes, 0, (void **)&base), DASH_E_INVALID);
  ck_assert_int_eq(x->vmm_open(NULL, sizes, 2, (void **)&base), DASH_E_INVALID);
  ck_assert_int_eq(open_fds(), before);
  x->vmm_close(NULL, sizes, 2);

  close(foreign);
  fclose(file);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  close(fds[0]);
  close(fds[1]);
  x->vmm_free(v);
}
END_TEST

/* The trace names VMM memory made here "own" and VMM memory opened here
 * "peer", as for allocations and IPC mappings. */
START_TEST(test_cuda_sim_traces_vmm_memory_as_own_and_opened_as_peer) {
  char path[] = "/tmp/dash-sim-trace-XXXXXX";
  int tfd = mkstemp(path);
  ck_assert_int_ge(tfd, 0);
  /* Read when the simulation loads, which in this test's process is
   * now. */
  ck_assert_int_eq(setenv("DASH_CUDA_SIM_TRACE", path, 1), 0);
  const struct dash__cuda_ipc *x = ipc();
  size_t page = page_size();
  char *v = NULL, *base = NULL;
  int fds[2];
  uint64_t sizes[2], off = 0;
  size_t count = 0;
  ck_assert_int_eq(x->vmm_alloc(0, page, 2, (void **)&v), 0);
  ck_assert_int_eq(x->vmm_export(0, v, 2 * page, fds, sizes, 2, &count, &off),
                   0);
  ck_assert_int_eq(x->vmm_open(fds, sizes, count, (void **)&base), 0);
  ck_assert_int_eq(x->copy(base, v + page - 8, 16, NULL), 0);
  ck_assert_int_eq(x->copy(v, base + page - 8, 16, NULL), 0);
  x->vmm_close(base, sizes, count);
  close(fds[0]);
  close(fds[1]);
  x->vmm_free(v);

  char trace[512] = {0};
  ssize_t n = read(tfd, trace, sizeof(trace) - 1);
  close(tfd);
  unlink(path);
  unsetenv("DASH_CUDA_SIM_TRACE");
  /* Without fork mode the simulation was loaded by an earlier test,
   * without the trace: there is nothing to check. */
  if (n == 0)
    return;
  ck_assert_int_gt(n, 0);
  ck_assert_msg(strstr(trace, " peer own\n") != NULL, "trace: %s", trace);
  ck_assert_msg(strstr(trace, " own peer\n") != NULL, "trace: %s", trace);
}
END_TEST

/* The daemon calls from its loop and its worker thread at once. */
static void *churn(void *arg) {
  const struct dash__cuda_ipc *x = arg;
  for (int i = 0; i < 200; i++) {
    void *p = NULL, *q = NULL, *ev = NULL, *s = NULL;
    unsigned char h[DASH_CUDA_IPC_HANDLE_BYTES];
    uint64_t off;
    char host[256];
    if (x->alloc(&p, 4096) != 0 || x->alloc(&q, 4096) != 0 ||
        x->stream_create(0, &s) != 0 || x->event_create(0, &ev, h) != 0 ||
        x->export_mem(0, (char *)p + 100, 200, h, &off) != 0 || off != 100 ||
        x->copy(q, p, 4096, s) != 0 || x->event_record(0, ev, s) != 0 ||
        x->stream_wait(0, s, ev) != 0 ||
        x->host_register(0, host, sizeof(host)) != 0 ||
        x->copy_on(0, host, q, sizeof(host), s) != 0 ||
        x->event_sync(0, ev) != 0 || x->host_unregister(0, host) != 0)
      return (void *)1;
    void *v = NULL, *opened = NULL;
    int fds[2];
    uint64_t sizes[2];
    size_t count = 0;
    if (x->vmm_alloc(0, 4096, 2, &v) != 0 ||
        x->vmm_export(0, (char *)v + 4000, 200, fds, sizes, 2, &count, &off) !=
            0 ||
        count != 2 || off != 4000)
      return (void *)1;
    int rc = x->vmm_open(fds, sizes, count, &opened);
    close(fds[0]);
    close(fds[1]);
    if (rc != 0 || x->copy(q, (char *)opened + 4000, 200, s) != 0)
      return (void *)1;
    x->vmm_close(opened, sizes, count);
    x->vmm_free(v);
    x->event_destroy(ev);
    x->stream_destroy(s);
    x->free(q);
    x->free(p);
  }
  return NULL;
}

START_TEST(test_cuda_sim_is_safe_across_threads) {
  pthread_t t[4];
  const struct dash__cuda_ipc *x = ipc();
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, churn, (void *)x), 0);
  for (int i = 0; i < 4; i++) {
    void *r = NULL;
    ck_assert_int_eq(pthread_join(t[i], &r), 0);
    ck_assert_ptr_null(r);
  }
}
END_TEST

static Suite *cuda_sim_suite(void) {
  Suite *s = suite_create("cuda_sim");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_cuda_sim_loads_as_the_cuda_plugin);
  tcase_add_test(tc,
                 test_cuda_sim_selects_device_zero_by_ordinal_or_uuid_prefix);
  tcase_add_test(tc, test_cuda_sim_computes_what_the_cpu_backend_computes);
  tcase_add_test(tc, test_cuda_sim_device_only_plan_takes_device_buffers_only);
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  suite_add_tcase(s, tc);

  tc = tcase_create("ipc");
  tcase_add_test(tc, test_cuda_sim_shares_memory_with_another_process);
  tcase_add_test(tc, test_cuda_sim_events_record_and_wait_at_once);
  tcase_add_test(tc, test_cuda_sim_event_query_says_complete_without_a_delay);
  tcase_add_test(tc, test_cuda_sim_event_query_follows_the_delay);
  tcase_add_test(tc, test_cuda_sim_copies_between_device_buffers_only);
  tcase_add_test(tc, test_cuda_sim_registers_host_memory_once);
  tcase_add_test(tc,
                 test_cuda_sim_copies_on_a_stream_with_page_locked_host_memory);
  tcase_add_test(tc, test_cuda_sim_checks_device_memory_without_exporting);
  tcase_add_test(tc, test_cuda_sim_tools_move_memory_and_have_no_roofline);
  tcase_add_test(tc, test_cuda_sim_is_safe_across_threads);
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  suite_add_tcase(s, tc);

  tc = tcase_create("vmm");
  tcase_add_test(tc, test_cuda_sim_shares_vmm_memory_with_another_process);
  tcase_add_test(tc, test_cuda_sim_traces_vmm_memory_as_own_and_opened_as_peer);
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad input");
  tcase_add_test(tc, test_cuda_sim_rejects_a_bad_magic);
  tcase_add_test(tc, test_cuda_sim_rejects_an_out_of_range_export);
  tcase_add_test(tc, test_cuda_sim_refuses_a_second_open_of_one_handle);
  tcase_add_test(tc, test_cuda_sim_refuses_a_handle_of_freed_memory);
  tcase_add_test(tc, test_cuda_sim_refuses_a_handle_of_a_dead_exporter);
  tcase_add_test(tc, test_cuda_sim_refuses_a_handle_of_this_process);
  tcase_add_test(tc, test_cuda_sim_execute_device_refuses_host_memory);
  tcase_add_test(tc,
                 test_cuda_sim_vmm_export_takes_one_range_of_vmm_memory_only);
  tcase_add_test(
      tc, test_cuda_sim_vmm_open_takes_vmm_allocations_of_their_size_only);
  tcase_set_timeout(tc, TEST_TIMEOUT_S);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* Without the simulation the loader would find the real plugin or
   * none, and these tests would prove nothing. */
  const char *env = getenv("DASH_CUDA_PLUGIN");
  if (env == NULL || strstr(env, "libdash_cuda_sim") == NULL) {
    fprintf(stderr,
            "test_cuda_sim: set DASH_CUDA_PLUGIN to the path of "
            "libdash_cuda_sim.so (ctest does)\n");
    return EXIT_FAILURE;
  }
  SRunner *sr = srunner_create(cuda_sim_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
