/* The daemon's configuration. Every key is one row of kKeys; parsing,
 * defaults, reload rules and the dump all read that table. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "dash/status.h"
#include "log.h"

/* Longest line of a config file, newline excluded. */
#define CONFIG_LINE_MAX 1024

enum cfg_type {
  CFG_PATH,      /* char[108]: "" or an absolute socket path */
  CFG_BACKEND,   /* dash_backend */
  CFG_DEVICE,    /* char[64]: "", an ordinal or GPU-UUID */
  CFG_LOG_LEVEL, /* int, enum dashd_log_level */
  CFG_PRIORITY,  /* int: 0 "low", 1 "high" */
  CFG_ADDR,      /* char[64]: "" or HOST:PORT */
  CFG_INT,       /* int in [min, max] */
  CFG_UINT,      /* unsigned in [min, max] */
  CFG_U64,       /* uint64_t in [min, max] */
  CFG_UIDS,      /* "*" or a list of users */
  CFG_GIDS       /* a list of groups */
};

/* Row flags. */
#define CFG_RELOAD 1u /* SIGHUP may change it */
#define CFG_SUFFIX 2u /* a number that takes K, M, G, T or P */

struct cfg_key {
  const char *name;
  enum cfg_type type;
  size_t offset;
  const char *def; /* parsed like a value from the file */
  uint64_t min, max;
  unsigned flags;
};

#define OFF(field) offsetof(struct dashd_config, field)
#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define PIB ((uint64_t)1 << 50)

/* max_frame is not reloadable: clients learn it in HelloReply and each
 * connection's reader keeps the value it was opened with. */
static const struct cfg_key kKeys[] = {
    {"socket", CFG_PATH, OFF(socket_path), "", 0, 0, 0},
    {"backend", CFG_BACKEND, OFF(backend), "auto", 0, 0, 0},
    {"device", CFG_DEVICE, OFF(device), "", 0, 0, 0},
    {"stream_priority", CFG_PRIORITY, OFF(stream_priority), "low", 0, 0, 0},
    {"metrics_listen", CFG_ADDR, OFF(metrics_listen), "", 0, 0, 0},
    {"threads", CFG_INT, OFF(threads), "0", 0, 4096, 0},
    {"log_level", CFG_LOG_LEVEL, OFF(log_level), "info", 0, 0, CFG_RELOAD},
    {"allowed_uids", CFG_UIDS, OFF(allowed_uids), "*", 0, 0, CFG_RELOAD},
    {"allowed_gids", CFG_GIDS, OFF(allowed_gids), "", 0, 0, CFG_RELOAD},
    {"max_clients", CFG_UINT, OFF(max_clients), "64", 1, 65536, CFG_RELOAD},
    {"max_stacks_per_client", CFG_UINT, OFF(max_stacks_per_client), "64", 1,
     65536, CFG_RELOAD},
    {"max_bytes_per_client", CFG_U64, OFF(max_bytes_per_client), "16G", MIB,
     PIB, CFG_RELOAD | CFG_SUFFIX},
    {"max_frame", CFG_UINT, OFF(max_frame), "1M", 4 * KIB, 16 * MIB,
     CFG_SUFFIX},
};
#define KEY_COUNT (sizeof(kKeys) / sizeof(kKeys[0]))

/* Binary suffixes, smallest first; the dump picks the largest that
 * divides a value exactly. */
static const struct {
  char letter;
  unsigned shift;
} kSuffixes[] = {{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}, {'P', 50}};
#define SUFFIX_COUNT (sizeof(kSuffixes) / sizeof(kSuffixes[0]))

int dashd__config_parse_addr(const char *text, struct sockaddr_storage *out) {
  char host[64];
  const char *colon = strrchr(text, ':');
  if (colon == NULL || colon == text || colon[1] == '\0')
    return DASH_E_INVALID;
  size_t hlen = (size_t)(colon - text);
  const char *h = text;
  if (text[0] == '[') { /* [v6]:port */
    if (hlen < 3 || text[hlen - 1] != ']')
      return DASH_E_INVALID;
    h = text + 1;
    hlen -= 2;
  }
  if (hlen >= sizeof(host))
    return DASH_E_INVALID;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  char *end = NULL;
  long port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535 ||
      strspn(colon + 1, "0123456789") != strlen(colon + 1))
    return DASH_E_INVALID;
  memset(out, 0, sizeof(*out));
  struct sockaddr_in *v4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    return 0;
  }
  memset(out, 0, sizeof(*out));
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    return 0;
  }
  return DASH_E_INVALID;
}

