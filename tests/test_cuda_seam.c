/* The CUDA seam of roots.h: device discovery and the CUDA backend's
 * answers. Skips (exit 77) without a device. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dash/roots.h"

START_TEST(test_cuda_plan_is_made_on_a_device) {
  /* A device is present and the build has the backend, so a CUDA plan is
   * made, with AUTO fields resolved for it (AUTO method is EVD on CUDA). */
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  o.method = DASH_METHOD_AUTO;
  dash_roots_plan *plan = NULL;
  int rc = dash_roots_plan_create(&plan, 4, 64, &o);
  ck_assert_msg(rc == 0, "plan_create: %s (%s)", dash_status_name(rc),
                dash_last_error());
  ck_assert_int_eq(dash_roots_plan_options(plan)->backend, DASH_BACKEND_CUDA);
  ck_assert_int_eq(dash_roots_plan_options(plan)->method, DASH_METHOD_EVD);
  dash_roots_plan_destroy(plan);
}
END_TEST

START_TEST(test_cuda_describe_names_the_gpu_by_uuid) {
  char text[160];
  ck_assert_int_eq(dash_roots_cuda_describe(text, sizeof(text)), 0);
  /* "NAME (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", as nvidia-smi. */
  const char *uuid = strstr(text, " (GPU-");
  ck_assert_msg(uuid != NULL && uuid > text, "'%s'", text);
  ck_assert_uint_eq(strlen(uuid), strlen(" (GPU-") + 36 + 1);
  ck_assert_int_eq(uuid[strlen(uuid) - 1], ')');
  /* Truncation keeps the string terminated. */
  char small[8];
  ck_assert_int_eq(dash_roots_cuda_describe(small, sizeof(small)), 0);
  ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
  ck_assert_int_eq(dash_roots_cuda_describe(NULL, 4), DASH_E_INVALID);
}
END_TEST

int main(void) {
  if (!dash_roots_cuda_available()) {
    printf("skipped: no CUDA device\n");
    return 77;
  }
  Suite *s = suite_create("cuda_seam");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_cuda_plan_is_made_on_a_device);
  tcase_add_test(tc, test_cuda_describe_names_the_gpu_by_uuid);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  /* dash_roots_cuda_available() initialized CUDA in this process, and a
   * child forked after that cannot use CUDA (cuInit answers
   * CUDA_ERROR_NOT_INITIALIZED), so the test runs here, unforked. */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
