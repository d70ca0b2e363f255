/* The CUDA backend's shared names: the per-device context, the plan state,
 * error mapping and the launchers of kernels/cuda/. Only .cu files include
 * this header.
 *
 * Layout: every block is B×B row-major, as in roots.h. cuBLAS is
 * column-major, so a row-major product C = A·B is computed as the
 * column-major Cᵀ = Bᵀ·Aᵀ, which is the same memory (dash__cu_gemm does
 * this once for every caller).
 *
 * Slots: the iterations keep the blocks still iterating in the first `a`
 * slots of their buffers, so every batched call covers exactly the live
 * blocks; slot_block[j] names the block in slot j. Residuals are kept by
 * slot and read before any compaction; flags and scales are indexed by
 * block, so moving a block between slots moves only its matrices. */
#ifndef DASH_KERNELS_CUDA_H
#define DASH_KERNELS_CUDA_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stddef.h>
#include <stdint.h>

#include "../internal.h"

/* Maps a CUDA runtime, cuBLAS or cuSOLVER status to a dash_status: 0 on
 * success, DASH_E_NOMEM for allocation failures, else DASH_E_CUDA with
 * "expr failed at file:line: name" for dash_last_error(). */
int dash__cuda_status(cudaError_t e, const char *expr, const char *file,
                      int line);
int dash__cuda_status(cublasStatus_t e, const char *expr, const char *file,
                      int line);
int dash__cuda_status(cusolverStatus_t e, const char *expr, const char *file,
                      int line);

/* Non-zero for an error that poisons the context (DASH_E_DEVICE_LOST). */
int dash__cuda_sticky(cudaError_t e);

/* The plugin's own copy of its last failure message (plugin.cu), for
 * messages that wrap it. */
const char *dash__cuda_last_message(void);

/* Writes "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints
 * it (context.cu). */
void dash__cuda_uuid_text(const cudaUUID_t *id, char *buf, size_t len);

/* The entries of struct dash__cuda_ipc (ipc.cu); internal.h documents
 * them. */
int dash__cuda_ipc_export_mem(int device, const void *ptr, size_t bytes,
                              unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
                              uint64_t *offset);
int dash__cuda_ipc_device_uuid(int device, char *uuid, size_t len);
int dash__cuda_ipc_event_create(
    int device, void **event, unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES]);
int dash__cuda_ipc_event_open(
    int device, const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES],
    void **event);
void dash__cuda_ipc_event_destroy(void *event);
int dash__cuda_ipc_event_record(int device, void *event, void *stream);
int dash__cuda_ipc_stream_wait(int device, void *stream, void *event);
int dash__cuda_ipc_mem_open(
    const unsigned char handle[DASH_CUDA_IPC_HANDLE_BYTES], void **base,
    size_t *size);
void dash__cuda_ipc_mem_close(void *base);
int dash__cuda_ipc_stream_create(int high, void **stream);
void dash__cuda_ipc_stream_destroy(void *stream);
int dash__cuda_ipc_stream_sync(void *stream);
int dash__cuda_ipc_alloc(void **ptr, size_t bytes);
void dash__cuda_ipc_free(void *ptr);
int dash__cuda_ipc_copy(void *dst, const void *src, size_t bytes, void *stream);
int dash__cuda_ipc_host_register(int device, void *p, size_t bytes);
int dash__cuda_ipc_host_unregister(int device, void *p);
int dash__cuda_ipc_copy_on(int device, void *dst, const void *src, size_t bytes,
                           void *stream);
int dash__cuda_ipc_event_sync(int device, void *event);
int dash__cuda_ipc_mem_check(int device, const void *ptr, size_t bytes);
int dash__cuda_ipc_vmm_owns(int device, const void *ptr);
int dash__cuda_ipc_vmm_export(int device, const void *ptr, size_t bytes,
                              int *fds, uint64_t *sizes, size_t max,
                              size_t *count, uint64_t *offset);
int dash__cuda_ipc_vmm_open(const int *fds, const uint64_t *sizes, size_t count,
                            void **base);
void dash__cuda_ipc_vmm_close(void *base, const uint64_t *sizes, size_t count);
int dash__cuda_ipc_vmm_alloc(int device, size_t piece, size_t pieces,
                             void **ptr);
void dash__cuda_ipc_vmm_free(void *ptr);
int dash__cuda_ipc_event_query(void *event);
int dash__cuda_ipc_current_device(void);

/* Runs x; on failure stores the status in the enclosing function's `rc`
 * and jumps to its `out` label. */