static int fail(char *err, size_t err_size, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_size, int rc, const char *fmt, ...) {
  if (err != NULL && err_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static const struct cfg_key *find_key(const char *name) {
  for (size_t i = 0; i < KEY_COUNT; i++)
    if (strcmp(kKeys[i].name, name) == 0)
      return &kKeys[i];
  return NULL;
}

static void *field(struct dashd_config *c, const struct cfg_key *k) {
  return (char *)c + k->offset;
}

static const void *cfield(const struct dashd_config *c,
                          const struct cfg_key *k) {
  return (const char *)c + k->offset;
}

/* ---- numbers ---------------------------------------------------------- */

enum num_status { NUM_OK, NUM_NOT_A_NUMBER, NUM_BAD_SUFFIX, NUM_RANGE };

/* Parses an optional '-', decimal digits and (with suffix) one letter of
 * kSuffixes, consuming all of s. A negative value or one past UINT64_MAX
 * is NUM_RANGE, but only once the syntax is known to be right, so that
 * "99999999999999999999x" is reported as malformed. */
static enum num_status parse_number(const char *s, int suffix, uint64_t *out) {
  const char *p = s;
  uint64_t v = 0;
  int neg = 0, overflow = 0;

  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (!isdigit((unsigned char)*p))
    return NUM_NOT_A_NUMBER;
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      overflow = 1;
    else
      v = v * 10 + d;
  }
  if (*p != '\0') {
    size_t i;
    if (!suffix)
      return NUM_NOT_A_NUMBER;
    for (i = 0; i < SUFFIX_COUNT; i++)
      if (toupper((unsigned char)*p) == kSuffixes[i].letter)
        break;
    if (i == SUFFIX_COUNT || p[1] != '\0')
      return NUM_BAD_SUFFIX;
    if (v > (UINT64_MAX >> kSuffixes[i].shift))
      overflow = 1;
    else
      v <<= kSuffixes[i].shift;
  }
  if (overflow || (neg && v != 0))
    return NUM_RANGE;
  *out = v;
  return NUM_OK;
}

/* "16G" when a suffix divides v exactly (and the key takes suffixes),
 * else plain decimal. */
static void format_number(char *buf, size_t size, uint64_t v, int suffix) {
  if (suffix && v != 0) {
    for (size_t i = SUFFIX_COUNT; i-- > 0;) {
      uint64_t unit = (uint64_t)1 << kSuffixes[i].shift;
      if (v % unit == 0) {
        snprintf(buf, size, "%" PRIu64 "%c", v / unit, kSuffixes[i].letter);
        return;
      }
    }
  }
  snprintf(buf, size, "%" PRIu64, v);
}

static int set_number(struct dashd_config *c, const struct cfg_key *k,
                      const char *value, char *err, size_t err_size) {
  int suffix = (k->flags & CFG_SUFFIX) != 0;
  char lo[32], hi[32];
  uint64_t v = 0;

  switch (parse_number(value, suffix, &v)) {
    case NUM_OK:
      if (v >= k->min && v <= k->max)
        break;
      /* fall through */
    case NUM_RANGE:
      format_number(lo, sizeof(lo), k->min, suffix);
      format_number(hi, sizeof(hi), k->max, suffix);
      return fail(err, err_size, DASH_E_INVALID,
                  "key '%s': '%s' is out of range [%s, %s]", k->name, value, lo,
                  hi);
    case NUM_NOT_A_NUMBER:
      return fail(err, err_size, DASH_E_INVALID,
                  "key '%s': '%s' is not a number", k->name, value);
    case NUM_BAD_SUFFIX:
      return fail(err, err_size, DASH_E_INVALID,
                  "key '%s': '%s' has an unknown suffix (use K, M, G, T or "
                  "P)",
                  k->name, value);
  }
  /* The table's limits fit each field's type, so these never truncate. */
  if (k->type == CFG_INT)
    *(int *)field(c, k) = (int)v;
  else if (k->type == CFG_UINT)
    *(unsigned *)field(c, k) = (unsigned)v;
  else
    *(uint64_t *)field(c, k) = v;
  return 0;
}

/* ---- user and group lists --------------------------------------------- */

/* Looks a user or group name up in the system's databases (NSS), growing
 * the buffer the _r functions need until the entry fits. 0 with *id set,
 * DASH_E_NOT_FOUND when there is no such name, or DASH_E_INVALID with
 * errno's detail in err. */
static int lookup_id(const char *name, int group, unsigned *id, char *err,
                     size_t err_size) {
  long hint = sysconf(group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);
  size_t size = hint > 0 ? (size_t)hint : 4096;
  char *buf = NULL;
  int rc, e;

  for (;;) {
    char *bigger = realloc(buf, size);
    if (bigger == NULL) {
      rc = fail(err, err_size, DASH_E_INVALID, "out of memory looking up '%s'",
                name);
      goto out;
    }
    buf = bigger;
    if (group) {
      struct group gr, *res = NULL;
      e = getgrnam_r(name, &gr, buf, size, &res);
      if (e == 0 && res != NULL)
        *id = (unsigned)gr.gr_gid;
      if (e == 0 && res == NULL)
        e = ENOENT;
    } else {
      struct passwd pw, *res = NULL;
      e = getpwnam_r(name, &pw, buf, size, &res);
      if (e == 0 && res != NULL)
        *id = (unsigned)pw.pw_uid;
      if (e == 0 && res == NULL)
        e = ENOENT;
    }
    /* A big group (thousands of members) needs a bigger buffer; 1 MiB
     * bounds a broken NSS module that keeps asking for more. */
    if (e != ERANGE || size >= MIB)
      break;
    size *= 2;
  }
  /* glibc may report "not found" as ENOENT, ESRCH, EBADF or EPERM. */
  if (e == 0)
    rc = 0;
  else if (e == ENOENT || e == ESRCH || e == EBADF || e == EPERM)
    rc = DASH_E_NOT_FOUND;
  else
    rc = fail(err, err_size, DASH_E_INVALID, "cannot look up %s '%s': %s",
              group ? "group" : "user", name, strerror(e));
out:
  free(buf);
  return rc;
}

/* Parses one entry of an id list, of len bytes at s, already trimmed. */
static int parse_id(const struct cfg_key *k, const char *s, size_t len,
                    unsigned *id, char *err, size_t err_size) {
  const char *what = k->type == CFG_GIDS ? "group" : "user";
  char name[256];
  size_t i;
  int rc;

  if (len == 0)
    return fail(err, err_size, DASH_E_INVALID, "key '%s': empty entry in list",
                k->name);
  if (len >= sizeof(name))
    return fail(err, err_size, DASH_E_INVALID,
                "key '%s': %s name of %zu bytes is too long", k->name, what,
                len);
  memcpy(name, s, len);
  name[len] = '\0';

  /* An all-digit entry is an id. "-1" is a mistyped one, not a name:
   * useradd and groupadd refuse names that start with '-'. */
  i = name[0] == '-' ? 1 : 0;
  while (i < len && isdigit((unsigned char)name[i]))
    i++;
  if (i == len && len > (name[0] == '-' ? 1u : 0u)) {
    uint64_t v;
    /* (uid_t)-1 and (gid_t)-1 mean "no id" to the kernel. */
    if (parse_number(name, 0, &v) != NUM_OK || v >= UINT32_MAX)
      return fail(err, err_size, DASH_E_INVALID,
                  "key '%s': %s id '%s' is out of range [0, %u]", k->name, what,
                  name, UINT32_MAX - 1);
    *id = (unsigned)v;
    return 0;
  }
  rc = lookup_id(name, k->type == CFG_GIDS, id, err, err_size);
  if (rc == DASH_E_NOT_FOUND)
    return fail(err, err_size, DASH_E_INVALID, "key '%s': unknown %s '%s'",
                k->name, what, name);
  if (rc < 0)
    return DASH_E_INVALID; /* err names the failed lookup */
  return 0;
}

static int is_blank(int ch) {
  return ch == ' ' || ch == '\t';
}

static int set_ids(struct dashd_config *c, const struct cfg_key *k,
                   const char *value, char *err, size_t err_size) {
  unsigned ids[DASHD_MAX_IDS];
  int n = 0, all = 0;
  const char *p = value;

  if (k->type == CFG_UIDS && strcmp(value, "*") == 0) {
    all = 1;
    p = value + 1;
  }
  while (*p != '\0') {
    const char *end = strchr(p, ',');
    const char *s = p, *e = end != NULL ? end : p + strlen(p);
    unsigned id = 0;
    int rc, dup = 0;

    while (s < e && is_blank((unsigned char)*s))
      s++;
    while (e > s && is_blank((unsigned char)e[-1]))
      e--;
    if (e - s == 1 && *s == '*')
      return fail(err, err_size, DASH_E_INVALID,
                  k->type == CFG_UIDS
                      ? "key '%s': '*' must be the whole value"
                      : "key '%s': '*' is only for allowed_uids",
                  k->name);
    rc = parse_id(k, s, (size_t)(e - s), &id, err, err_size);
    if (rc < 0)
      return rc;
    /* Duplicates are harmless; dropping them keeps the slots for ids. */
    for (int i = 0; i < n; i++)
      dup |= ids[i] == id;
    if (!dup) {
      if (n == DASHD_MAX_IDS)
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': more than %d entries", k->name, DASHD_MAX_IDS);
      ids[n++] = id;
    }
    if (end == NULL)
      break;
    p = end + 1;
    /* "1000," ends in an empty entry. */
    if (*p == '\0')
      return fail(err, err_size, DASH_E_INVALID,
                  "key '%s': empty entry in list", k->name);
  }

  if (k->type == CFG_UIDS) {
    c->allow_all_uids = all;
    memcpy(c->allowed_uids, ids, (size_t)n * sizeof(ids[0]));
    c->n_allowed_uids = n;
  } else {
    memcpy(c->allowed_gids, ids, (size_t)n * sizeof(ids[0]));
    c->n_allowed_gids = n;
  }
  return 0;
}

/* ---- the API ------------------------------------------------------------ */

int dashd__config_set(struct dashd_config *c, const char *key,
                      const char *value, char *err, size_t err_size) {
  const struct cfg_key *k;

  if (c == NULL || key == NULL || value == NULL)
    return fail(err, err_size, DASH_E_INVALID, "missing argument");
  k = find_key(key);
  if (k == NULL)
    return fail(err, err_size, DASH_E_INVALID, "unknown key '%s'", key);

  switch (k->type) {
    case CFG_PATH: {
      size_t len = strlen(value);
      char *dst = field(c, k);
      if (len >= sizeof(c->socket_path))
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': path of %zu bytes is too long (at most %zu)",
                    k->name, len, sizeof(c->socket_path) - 1);
      /* A relative path would depend on the daemon's working directory. */
      if (len > 0 && value[0] != '/')
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is not an absolute path", k->name, value);
      memcpy(dst, value, len + 1);
      return 0;
    }
    case CFG_DEVICE: {
      /* The name is checked against the GPUs when the daemon starts;
       * here only its form. */
      size_t len = strlen(value);
      char *dst = field(c, k);
      int ordinal = len > 0 && strspn(value, "0123456789") == len;
      int uuid = len >= 12 && len < sizeof(c->device) &&
                 strncmp(value, "GPU-", 4) == 0 &&
                 strspn(value + 4, "0123456789abcdefABCDEF-") == len - 4;
      if (len > 0 && !(ordinal && len < 6) && !uuid)
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is neither a device ordinal nor "
                    "GPU-UUID",
                    k->name, value);
      memcpy(dst, value, len + 1);
      return 0;
    }
    case CFG_BACKEND: {
      dash_backend b;
      if (dash_backend_parse(value, &b) < 0)
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is not one of auto, cpu, cuda", k->name,
                    value);
      *(dash_backend *)field(c, k) = b;
      return 0;
    }
    case CFG_LOG_LEVEL: {
      int level;
      if (dashd__log_parse_level(value, &level) < 0)
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is not one of error, warn, info, debug",
                    k->name, value);
      *(int *)field(c, k) = level;
      return 0;
    }
    case CFG_ADDR: {
      struct sockaddr_storage ss;
      size_t len = strlen(value);
      if (len > 0 && (len >= sizeof(c->metrics_listen) ||
                      dashd__config_parse_addr(value, &ss) < 0))
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is not HOST:PORT (an IPv4 or [IPv6] "
                    "address and a port)",
                    k->name, value);
      memcpy(field(c, k), value, len + 1);
      return 0;
    }
    case CFG_PRIORITY: {
      int high = strcmp(value, "high") == 0;
      if (!high && strcmp(value, "low") != 0)
        return fail(err, err_size, DASH_E_INVALID,
                    "key '%s': '%s' is not one of low, high", k->name, value);
      *(int *)field(c, k) = high;
      return 0;
    }
    case CFG_INT:
    case CFG_UINT:
    case CFG_U64:
      return set_number(c, k, value, err, err_size);
    case CFG_UIDS:
    case CFG_GIDS:
      return set_ids(c, k, value, err, err_size);
  }
  return fail(err, err_size, DASH_E_INVALID, "key '%s': bad table row", key);
}

