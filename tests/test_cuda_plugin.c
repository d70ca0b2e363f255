/* The CUDA backend as a plugin (kernels/cuda_loader.c): in a build with
 * CUDA the plugin loads here even without a GPU (its libraries and
 * symbols are all there), and with DASH_CUDA_PLUGIN=none, or without the
 * plugin, the library says why CUDA is unavailable and the CPU backend
 * works as ever. Run twice by ctest: as is, and with DASH_CUDA_PLUGIN=none
 * (test_cuda_plugin_absent). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/internal.h"

static int plugin_disabled(void) {
  const char *env = getenv("DASH_CUDA_PLUGIN");
  return env != NULL && strcmp(env, "none") == 0;
}

START_TEST(test_cuda_plugin_loads_where_the_build_has_cuda) {
  const char *why = "unset";
  const struct dash__cuda_plugin *p = dash__cuda_load_plugin(&why);
#ifdef DASH_HAVE_CUDA
  ck_assert_msg(p != NULL, "the plugin did not load: %s", why);
  ck_assert_int_eq(p->abi, DASH_CUDA_PLUGIN_ABI);
  ck_assert_ptr_nonnull(p->tools);
  /* Loading twice gives the one plugin. */
  ck_assert_ptr_eq(dash__cuda_load_plugin(NULL), p);
  /* Without a device it answers, and says there is none. */
  if (p->device_count() == 0)
    printf("  plugin loaded; no device\n");
#else
  ck_assert_ptr_null(p);
  ck_assert_str_ne(why, "");
#endif
}
END_TEST

START_TEST(test_cuda_plugin_absent_means_no_device_and_says_why) {
  const char *why = NULL;
  ck_assert_ptr_null(dash__cuda_load_plugin(&why));
  ck_assert_ptr_nonnull(strstr(why, "DASH_CUDA_PLUGIN=none"));
  ck_assert_int_eq(dash_roots_cuda_available(), 0);

  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.backend = DASH_BACKEND_CUDA;
  dash_roots_plan *plan = NULL;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 2, 4, &o), DASH_E_NO_DEVICE);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "no CUDA backend"));
  char text[32];
  ck_assert_int_eq(dash_roots_cuda_describe(text, sizeof(text)),
                   DASH_E_NO_DEVICE);

  /* AUTO falls back to the CPU, which computes: the root of 4·I is I/√2
   * for p = 2. */
  o.backend = DASH_BACKEND_AUTO;
  o.root = 2;
  o.method = DASH_METHOD_EVD;
  float in[32] = {0}, out[32];
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < 4; i++)
      in[k * 16 + i * 5] = 4.0f;
  dash_roots_report rep;
  ck_assert_int_eq(dash_roots_compute(out, in, 2, 4, &o, NULL, &rep), 0);
  ck_assert_int_eq(rep.backend, DASH_BACKEND_CPU);
  ck_assert_float_eq_tol(out[0], 0.5f, 1e-6f);
  ck_assert_float_eq_tol(out[1], 0.0f, 1e-6f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_plugin");
  TCase *tc = tcase_create("core");
  if (plugin_disabled())
    tcase_add_test(tc, test_cuda_plugin_absent_means_no_device_and_says_why);
  else
    tcase_add_test(tc, test_cuda_plugin_loads_where_the_build_has_cuda);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
