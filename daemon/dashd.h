/* The daemon's shared structures. Everything here lives on the loop
 * thread, except the fields of a job, which the worker owns between
 * dashd__sched_submit() and the completion callback. */
#ifndef DASHD_DASHD_H
#define DASHD_DASHD_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"
#include "dash/roots.h"
#include "wire.h"

struct dashd_server;
struct dashd_session;
struct dashd_stack;
struct dashd_sched;

/* What one finished computation left in a result slot. */
struct dashd_result {
  uint64_t generation;
  uint64_t step;
  double compute_ms;
  dash_method method;
  int max_iterations;
  uint64_t blocks_by_status[DASH_BLOCK_STATUS_COUNT];
  int status; /* 0, or the dash_status of a failed computation */
  char message[256];
};

/* One computation handed to the worker. */
struct dashd_job {
  struct dashd_stack *stack;
  int snap; /* snapshot buffer to read */
  int slot; /* result slot to write */
  int prev; /* slot holding the newest earlier result, or -1 */
  uint64_t step;
  /* Filled by the worker. */
  int rc;
  char message[256];
  dash_roots_report report;
  struct dashd_job *next;
};

struct dashd_stack {
  uint64_t id;
  struct dashd_server *srv;
  struct dashd_session *owner;    /* NULL once the owner let go */
  struct dashd_stack *next_all;   /* the server's list */
  struct dashd_stack *next_owned; /* the owner's list */
  size_t n, b, elems;             /* N, B, N·B·B */
  dash_roots_options opts;
  dash_roots_plan *plan;
  const float *stats; /* the client's statistics, read-only */
  float *results;     /* the client's two result slots */
  float *snaps[2];    /* private snapshots */
  dash_block_info *infos;
  uint64_t bytes; /* counted against the owner's limit */
  uid_t uid;      /* the owner's, also after it let go */
  /* CUDA_IPC (transport_cuda.c): the GPU side, NULL for SHM stacks,
   * whose stats, results and snaps above are host memory instead. */
  struct dashd_cuda_stack *cuda;
  /* An Unregister of a CUDA stack is answered once the daemon no longer
   * touches the client's GPU memory: the client may free it then. */
  uint64_t unreg_request_id, unreg_session;
  /* What dashctl status shows of the memory: "cuda-ipc GPU-...",
   * "cuda-vmm GPU-...". */
  char memory[64];

  int computing; /* snapshot being computed, or -1 */
  int pending;   /* snapshot waiting, or -1 */
  /* CUDA stacks: the computation of `computing` waits for its start
   * fence (the snapshot copy and the client's release of the slot, done
   * on the GPU) before it goes to the worker, which must never wait for
   * a client's GPU work; the server's gpu_poll looks at it (stack.c). */
  int gpu_wait;
  uint64_t gpu_poll_pass; /* the pass of gpu_poll that looked at it last */
  /* A released CUDA stack on the server's draining list: since when, and
   * whether the warning that it does not drain was logged. */
  uint64_t drain_since_ms;
  int drain_warned;
  /* A large snapshot is copied on libuv's thread pool, so the loop keeps
   * serving other clients; the Refresh reply waits for the copy. */
  uv_work_t copy;
  int copying; /* snapshot being copied, or -1 */
  uint64_t copy_request_id;
  int copy_coalesced, copy_behind;
  uint64_t snap_step[2];
  int held;  /* slot the client holds, or -1 */
  int ready; /* newest unadopted slot, or -1 */
  struct dashd_result slot_result[2];
  struct dashd_job job;

  uint64_t generation; /* results completed */
  uint64_t refreshes, coalesced, failures;
  uint64_t last_step_requested, last_step_done;
  double last_refresh_ms;
};

struct dashd_session {
  struct dashd_server *srv;
  struct dashd_session *prev, *next;
  int fd;
  uv_poll_t poll;
  int poll_events;
  dash__wire_reader reader;
  uint8_t *out; /* frames waiting to be sent */
  size_t out_len, out_off, out_cap;
  uint64_t serial; /* unique for the daemon's life */
  pid_t pid;
  uid_t uid;
  gid_t gid;
  int allowed; /* SO_PEERCRED passed the config */
  int hello_done;
  int closing;
  /* The connection failed inside a send: closed on the loop's next turn
   * (dashd__server_defer), since the sender may still hold one of the
   * session's stacks. Nothing more is sent or read meanwhile. */
  int doomed;
  char doom_why[96];
  struct dashd_stack *stacks;
  unsigned n_stacks;
  uint64_t bytes;
};

/* Bounds of the refresh latency histogram, milliseconds; +Inf follows. */
#define DASHD_LATENCY_BUCKETS 10

