/**
 * @file status.h
 * @brief Status codes shared by every dashd library and program.
 *
 * Every function of the dash libraries that can fail returns an `int`: 0 on
 * success or a negative ::dash_status. dash_strerror() gives a sentence,
 * dash_status_name() the symbolic name, and dash_last_error() the detail of
 * the most recent failure on the calling thread.
 */
#ifndef DASH_STATUS_H
#define DASH_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DASH_BUILDING) && defined(__GNUC__)
#define DASH_API __attribute__((visibility("default")))
#else
#define DASH_API
#endif

/**
 * The one table of status codes: X(NAME, value, message). The enum,
 * dash_strerror() and dash_status_name() are all generated from it.
 */
#define DASH_STATUS_MAP(X)                                       \
  X(OK, 0, "success")                                            \
  X(E_INVALID, -1, "invalid argument")                           \
  X(E_NOMEM, -2, "out of memory")                                \
  X(E_TOO_LARGE, -3, "size exceeds a limit")                     \
  X(E_UNSUPPORTED, -4, "not supported by this backend or build") \
  X(E_NO_DEVICE, -5, "no CUDA device")                           \
  X(E_CUDA, -6, "CUDA error")                                    \
  X(E_LAPACK, -7, "LAPACK error")                                \
  X(E_IO, -8, "input/output error")                              \
  X(E_FORMAT, -9, "malformed input")                             \
  X(E_DISCONNECTED, -10, "not connected to the daemon")          \
  X(E_PROTOCOL, -11, "protocol error")                           \
  X(E_TIMEOUT, -12, "timed out")                                 \
  X(E_PERMISSION, -13, "permission denied")                      \
  X(E_LIMIT, -14, "a configured limit was reached")              \
  X(E_NOT_FOUND, -15, "no such object")                          \
  X(E_BAD_MEMORY, -16, "shared memory unusable")                 \
  X(E_VERSION, -17, "version mismatch")                          \
  X(E_INTERNAL, -18, "internal error")                           \
  X(E_DEVICE_LOST, -19, "the GPU failed; restart the process")

/** Status codes; every failure is negative. */
typedef enum dash_status {
#define DASH__STATUS_ENUM(name, value, msg) DASH_##name = (value),
  DASH_STATUS_MAP(DASH__STATUS_ENUM)
#undef DASH__STATUS_ENUM
} dash_status;

/**
 * A sentence describing @p status ("invalid argument"). Never NULL: an
 * unknown code gives "unknown error". The string is static.
 */
DASH_API const char *dash_strerror(int status);

/**
 * The symbolic name of @p status without the prefix ("E_INVALID", "OK").
 * Never NULL: an unknown code gives "E_UNKNOWN". The string is static.
 */
DASH_API const char *dash_status_name(int status);

/**
 * Detail of the most recent failure of a dash call on the calling thread,
 * e.g. "block_size 0 must be at least 1". An empty string when none was
 * recorded. Valid until the next dash call on this thread.
 */
DASH_API const char *dash_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DASH_STATUS_H */
