/**
 * @file npy.h
 * @brief Reading stacks of square matrices from .npy files and writing
 *        float32 arrays to .npy files, for the tools and their tests.
 *
 * Only what the tools need: the reader accepts format versions 1.0, 2.0 and
 * 3.0, dtypes `<f4` and `<f8`, C order, and shapes (N, B, B) or (B, B); it
 * converts to float32. The writer produces version 1.0, `<f4`, C order.
 *
 * Every function returns 0 or a negative ::dash_status and, on failure,
 * writes a one-line message naming the problem into the caller's buffer
 * (truncated to fit; on success the buffer holds an empty string). Nothing
 * is printed.
 */
#ifndef DASH_TOOLS_NPY_H
#define DASH_TOOLS_NPY_H

#include <stddef.h>

#include "dash/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Longest header the reader accepts, in bytes; numpy's own default. */
#define DASH_NPY_MAX_HEADER 10000

/** Most dimensions dash_npy_write_f32() writes. */
#define DASH_NPY_MAX_DIMS 8

/** A stack of N square B×B float32 matrices read from a .npy file. */
typedef struct dash_npy_stack {
  /** N·B·B floats, C order; owned, freed by dash_npy_stack_free(). */
  float *data;
  /** N; 1 when the file held a single (B, B) matrix. */
  size_t num_blocks;
  /** B. */
  size_t block_size;
  /** Rank of the array in the file: 3 for (N, B, B), 2 for (B, B). */
  int ndim;
  /** Bytes per element in the file: 4 (`<f4`) or 8 (`<f8`). */
  int file_itemsize;
} dash_npy_stack;

/**
 * Reads a stack of square matrices from the .npy file at @p path.
 *
 * Sizes are checked against ::DASH_ROOTS_MAX_BLOCKS,
 * ::DASH_ROOTS_MAX_BLOCK_SIZE and ::DASH_ROOTS_MAX_BYTES, and the data must
 * fill the rest of the file exactly, before anything is allocated.
 *
 * @param out       receives the stack; zeroed on failure.
 * @param path      the file to read.
 * @param msg       receives a one-line message on failure.
 * @param msg_size  size of @p msg in bytes (may be 0).
 * @return 0; ::DASH_E_IO when the file cannot be opened or read;
 *         ::DASH_E_FORMAT for a malformed or unsupported file (bad magic or
 *         version, truncated header or data, bad header dict, dtype other
 *         than `<f4`/`<f8`, Fortran order, a shape that is not (N, B, B) or
 *         (B, B) with square non-empty blocks, trailing bytes);
 *         ::DASH_E_TOO_LARGE for a header longer than ::DASH_NPY_MAX_HEADER
 *         or a shape over the limits; ::DASH_E_NOMEM.
 */
int dash_npy_read_stack(dash_npy_stack *out, const char *path, char *msg,
                        size_t msg_size);

/** Frees the data of @p stack and zeroes it. NULL is allowed. */
void dash_npy_stack_free(dash_npy_stack *stack);

/**
 * Writes @p data as a float32 .npy file (version 1.0, C order) of the given
 * shape. The file appears atomically: the array is written to
 * "<path>.tmp", flushed to disk and renamed over @p path, so a failure
 * leaves @p path as it was and removes the temporary file.
 *
 * @param path      the file to create or replace.
 * @param data      the product of @p shape floats.
 * @param shape     @p ndim dimensions.
 * @param ndim      0..::DASH_NPY_MAX_DIMS.
 * @param msg       receives a one-line message on failure.
 * @param msg_size  size of @p msg in bytes (may be 0).
 * @return 0; ::DASH_E_INVALID for a NULL pointer or a bad rank;
 *         ::DASH_E_TOO_LARGE when the element count overflows;
 *         ::DASH_E_NOMEM; ::DASH_E_IO when writing, flushing or renaming
 *         fails.
 */
int dash_npy_write_f32(const char *path, const float *data, const size_t *shape,
                       int ndim, char *msg, size_t msg_size);

#ifdef __cplusplus
}
#endif

#endif /* DASH_TOOLS_NPY_H */