/* Counters since start, for `dashctl metrics`. Loop thread only. */
struct dashd_metrics {
  /* Computations by method (dash_method values 0..4) and outcome. */
  uint64_t refreshes_ok[5], refreshes_failed[5];
  uint64_t blocks[DASH_BLOCK_STATUS_COUNT];
  uint64_t coalesced;
  uint64_t latency_count[DASHD_LATENCY_BUCKETS + 1];
  double latency_sum_ms;
  double busy_ms; /* the worker's time computing */
  uint64_t connections, refused;
};

struct dashd_server {
  uv_loop_t *loop;
  struct dashd_config cfg;
  const char *config_path; /* NULL: no file */
  /* The command line's settings, which win over the file's, also on
   * reload. */
  const char *(*cli_pairs)[2];
  int n_cli_pairs;
  char socket_path[108];
  int listen_fd;
  uv_poll_t listen_poll;
  struct dashd_session *sessions;
  unsigned n_sessions;
  struct dashd_stack *stacks;
  uint64_t next_stack_id;
  uint64_t next_session_serial;
  /* Client GPU allocations opened for CUDA stacks (transport_cuda.c). */
  struct dashd_cuda_map *cuda_maps;
  struct dashd_sched *sched;
  double start_ms;
  int stopping;
  uint64_t stop_started_ms;
  uv_timer_t stop_timer;
  uv_signal_t sig_int, sig_term, sig_hup;
  /* Polls the GPU work of CUDA stacks without waiting for it (stack.c):
   * starts the computations whose start fence completed, and frees the
   * released stacks whose copies drained. One-shot, every gpu_poll_ms
   * (1 ms, backing off to 10 ms while nothing changes). */
  /* Work put off to the loop's next turn, where no caller holds a stack:
   * closing doomed sessions, failing after a lost GPU seen in a
   * teardown. */
  uv_timer_t deferred;
  int deferred_open;
  int fail_code; /* non-zero: dashd__server_fail(fail_code, fail_why) */
  char fail_why[256];
  uv_timer_t gpu_poll;
  int gpu_poll_open; /* initialised and not closing */
  uint64_t gpu_poll_ms;
  uint64_t gpu_poll_pass;
  /* Released CUDA stacks (linked by next_all) whose copy stream still has
   * work queued: freed once it is done, never while a copy may touch
   * their memory. */
  struct dashd_stack *draining;
  struct dashd_metrics metrics;
  /* What systemd gave or asked for; all unused without systemd. */
  int socket_from_systemd; /* the listening fd is systemd's */
  int notify_on;           /* notify_timer runs */
  uint64_t watchdog_usec;  /* 0: no watchdog asked for */
  uv_timer_t notify_timer;
  char last_status[128];
  /* What the backend computes on: "cpu", or the GPU's name and UUID. */
  char device[160];
  /* The process's exit status once the loop ends: 0, or why it must be
   * restarted (dashd__server_fail). */
  int exit_code;
  /* The Prometheus endpoint (http.c), when metrics_listen is set. */
  uv_tcp_t metrics_tcp;
  int metrics_on;
  struct dashd_http_conn *http_conns;
  unsigned n_http_conns;
};

/* http.c: GET /metrics over TCP (metrics_listen). */
struct dashd_http_conn;
int dashd__http_start(struct dashd_server *srv);
void dashd__http_stop(struct dashd_server *srv);

/* server.c */
int dashd__config_allows(const struct dashd_config *cfg, uid_t uid, gid_t gid);
int dashd__server_start(struct dashd_server *srv, uv_loop_t *loop);
void dashd__server_stop(struct dashd_server *srv);
/* dashd's exit status after the GPU failed (dashd(8)). */
#define kDashdExitDeviceLost 3

/* The daemon cannot go on (the GPU failed and poisoned the process's CUDA
 * context): logs why, disconnects every client, stops, and makes the
 * process exit with exit_code so that systemd restarts it. */
void dashd__server_fail(struct dashd_server *srv, int exit_code,
                        const char *why);
/* The same, on the loop's next turn: for callers inside a session's or a
 * stack's teardown. */
void dashd__server_fail_later(struct dashd_server *srv, int exit_code,
                              const char *why);
/* Runs the deferred work (doomed sessions, a pending failure) on the
 * loop's next turn. */
void dashd__server_defer(struct dashd_server *srv);
struct dashd_stack *dashd__server_find_stack(struct dashd_server *srv,
                                             uint64_t id);
void dashd__server_remove_session(struct dashd_server *srv,
                                  struct dashd_session *s);

/* session.c */
int dashd__session_open(struct dashd_server *srv, int fd);
void dashd__session_close(struct dashd_session *s, const char *why);
/* Queues one Envelope for the client; closes the session when its queue
 * would grow past the bound (a client that does not read). */