void dashd__config_defaults(struct dashd_config *c) {
  memset(c, 0, sizeof(*c));
  /* The defaults are in range and need no name lookup (test_config
   * checks each), so this cannot fail. */
  for (size_t i = 0; i < KEY_COUNT; i++)
    (void)dashd__config_set(c, kKeys[i].name, kKeys[i].def, NULL, 0);
}

int dashd__config_key_reloadable(const char *key) {
  const struct cfg_key *k = key != NULL ? find_key(key) : NULL;
  return k != NULL && (k->flags & CFG_RELOAD) != 0;
}

/* Reads one line without its newline into buf (CONFIG_LINE_MAX + 1
 * bytes). 1 for a line, 0 at the end of the file, DASH_E_TOO_LARGE for a
 * line that does not fit (the rest of it is not read), DASH_E_FORMAT for a
 * NUL byte, DASH_E_IO for a read error (errno set). */
static int read_line(FILE *f, char *buf, size_t *len) {
  size_t n = 0;
  int ch;

  while ((ch = getc(f)) != EOF && ch != '\n') {
    if (ch == '\0')
      return DASH_E_FORMAT;
    if (n == CONFIG_LINE_MAX)
      return DASH_E_TOO_LARGE;
    buf[n++] = (char)ch;
  }
  if (ch == EOF && ferror(f))
    return DASH_E_IO;
  if (ch == EOF && n == 0)
    return 0;
  buf[n] = '\0';
  *len = n;
  return 1;
}

