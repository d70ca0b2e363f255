/* Slot compaction for the batched backends: pure bookkeeping, kept apart
 * from the device code so that it is tested on every machine. */
#include "internal.h"

size_t dash__slots_compact(const unsigned char *leave, size_t a,
                           int *slot_block, int *move_src, int *move_dst,
                           size_t *moves) {
  size_t live = 0, count = 0, src = a;
  for (size_t j = 0; j < a; j++)
    live += !leave[j];
  /* Each hole below `live` takes the last live slot at or above `live`;
   * there are exactly as many of those as holes, so `src` never drops
   * below `live` and the copies never overlap. */
  for (size_t hole = 0; hole < live; hole++) {
    if (!leave[hole])
      continue;
    do
      src--;
    while (leave[src]);
    move_src[count] = (int)src;
    move_dst[count] = (int)hole;
    count++;
    slot_block[hole] = slot_block[src];
  }
  *moves = count;
  return live;
}
