/* Unit tests of the status table of status.h: names, messages and the
 * thread-local detail of the last failure. */
#define _POSIX_C_SOURCE 200809L

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/internal.h"
#include "dash/roots.h"
#include "dash/status.h"

/* The table as the test reads it, from the same X-macro the library
 * expands, so a code added to the map is tested without editing this. */
static const struct {
  int value;
  const char *name;
  const char *msg;
} kCodes[] = {
#define ROW(name, value, msg) {value, #name, msg},
    DASH_STATUS_MAP(ROW)
#undef ROW
};
#define CODE_COUNT (sizeof(kCodes) / sizeof(kCodes[0]))

START_TEST(test_status_names_and_messages_match_the_table) {
  for (size_t i = 0; i < CODE_COUNT; i++) {
    ck_assert_str_eq(dash_status_name(kCodes[i].value), kCodes[i].name);
    ck_assert_str_eq(dash_strerror(kCodes[i].value), kCodes[i].msg);
    /* Success is 0 and every failure negative. */
    if (strcmp(kCodes[i].name, "OK") == 0)
      ck_assert_int_eq(kCodes[i].value, 0);
    else
      ck_assert_int_lt(kCodes[i].value, 0);
  }
  ck_assert_int_eq(DASH_OK, 0);
  ck_assert_str_eq(dash_status_name(DASH_E_INVALID), "E_INVALID");
  ck_assert_str_eq(dash_strerror(DASH_E_INVALID), "invalid argument");
}
END_TEST

START_TEST(test_status_codes_names_and_messages_are_distinct) {
  for (size_t i = 0; i < CODE_COUNT; i++) {
    ck_assert_str_ne(kCodes[i].msg, "");
    ck_assert_str_ne(dash_status_name(kCodes[i].value), "E_UNKNOWN");
    ck_assert_str_ne(dash_strerror(kCodes[i].value), "unknown error");
    for (size_t j = i + 1; j < CODE_COUNT; j++) {
      ck_assert_int_ne(kCodes[i].value, kCodes[j].value);
      ck_assert_str_ne(dash_status_name(kCodes[i].value),
                       dash_status_name(kCodes[j].value));
      ck_assert_str_ne(dash_strerror(kCodes[i].value),
                       dash_strerror(kCodes[j].value));
    }
  }
}
END_TEST

START_TEST(test_status_unknown_codes_have_fallback_strings) {
  int lowest = 0;
  for (size_t i = 0; i < CODE_COUNT; i++)
    if (kCodes[i].value < lowest)
      lowest = kCodes[i].value;
  const int unknown[] = {1, 2, 77, lowest - 1, -1000, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    ck_assert_str_eq(dash_status_name(unknown[i]), "E_UNKNOWN");
    ck_assert_str_eq(dash_strerror(unknown[i]), "unknown error");
  }
}
END_TEST

START_TEST(test_status_last_error_names_the_field) {
  dash_roots_plan *plan = NULL;
  /* Nothing failed yet in this (forked) process. */
  ck_assert_str_eq(dash_last_error(), "");

  ck_assert_int_eq(dash_roots_plan_create(&plan, 4, 0, NULL), DASH_E_INVALID);
  ck_assert_ptr_null(plan);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "block_size"));

  ck_assert_int_eq(dash_roots_plan_create(&plan, 0, 4, NULL), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "num_blocks"));

  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  o.max_steps = 0;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 4, 4, &o), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "max_steps"));

  dash_method m;
  ck_assert_int_eq(dash_method_parse("no-such-method", &m), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "no-such-method"));
}
END_TEST

static void *fail_elsewhere(void *arg) {
  dash_roots_plan *plan = NULL;
  int *rc = arg;
  *rc = dash_roots_plan_create(&plan, 0, 4, NULL);
  /* This thread sees its own failure... */
  if (strstr(dash_last_error(), "num_blocks") == NULL)
    *rc = 1;
  return NULL;
}

/* The detail is per thread: a failure on another thread leaves this
 * thread's message as it was. */
/* A failure may wrap the detail it replaces: the layers of the CUDA
 * transport say what they were doing around what failed below. */
START_TEST(test_status_failure_wraps_the_previous_detail) {
  dash__fail(DASH_E_BAD_MEMORY, "fd %d is no allocation", 14);
  ck_assert_int_eq(dash__fail(DASH_E_BAD_MEMORY, "cannot map the %s: %s",
                              "statistics", dash_last_error()),
                   DASH_E_BAD_MEMORY);
  ck_assert_str_eq(dash_last_error(),
                   "cannot map the statistics: fd 14 is no allocation");
}
END_TEST

START_TEST(test_status_last_error_is_per_thread) {
  dash_roots_plan *plan = NULL;
  ck_assert_int_eq(dash_roots_plan_create(&plan, 4, 0, NULL), DASH_E_INVALID);
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "block_size"));
  pthread_t t;
  int rc = 0;
  ck_assert_int_eq(pthread_create(&t, NULL, fail_elsewhere, &rc), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_int_eq(rc, DASH_E_INVALID);
  /* ...and this one still sees its own. */
  ck_assert_ptr_nonnull(strstr(dash_last_error(), "block_size"));
}
END_TEST

static Suite *status_suite(void) {
  Suite *s = suite_create("status");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 10);
  tcase_add_test(tc, test_status_names_and_messages_match_the_table);
  tcase_add_test(tc, test_status_codes_names_and_messages_are_distinct);
  tcase_add_test(tc, test_status_unknown_codes_have_fallback_strings);
  suite_add_tcase(s, tc);
  tc = tcase_create("last error");
  tcase_set_timeout(tc, 10);
  tcase_add_test(tc, test_status_last_error_names_the_field);
  tcase_add_test(tc, test_status_last_error_is_per_thread);
  tcase_add_test(tc, test_status_failure_wraps_the_previous_detail);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(status_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
