/* Device discovery in a build without the CUDA backend. */
#include "../internal.h"

int dash__cuda_device_count(void) {
  return 0;
}
