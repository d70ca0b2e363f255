/* Status strings and the thread-local detail of the last failure. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *dash_strerror(int status) {
  switch (status) {
#define DASH__STATUS_MSG(name, value, msg) \
  case value:                              \
    return msg;
    DASH_STATUS_MAP(DASH__STATUS_MSG)
#undef DASH__STATUS_MSG
  }
  return "unknown error";
}

const char *dash_status_name(int status) {
  switch (status) {
#define DASH__STATUS_NAME(name, value, msg) \
  case value:                               \
    return #name;
    DASH_STATUS_MAP(DASH__STATUS_NAME)
#undef DASH__STATUS_NAME
  }
  return "E_UNKNOWN";
}

const char *dash_last_error(void) {
  return last_error;
}

int dash__fail(int status, const char *fmt, ...) {
  /* Formatted apart first: a caller may wrap the detail it replaces,
   * dash__fail(rc, "opening x: %s", dash_last_error()). */
  char buf[sizeof(last_error)];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  memcpy(last_error, buf, sizeof(buf));
  return status;
}

void dash__clear_error(void) {
  last_error[0] = '\0';
}