static char *trim(char *s) {
  char *e = s + strlen(s);
  while (isspace((unsigned char)*s))
    s++;
  while (e > s && isspace((unsigned char)e[-1]))
    e--;
  *e = '\0';
  return s;
}

int dashd__config_load(struct dashd_config *c, const char *path, char *err,
                       size_t err_size) {
  struct dashd_config tmp;
  char line[CONFIG_LINE_MAX + 1];
  /* Room for a whole line quoted in a message. */
  char msg[CONFIG_LINE_MAX + 256];
  unsigned lineno = 0;
  FILE *f = NULL;
  int rc;

  if (c == NULL || path == NULL)
    return fail(err, err_size, DASH_E_INVALID, "missing argument");
  tmp = *c;
  f = fopen(path, "re");
  if (f == NULL) {
    rc = fail(err, err_size, DASH_E_IO, "%s: %s", path, strerror(errno));
    goto out;
  }

  for (;;) {
    char *s, *eq, *key, *value;
    size_t len = 0;

    rc = read_line(f, line, &len);
    if (rc == 0)
      break;
    lineno++;
    if (rc == DASH_E_IO) {
      rc = fail(err, err_size, DASH_E_IO, "%s:%u: %s", path, lineno,
                strerror(errno));
      goto out;
    }
    if (rc == DASH_E_TOO_LARGE) {
      rc = fail(err, err_size, DASH_E_INVALID,
                "%s:%u: line is longer than %d bytes", path, lineno,
                CONFIG_LINE_MAX);
      goto out;
    }
    if (rc == DASH_E_FORMAT) {
      rc = fail(err, err_size, DASH_E_INVALID, "%s:%u: line holds a NUL byte",
                path, lineno);
      goto out;
    }

    /* Comments are whole lines only: a value (a path) may hold '#'. */
    s = trim(line);
    if (*s == '\0' || *s == '#')
      continue;
    eq = strchr(s, '=');
    if (eq == NULL) {
      rc = fail(err, err_size, DASH_E_INVALID,
                "%s:%u: expected 'key = value', got '%s'", path, lineno, s);
      goto out;
    }
    *eq = '\0';
    key = trim(s);
    value = trim(eq + 1);
    if (*key == '\0') {
      rc = fail(err, err_size, DASH_E_INVALID, "%s:%u: empty key before '='",
                path, lineno);
      goto out;
    }
    if (*value == '"') {
      size_t vlen = strlen(value);
      if (vlen < 2 || value[vlen - 1] != '"') {
        rc = fail(err, err_size, DASH_E_INVALID,
                  "%s:%u: key '%s': unterminated quote in %s", path, lineno,
                  key, value);
        goto out;
      }
      value[vlen - 1] = '\0';
      value++;
    }
    /* A key given twice takes its last value, so a line appended at the
     * end of the file overrides what came before. */
    rc = dashd__config_set(&tmp, key, value, msg, sizeof(msg));
    if (rc < 0) {
      rc = fail(err, err_size, DASH_E_INVALID, "%s:%u: %s", path, lineno, msg);
      goto out;
    }
  }
  rc = 0;
  *c = tmp;
out:
  if (f != NULL)
    fclose(f);
  return rc;
}