#define DASH_CUDA_TRY(x)                                           \
  do {                                                             \
    int dash_rc_ = dash__cuda_status((x), #x, __FILE__, __LINE__); \
    if (dash_rc_ < 0) {                                            \
      rc = dash_rc_;                                               \
      goto out;                                                    \
    }                                                              \
  } while (0)

/* Checks the launch that just happened (bad configuration, no kernel
 * image for this device). */
#define DASH_CUDA_LAUNCHED() DASH_CUDA_TRY(cudaGetLastError())

/* Everything that talks to one device: handles, the plan's own stream
 * (non-blocking, so it never waits on the legacy default stream) and the
 * cuBLAS workspace. One per plan; plans never share handles, so plans on
 * different threads never contend. */
struct dash__cuda_ctx {
  int device;
  cudaStream_t stream;
  cublasHandle_t blas;
  cusolverDnHandle_t solver;
  cusolverDnParams_t solver_params;
  void *blas_workspace;
  size_t blas_workspace_bytes;
  cudaEvent_t check;  /* recorded after each residual download */
  cudaEvent_t caller; /* orders the plan's work after the caller's stream */
};

/* On the current device; the stream at the lowest priority (priority 0)
 * or the highest (1). */
int dash__cuda_ctx_init(struct dash__cuda_ctx *ctx, int priority);
void dash__cuda_ctx_free(struct dash__cuda_ctx *ctx);

/* One copy of a B×B matrix: from slot/block `src` of one buffer to
 * slot/block `dst` of another, times `scale`; `half` selects the lower
 * B×B half of a 2B×B slot (the Z of NewtonDB's [Y; Z] pair). */
struct dash__cuda_move {
  int src;
  int dst;
  int half;
  float scale;
};

/* Precision of the stored iterates: the operand type of every product. */
enum dash__cuda_storage {
  DASH_CUDA_F32 = 0, /* fp32 and TF32 */
  DASH_CUDA_BF16 = 1,
  DASH_CUDA_F16 = 2
};

/* The CUDA backend state of one plan. Host arrays are indexed by block
 * unless they say slot. */
struct dash__cuda_plan {
  struct dash__cuda_ctx ctx;
  const struct dash_roots_plan *plan;
  size_t n, b;
  enum dash__cuda_storage storage;
  size_t elem;                 /* bytes of one stored element */
  cublasComputeType_t compute; /* of every product of the iteration */
  int k;                       /* power-iteration vectors */

  /* Iteration buffers (storage type): w and t hold 2·n·B² elements, e
   * n·B². NewtonDB keeps [Y; Z] pairs in w/t and E in e; Coupled Newton
   * and Chebyshev carve single B×B buffers out of the three. */
  void *w, *t, *e;
  /* Power iteration: M + εI in bf16, and the vectors. */
  __nv_bfloat16 *mh, *vh;
  float *pv, *pw;
  /* Per block (device). */
  double *sumsq, *trace; /* of A, for the scale and the damping */
  int *nonfinite;        /* input flags */
  int *bad_out;          /* output flags: non-finite values written */
  /* By slot: ‖I − E‖_F² of the first and the last E (NewtonDB), and
   * max |M − I| as float bits (Coupled Newton). */
  double *r_first, *r_cur;
  unsigned int *r_max;
  float *lam, *delta, *inv_s, *out_scale, *z0, *coef;
  int *slot_block;               /* slot → block */
  struct dash__cuda_move *moves; /* 2·n: emits, then compactions */
  /* Host mirrors: pinned downloads, pageable uploads (a pageable
   * cudaMemcpyAsync returns once the source is staged, so the host may
   * change it at once). */
  double *h_sumsq, *h_trace, *h_r_first, *h_r_cur;
  int *h_nonfinite, *h_bad_out;
  unsigned int *h_r_max;
  float *h_lam;
  int *h_slot_block;
  unsigned char *h_leave; /* per slot: leaves at the next retire */
  int *h_src, *h_dst;     /* compaction copies, from dash__slots_compact */
  struct dash__cuda_move *h_moves;
  float *h_scale;       /* 3·n: inv_s, out_scale, z0 */
  unsigned char *h_had; /* per block, during the fallback */
  double *h_s;          /* the scale s of each block, exact */
  /* EVD: buffers for `evd_chunk` blocks, fp64-sized. */
  size_t evd_chunk;
  void *ev_a, *ev_x, *ev_w;
  int *ev_info;
  double *ev_top, *ev_cond;
  void *ev_work;
  size_t ev_work_bytes;
  void *ev_hwork;
  size_t ev_hwork_bytes;
  int *ev_list;           /* host: the blocks EVD computes */
  unsigned char *ev_redo; /* host, per chunk slot: needs fp64 */
  int *h_ev_info;
  double *h_ev_top, *h_ev_cond;
  unsigned char *use_f64; /* per block: EVD needed fp64 last time */
  /* Staging for the host-pointer path. */
  float *d_in, *d_out;
  /* Per-block outcome of one execution (host). */
  struct dash__cuda_block *blk;
};

/* What the method drivers tell the per-block verdict. */
struct dash__cuda_block {
  int steps;
  float r_first, r_last;
  int converged;
  int active;  /* still to be computed by the method */
  int written; /* its output has been written this execution */
  int evd;     /* computed (or to be computed) by EVD */
};

/* Row-major C = alpha·A·B + beta·C for `batch` products, A m×k, B k×n,
 * C m×n, packed (leading dimension = columns), with batch strides in
 * elements; ab and c are the element types, compute the compute type. */
int dash__cu_gemm(struct dash__cuda_ctx *ctx, cudaDataType ab, cudaDataType c,
                  cublasComputeType_t compute, int m, int n, int k, float alpha,
                  const void *a, long long sa, const void *b, long long sb,
                  float beta, void *cm, long long sc, size_t batch);
/* Column-major X = W·Wᵀ for `batch` b×b blocks (the EVD's rebuild), in
 * the operands' type, CUDA_R_32F or CUDA_R_64F, with exact compute of
 * that precision. */
int dash__cu_gemm_nt(struct dash__cuda_ctx *ctx, cudaDataType type, int b,
                     const void *w, void *x, size_t batch);

/* The cudaDataType of a storage type. */
cudaDataType dash__cuda_type(enum dash__cuda_storage s);

/* Elementwise and reduction launchers (common.cu); T is float,
 * __nv_bfloat16 or __half, and `stride` is the distance between slots in
 * elements. Each returns 0 or a dash_status. */
template <typename T>
int dash__cu_set_identity(cudaStream_t s, T *m, size_t slots, size_t stride,
                          int b, float c);
/* acc[j] += ‖I − M_j‖_F² for the slots j < slots. */
template <typename T>
int dash__cu_residual_fro(cudaStream_t s, const T *m, size_t slots,
                          size_t stride, int b, double *acc);
/* acc[j] = max(acc[j], max_ik |(M_j − I)_ik|) as float bits. */
template <typename T>
int dash__cu_residual_max(cudaStream_t s, const T *m, size_t slots,
                          size_t stride, int b, unsigned int *acc);
/* m_j += coef[slot_block[j]·cstride]·I. */
template <typename T>
int dash__cu_add_identity(cudaStream_t s, T *m, size_t slots, size_t stride,
                          int b, const int *slot_block, const float *coef,
                          size_t cstride);
/* out[dst] = scale·float(src[src]) for each move; a non-finite value
 * written sets bad[dst] (bad may be NULL). Slots of src are `stride`
 * elements apart, half selects the element offset b². */
template <typename T>
int dash__cu_emit(cudaStream_t s, const T *src, size_t stride, float *out,
                  const struct dash__cuda_move *moves, size_t count, int b,
                  int *bad);
/* buf[dst] = buf[src], whole slots of `stride` elements. */
template <typename T>
int dash__cu_move_slots(cudaStream_t s, T *buf, size_t stride,
                        const struct dash__cuda_move *moves, size_t count);

/* Reads each block of `in` (n blocks of b²): sums of squares and traces
 * into sumsq/trace, a flag for any non-finite value; with mh, writes
 * bf16(A + εI) there. The accumulators must be zeroed by the caller. */
int dash__cu_stats(cudaStream_t s, const float *in, size_t n, int b, double eps,
                   double *sumsq, double *trace, int *nonfinite,
                   __nv_bfloat16 *mh);

/* Power iteration (power_iter.cu): lam[i] = λ̂_max of every block from the
 * bf16 copy mh, for blocks with their damping delta[i] set. */
int dash__cuda_power_iter(struct dash__cuda_plan *cp);

/* The methods (one file each). Each computes every block with
 * blk[i].active set, writes its output to `out` (device), fills blk[] and
 * clears `active` of the blocks it finished. */
int dash__cuda_newton_db(struct dash__cuda_plan *cp, const float *in,
                         float *out);
int dash__cuda_coupled_newton(struct dash__cuda_plan *cp, const float *in,
                              float *out);
int dash__cuda_chebyshev(struct dash__cuda_plan *cp, const float *in,
                         float *out);
/* EVD of the blocks with blk[i].evd set; sets `written` of those it
 * computed and lam_max. */
int dash__cuda_evd(struct dash__cuda_plan *cp, const float *in, float *out,
                   float *lam_max);
/* Workspace sizing of the EVD, at plan creation. */
int dash__cuda_evd_init(struct dash__cuda_plan *cp);

/* Exchanges two buffer pointers: the iterations ping-pong between
 * buffers as each product lands. */
template <typename T>
static inline void dash__swap(T **a, T **b) {
  T *t = *a;
  *a = *b;
  *b = t;
}

/* Appends a copy of slot `src` (its lower B×B half when `lower`) times
 * `scale` into block `dst` to a host list of moves. */
static inline void dash__cuda_add_move(struct dash__cuda_move *list,
                                       size_t *count, size_t src, int dst,
                                       int lower, float scale) {
  struct dash__cuda_move *mv = &list[(*count)++];
  mv->src = (int)src;
  mv->dst = dst;
  mv->half = lower;
  mv->scale = scale;
}

/* Retires the slots flagged in h_leave (slots 0..*a−1): emits the first
 * `emits` moves of h_moves (src = slot, dst = block) from emit_src to out,
 * fills the holes with the live slots from the end of every buffer in
 * bufs (slots `stride` elements apart), updates the slot list on both
 * sides and *a. Ordered on the plan's stream. */
template <typename T>
int dash__cuda_retire(struct dash__cuda_plan *cp, size_t *a, size_t emits,
                      const T *emit_src, size_t emit_stride, float *out,
                      T *const *bufs, int nbufs, size_t stride);

/* Helpers of the method drivers (backend.cu). Uploads the first `a`
 * entries of h_slot_block. */
int dash__cuda_upload_slots(struct dash__cuda_plan *cp, size_t a);
/* Fills the slot list with the active blocks; returns their count. */
size_t dash__cuda_active_slots(struct dash__cuda_plan *cp);

/* Elementwise kernels run kDashThreads threads per block, each on
 * kDashPerThread elements of one matrix: blockIdx.x picks the slot and
 * blockIdx.y (grid-stride) the tile of kDashTile elements. */
#define kDashThreads 256
#define kDashPerThread 32
#define kDashTile ((size_t)kDashThreads * kDashPerThread)

/* Device-side helpers shared by the kernel files. */
#ifdef __CUDACC__
/* Loads and stores of the storage types, computing in fp32. */
__device__ inline float dash__load(const float *p) {
  return *p;
}
__device__ inline float dash__load(const __nv_bfloat16 *p) {
  return __bfloat162float(*p);
}
__device__ inline float dash__load(const __half *p) {
  return __half2float(*p);
}
__device__ inline float dash__load(const double *p) {
  return (float)*p;
}
__device__ inline void dash__store(float *p, float v) {
  *p = v;
}
__device__ inline void dash__store(double *p, float v) {
  *p = v;
}
__device__ inline void dash__store(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}
__device__ inline void dash__store(__half *p, float v) {
  *p = __float2half_rn(v);
}

/* Loops `e` over this thread's elements of a matrix of `len` elements:
 * tiles blockIdx.y, blockIdx.y + gridDim.y, …, threads strided within a
 * tile so that a warp's accesses are contiguous. */
#define DASH_FOR_TILES_LEN(len)                                     \
  for (size_t tile_ = blockIdx.y; tile_ * kDashTile < (len);        \
       tile_ += gridDim.y)                                          \
    for (size_t e = tile_ * kDashTile + threadIdx.x,                \
                end_ = min((tile_ + 1) * kDashTile, (size_t)(len)); \
         e < end_; e += kDashThreads)

/* In a b×b row-major matrix, element e = r·b + c lies on the diagonal
 * exactly when e ≡ 0 (mod b + 1), since |c − r| < b + 1. */
__device__ inline bool dash__on_diagonal(size_t e, int b) {
  return e % ((size_t)b + 1) == 0;
}

/* Sum over the thread block, in float or double; the result is valid in
 * thread 0. Callers that use it twice in a row put __syncthreads()
 * between. */
template <typename V>
__device__ inline V dash__block_sum(V v) {
  __shared__ V part[kDashThreads / 32];
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    part[warp] = v;
  __syncthreads();
  v = threadIdx.x < kDashThreads / 32 ? part[threadIdx.x] : (V)0;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
#endif

/* The grid of an elementwise kernel over `slots` matrices of `elems`
 * elements each. */
static inline dim3 dash__grid(size_t slots, size_t elems) {
  size_t tiles = (elems + kDashTile - 1) / kDashTile;
  if (tiles > 65535)
    tiles = 65535;
  return dim3((unsigned)slots, (unsigned)tiles, 1);
}

#endif
