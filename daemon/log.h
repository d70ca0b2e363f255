/* The daemon's log: one line per event on stderr, filtered by level.
 * Internal to dashd; the loop thread and the worker both log. */
#ifndef DASHD_LOG_H
#define DASHD_LOG_H

/* Levels, most severe first: a message is written when its level is at
 * most the current one. */
enum dashd_log_level {
  DASHD_LOG_ERROR = 0,
  DASHD_LOG_WARN,
  DASHD_LOG_INFO,
  DASHD_LOG_DEBUG
};

/* Sets the level; a value outside the enum is clamped to it. Default
 * DASHD_LOG_INFO. Thread-safe. */
void dashd__log_set_level(int level);
int dashd__log_level(void);

/* "error", "warn" or "warning", "info", "debug" (exact, lower case).
 * 0 with *out set, or DASH_E_INVALID with *out untouched. */
int dashd__log_parse_level(const char *name, int *out);
/* "error", "warn", "info", "debug"; NULL for an unknown level. Static. */
const char *dashd__log_level_name(int level);

/* Writes "2026-11-26T17:10:00.123Z info: text\n" (UTC) on stderr with a
 * single write(2), so lines from several threads never interleave.
 * Newlines in the text become spaces; a text too long for one line
 * (4 KiB in all) is cut and ends in "...". Thread-safe; keeps errno. */
void dashd__log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* With on != 0, lines start with a syslog priority ("<3>" error, "<4>"
 * warning, "<6>" info, "<7>" debug) instead of the timestamp, as journald
 * expects from a service's stderr. Default off. */
void dashd__log_set_syslog_prefix(int on);

#endif
