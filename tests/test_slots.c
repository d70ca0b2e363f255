/* The slot compaction of the batched backends (kernels/slots.c): the
 * bookkeeping that keeps the blocks still iterating in the first slots of
 * the GPU's buffers, checked here on every machine against a simulation
 * of the copies it asks for. */
#include <check.h>
#include <stdlib.h>

#include "../kernels/internal.h"

enum { kMaxSlots = 12 };

/* Applies the copies to a model of the buffers (slot → the block whose
 * data it holds) and checks everything the GPU relies on. */
static void check_pattern(size_t a, unsigned mask) {
  unsigned char leave[kMaxSlots];
  int slot_block[kMaxSlots], data[kMaxSlots], src[kMaxSlots], dst[kMaxSlots];
  size_t expect_live = 0, moves = 0;
  for (size_t j = 0; j < a; j++) {
    leave[j] = (mask >> j) & 1u;
    /* Blocks are named out of order, as after earlier compactions. */
    slot_block[j] = data[j] = (int)(100 + 7 * j % 13);
    expect_live += !leave[j];
  }
  size_t live = dash__slots_compact(leave, a, slot_block, src, dst, &moves);
  ck_assert_uint_eq(live, expect_live);
  size_t holes = 0;
  for (size_t j = 0; j < live; j++)
    holes += leave[j];
  ck_assert_uint_eq(moves, holes);
  for (size_t m = 0; m < moves; m++) {
    /* Copies go from a live slot above the new count into a hole below
     * it, so no copy reads a slot another copy writes. */
    ck_assert_int_ge(src[m], (int)live);
    ck_assert_int_lt(src[m], (int)a);
    ck_assert(!leave[src[m]]);
    ck_assert_int_lt(dst[m], (int)live);
    ck_assert(leave[dst[m]]);
    data[dst[m]] = data[src[m]];
  }
  /* After the copies, slot j holds the data of the block the list names,
   * and the live slots hold exactly the blocks that did not leave. */
  for (size_t j = 0; j < live; j++)
    ck_assert_int_eq(data[j], slot_block[j]);
  for (size_t j = 0; j < a; j++) {
    int block = (int)(100 + 7 * j % 13), found = 0;
    for (size_t s = 0; s < live; s++)
      found += slot_block[s] == block;
    ck_assert_int_eq(found, leave[j] ? 0 : 1);
  }
}

START_TEST(test_slots_compact_keeps_every_live_block_once) {
  /* Every leave pattern of up to kMaxSlots slots. */
  for (size_t a = 0; a <= kMaxSlots; a++)
    for (unsigned mask = 0; mask < (1u << a); mask++)
      check_pattern(a, mask);
}
END_TEST

START_TEST(test_slots_compact_moves_nothing_when_the_tail_leaves) {
  unsigned char leave[5] = {0, 0, 0, 1, 1};
  int slots[5] = {4, 3, 2, 1, 0}, src[5], dst[5];
  size_t moves = 99;
  ck_assert_uint_eq(dash__slots_compact(leave, 5, slots, src, dst, &moves), 3);
  ck_assert_uint_eq(moves, 0);
  ck_assert_int_eq(slots[0], 4);
  ck_assert_int_eq(slots[2], 2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("slots");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_slots_compact_keeps_every_live_block_once);
  tcase_add_test(tc, test_slots_compact_moves_nothing_when_the_tail_leaves);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