static void dump_ids(FILE *f, const unsigned *ids, int n) {
  fputc('"', f);
  for (int i = 0; i < n; i++)
    fprintf(f, "%s%u", i > 0 ? "," : "", ids[i]);
  fputc('"', f);
}

void dashd__config_dump(const struct dashd_config *c, FILE *f) {
  for (size_t i = 0; i < KEY_COUNT; i++) {
    const struct cfg_key *k = &kKeys[i];
    const void *p = cfield(c, k);
    char num[32];

    fprintf(f, "%s = ", k->name);
    switch (k->type) {
      case CFG_PATH:
      case CFG_DEVICE:
      case CFG_ADDR:
        /* Quoted, so that "" reads back as the empty value. */
        fprintf(f, "\"%s\"", (const char *)p);
        break;
      case CFG_BACKEND: {
        const char *name = dash_backend_name(*(const dash_backend *)p);
        fputs(name != NULL ? name : "?", f);
        break;
      }
      case CFG_LOG_LEVEL: {
        const char *name = dashd__log_level_name(*(const int *)p);
        fputs(name != NULL ? name : "?", f);
        break;
      }
      case CFG_PRIORITY:
        fputs(*(const int *)p ? "high" : "low", f);
        break;
      case CFG_INT:
        fprintf(f, "%d", *(const int *)p);
        break;
      case CFG_UINT:
        format_number(num, sizeof(num), *(const unsigned *)p,
                      (k->flags & CFG_SUFFIX) != 0);
        fputs(num, f);
        break;
      case CFG_U64:
        format_number(num, sizeof(num), *(const uint64_t *)p,
                      (k->flags & CFG_SUFFIX) != 0);
        fputs(num, f);
        break;
      case CFG_UIDS:
        if (c->allow_all_uids)
          fputs("\"*\"", f);
        else
          dump_ids(f, c->allowed_uids, c->n_allowed_uids);
        break;
      case CFG_GIDS:
        dump_ids(f, c->allowed_gids, c->n_allowed_gids);
        break;
    }
    fputc('\n', f);
  }
}
