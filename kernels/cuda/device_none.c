/* The CUDA backend's entry points in a build without CUDA: no device, and
 * a plan for one can never be made (roots.c answers DASH_E_NO_DEVICE
 * before it gets here). */
#include "../internal.h"

int dash__cuda_device_count(void) {
  return 0;
}

int dash__cuda_describe(char *buf, size_t len) {
  return dash__fail(DASH_E_NO_DEVICE, "this build has no CUDA backend");
}

int dash__cuda_plan_init(struct dash_roots_plan *plan) {
  return dash__fail(DASH_E_UNSUPPORTED, "this build has no CUDA backend");
}

int dash__cuda_execute(struct dash_roots_plan *plan, float *out,
                       const float *in, dash_block_info *info, int on_device,
                       void *stream) {
  return dash__fail(DASH_E_UNSUPPORTED, "this build has no CUDA backend");
}

void dash__cuda_plan_free(struct dash_roots_plan *plan) {}
