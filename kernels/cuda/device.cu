/* The CUDA backend's seam in the root library: device discovery. The
 * batched kernels join this directory as the CUDA backend grows. */
#include <cuda_runtime.h>

extern "C" int dash__cuda_device_count(void);

extern "C" int dash__cuda_device_count(void) {
  int count = 0;
  /* No driver, no device or a broken install all mean "no CUDA here"; the
   * caller turns 0 into DASH_E_NO_DEVICE with its own message. */
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}