void dashd__session_send(struct dashd_session *s, Dashpb__Envelope *env);

/* stack.c */
int dashd__stack_register(struct dashd_session *s,
                          const Dashpb__RegisterStack *req, int *fds, int nfds,
                          uint64_t *id_out, char *err, size_t err_size);
/* Takes the snapshot of a Refresh (request_id) and replies to it: at once
 * for a small stack, after the copy on the thread pool for a large one.
 * Returns 0, or DASH_E_INVALID (nothing sent) while an earlier Refresh of
 * the stack is still being copied. */
int dashd__stack_refresh(struct dashd_stack *st, uint64_t step,
                         uint64_t request_id);
/* Hands the newest finished result to the client; 1 when one was
 * handed over. */
int dashd__stack_sync(struct dashd_stack *st);
/* The owner lets go (Unregister or disconnect): a computation that has
 * not started is dropped; the stack is freed now, when the computation
 * running finishes, or once its copies queued on the GPU are done. */
void dashd__stack_release(struct dashd_stack *st);
/* Unregister: releases st. 0: the caller answers request_id now; 1: a
 * CUDA stack's answer comes once the daemon let go of the client's
 * memory. */
int dashd__stack_unregister(struct dashd_stack *st, uint64_t request_id);
/* Called on the loop thread when the worker finished st's job. */
void dashd__stack_job_done(struct dashd_stack *st);
void dashd__result_to_pb(const struct dashd_result *r, int slot,
                         Dashpb__ResultInfo *pb, uint64_t *counts);

/* transport_cuda.c: the GPU side of CUDA_IPC stacks. Each returns 0 or a
 * dash_status with the detail in dash_last_error(). */
/* Opens the client's buffers and events of req into st->cuda and makes
 * the daemon's; on failure st->cuda is left for dashd__cuda_stack_free. */
int dashd__cuda_stack_open(struct dashd_stack *st, struct dashd_session *s,
                           const Dashpb__RegisterStack *req, const int *fds,
                           int nfds);
/* Teardown, first part (loop thread, never waits): queues the fence
 * after whatever the copy stream still holds; 1 when it is complete, so
 * that st->cuda may be freed, 0 while copies are queued (poll
 * dashd__cuda_fence_done), or a dash_status (the GPU failed: free it all
 * the same). 1 for a stack that never queued anything (NULL ok). */
int dashd__cuda_stack_quiesce(struct dashd_stack *st);
/* Closes and frees st->cuda (NULL ok), once its streams are idle: the
 * worker's after the computation, the copy stream once quiesced. */
void dashd__cuda_stack_free(struct dashd_stack *st);
/* Fills the event handles of the RegisterStackReply; results[2] holds
 * the reply's result_event entries. */
void dashd__cuda_stack_events(const struct dashd_stack *st,
                              Dashpb__RegisterStackReply *rr,
                              ProtobufCBinaryData results[2]);
/* Queues the snapshot copy into snaps[snap] (loop thread). On failure
 * snaps[snap] may be half written. */
int dashd__cuda_snapshot(struct dashd_stack *st, int snap);
/* Queues the start fence of a computation on the copy stream (loop
 * thread): it completes once every snapshot copy queued so far and the
 * client's newest release record have. It is not queued again until the
 * computation has ended. */
int dashd__cuda_fence(struct dashd_stack *st);
/* Whether the fence is complete: 1, 0 not yet, or a dash_status. Never
 * waits. */
int dashd__cuda_fence_done(struct dashd_stack *st);
/* Computes job into its result slot on stream (worker thread), once its
 * fence is complete; waits for the daemon's own work only. */
int dashd__cuda_run(struct dashd_job *job, void *stream);

/* metrics.c */
void dashd__metrics_record(struct dashd_server *srv, const struct dashd_job *j);
/* The Prometheus text exposition of the server's state; malloc'd, NULL
 * when out of memory. */
char *dashd__metrics_render(const struct dashd_server *srv);

/* scheduler.c */
int dashd__sched_create(struct dashd_server *srv, struct dashd_sched **out);
void dashd__sched_submit(struct dashd_sched *sched, struct dashd_job *job);
/* Non-zero while a job runs or waits. */
int dashd__sched_busy(const struct dashd_sched *sched);
/* Drops the jobs that have not started; returns how many. */
int dashd__sched_cancel_waiting(struct dashd_sched *sched);
/* Drops job if it waits in the queue (1: it will not run, nor come back
 * to dashd__stack_job_done); 0 when it runs or has run (NULL sched
 * ok). */
int dashd__sched_cancel(struct dashd_sched *sched, struct dashd_job *job);
/* Stops the worker; waits for the job in flight. */
void dashd__sched_destroy(struct dashd_sched *sched);

#endif
