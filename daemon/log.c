/* The daemon's log. See log.h. */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dash/status.h"

/* Relaxed atomics: a level change only has to be seen eventually, and the
 * check on every call must stay a plain load. */
static atomic_int log_level = DASHD_LOG_INFO;
static atomic_int log_syslog = 0;

static const struct {
  const char *name;
  int syslog_priority;
} kLevels[] = {
    [DASHD_LOG_ERROR] = {"error", 3},
    [DASHD_LOG_WARN] = {"warn", 4},
    [DASHD_LOG_INFO] = {"info", 6},
    [DASHD_LOG_DEBUG] = {"debug", 7},
};

static int clamp_level(int level) {
  if (level < DASHD_LOG_ERROR)
    return DASHD_LOG_ERROR;
  if (level > DASHD_LOG_DEBUG)
    return DASHD_LOG_DEBUG;
  return level;
}

void dashd__log_set_level(int level) {
  atomic_store_explicit(&log_level, clamp_level(level), memory_order_relaxed);
}

int dashd__log_level(void) {
  return atomic_load_explicit(&log_level, memory_order_relaxed);
}

void dashd__log_set_syslog_prefix(int on) {
  atomic_store_explicit(&log_syslog, on != 0, memory_order_relaxed);
}

int dashd__log_parse_level(const char *name, int *out) {
  if (name == NULL || out == NULL)
    return DASH_E_INVALID;
  if (strcmp(name, "warning") == 0) {
    *out = DASHD_LOG_WARN;
    return 0;
  }
  for (int i = DASHD_LOG_ERROR; i <= DASHD_LOG_DEBUG; i++) {
    if (strcmp(name, kLevels[i].name) == 0) {
      *out = i;
      return 0;
    }
  }
  return DASH_E_INVALID;
}

const char *dashd__log_level_name(int level) {
  if (level < DASHD_LOG_ERROR || level > DASHD_LOG_DEBUG)
    return NULL;
  return kLevels[level].name;
}

/* Writes the "<6>" or timestamp prefix and the level name into buf;
 * returns the bytes written. buf has room for far more than either. */
static size_t format_prefix(char *buf, size_t size, int level) {
  const char *name = kLevels[level].name;
  int n;

  if (atomic_load_explicit(&log_syslog, memory_order_relaxed)) {
    n = snprintf(buf, size, "<%d>%s: ", kLevels[level].syslog_priority, name);
  } else {
    struct timespec ts;
    struct tm tm;
    char date[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(buf, size, "%s.%03ldZ %s: ", date, ts.tv_nsec / 1000000L,
                 name);
  }
  return n < 0 ? 0 : (size_t)n;
}

void dashd__log(int level, const char *fmt, ...) {
  /* One line is at most PIPE_BUF bytes, so that a write to a pipe (how
   * journald and most supervisors read stderr) is atomic. */
  char line[PIPE_BUF];
  static const char kCut[] = "...";
  size_t n, room;
  va_list ap;
  int saved_errno = errno;
  int body;

  if (level > dashd__log_level())
    return;
  level = clamp_level(level);

  n = format_prefix(line, sizeof(line), level);
  /* Leave one byte for the newline; vsnprintf adds a NUL we overwrite. */
  room = sizeof(line) - n - 1;
  va_start(ap, fmt);
  body = vsnprintf(line + n, room + 1, fmt, ap);
  va_end(ap);
  if (body < 0) {
    body = snprintf(line + n, room + 1, "(bad log format '%s')", fmt);
    if (body < 0)
      body = 0;
  }
  if ((size_t)body > room) {
    memcpy(line + n + room - (sizeof(kCut) - 1), kCut, sizeof(kCut) - 1);
    body = (int)room;
  }
  /* A newline inside a message would forge a second log line. */
  for (char *p = line + n; p < line + n + body; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  n += (size_t)body;
  line[n++] = '\n';

  for (size_t off = 0; off < n;) {
    ssize_t w = write(STDERR_FILENO, line + off, n - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      break; /* Nowhere left to report it. */
    }
    off += (size_t)w;
  }
  errno = saved_errno;
}
