/* dash-bench's own CUDA work, in its own file: the device's name, device
 * copies of a stack and the cuBLAS roofline. Plain C over the CUDA runtime
 * and cuBLAS; in a build without CUDA every function fails with
 * DASH_E_NO_DEVICE.
 *
 * Every function returns 0 or a negative dash_status and never prints; on
 * failure dash__bench_cuda_error() holds one line saying which call failed
 * and why. */
#ifndef DASH_TOOLS_BENCH_CUDA_H
#define DASH_TOOLS_BENCH_CUDA_H

#include <stddef.h>

#include "dash/roots.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The last failure of a function below, one line without a newline. */
const char *dash__bench_cuda_error(void);

/* The current device (the one a plan made now would use): its name, e.g.
 * "NVIDIA H100 80GB HBM3", and a longer description with its index,
 * compute capability, SM count and memory. Either buffer may be NULL. */
int dash__bench_cuda_device(char *name, size_t name_len, char *desc,
                            size_t desc_len);

/* Allocates `bytes` of zeroed device memory into *dev (NULL on failure). */
int dash__bench_cuda_alloc(void **dev, size_t bytes);
/* Frees what dash__bench_cuda_alloc() gave; NULL is allowed. */
void dash__bench_cuda_free(void *dev);
/* Copies host memory to the device and waits until it is there. */
int dash__bench_cuda_upload(void *dev, const void *host, size_t bytes);
/* Copies device memory to the host once the device is idle. */
int dash__bench_cuda_download(void *host, const void *dev, size_t bytes);
/* Waits until the current device has finished all its work. */
int dash__bench_cuda_sync(void);

/* cuBLAS's throughput on the shape of a stack: cublasGemmStridedBatchedEx
 * over n distinct b×b×b products at once, in `precision` (fp32 and tf32 on
 * fp32 data, bf16 and fp16 on 16-bit data; fp32 accumulation always),
 * timed with CUDA events. One untimed round, then at least `rounds` rounds
 * and `min_ms` milliseconds of them; the fastest gives *gflops, counting
 * 2b³ flops per product. */
int dash__bench_cuda_roofline(size_t n, size_t b, dash_precision precision,
                              int rounds, double min_ms, double *gflops);

#ifdef __cplusplus
}
#endif

#endif
