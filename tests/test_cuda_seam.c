/* The CUDA seam of roots.h: device discovery and the CUDA backend's
 * answers. Skips (exit 77) without a device. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "dash/roots.h"

START_TEST(test_cuda_plan_answers_with_a_clear_status) {
  /* A device is present, so the backend must either make a plan or say
   * precisely why it cannot; it must never claim there is no device. */
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  dash_roots_plan *plan = NULL;
  int rc = dash_roots_plan_create(&plan, 4, 64, &o);
  ck_assert_int_ne(rc, DASH_E_NO_DEVICE);
  if (rc == 0) {
    ck_assert_int_eq(dash_roots_plan_options(plan)->backend, DASH_BACKEND_CUDA);
    dash_roots_plan_destroy(plan);
  } else {
    ck_assert_int_eq(rc, DASH_E_UNSUPPORTED);
    ck_assert_str_ne(dash_last_error(), "");
  }
}
END_TEST

int main(void) {
  if (!dash_roots_cuda_available()) {
    printf("skipped: no CUDA device\n");
    return 77;
  }
  Suite *s = suite_create("cuda_seam");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_cuda_plan_answers_with_a_clear_status);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
