/* .npy reading and writing for the tools: stacks of square float matrices
 * in, float32 arrays out. The format is numpy's NEP 1: a magic string, a
 * version, a header length, a Python dict literal and the raw data. */
#define _POSIX_C_SOURCE 200809L

#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dash/roots.h"

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* Ranks the parser keeps; numpy allows 64, and any rank beyond 3 is
 * rejected anyway, so this only bounds the message. */
#define PARSE_MAX_DIMS 64

/* Largest single read() or write(); Linux transfers at most about 2 GiB
 * per call anyway. */
#define IO_CHUNK ((size_t)1 << 30)

/* Doubles converted per read when the file holds <f8. */
#define F64_CHUNK ((size_t)1 << 16)

static int fail(char *msg, size_t msg_size, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t msg_size, int status, const char *fmt, ...) {
  if (msg != NULL && msg_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
    /* Messages quote bytes from the file; keep them one printable ASCII
     * line whatever the file holds. */
    for (char *c = msg; *c; c++)
      if (*c < 0x20 || *c > 0x7e)
        *c = '?';
  }
  return status;
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

static float load_f32le(const unsigned char *p) {
  uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
               (uint32_t)p[3] << 24;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

static double load_f64le(const unsigned char *p) {
  uint64_t u = 0;
  for (int i = 7; i >= 0; i--)
    u = u << 8 | p[i];
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

static void store_f32le(unsigned char *p, float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(u >> (8 * i));
}

/* Reads until n bytes arrived, end of file or an error. Returns the bytes
 * read, or -1 with errno set. */
static ssize_t read_full(int fd, void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    size_t want = n - done < IO_CHUNK ? n - done : IO_CHUNK;
    ssize_t got = read(fd, (char *)buf + done, want);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      return -1;
    if (got == 0)
      break;
    done += (size_t)got;
  }
  return (ssize_t)done;
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    size_t want = n - done < IO_CHUNK ? n - done : IO_CHUNK;
    ssize_t put = write(fd, (const char *)buf + done, want);
    if (put < 0 && errno == EINTR)
      continue;
    if (put <= 0)
      return -1;
    done += (size_t)put;
  }
  return 0;
}

/* Writes "(a, b, c)", "(a,)" or "()" as Python spells a tuple. */
static void format_shape(char *buf, size_t size, const uint64_t *dims,
                         int ndim) {
  size_t len = 0;
  int n = snprintf(buf, size, "(");
  for (int i = 0; n >= 0 && i < ndim; i++) {
    len += (size_t)n;
    if (len >= size)
      return;
    n = snprintf(buf + len, size - len, "%s%llu", i ? ", " : "",
                 (unsigned long long)dims[i]);
  }
  if (n < 0)
    return;
  len += (size_t)n;
  if (len >= size)
    return;
  snprintf(buf + len, size - len, "%s)", ndim == 1 ? "," : "");
}

/* ---- The header dict: a Python literal, parsed by hand. ---- */

struct header {
  char descr[32];
  int have_descr;
  int fortran_order;
  int have_fortran_order;
  uint64_t shape[PARSE_MAX_DIMS];
  int ndim;
  int have_shape;
};

struct parser {
  const char *p;
  const char *end;
  char *msg;
  size_t msg_size;
};

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

static void skip_space(struct parser *ps) {
  while (ps->p < ps->end && is_space(*ps->p))
    ps->p++;
}

/* The next character, or 0 at the end of the header. */
static char peek(const struct parser *ps) {
  return ps->p < ps->end ? *ps->p : '\0';
}

static int syntax_error(struct parser *ps, const char *expected) {
  char c = peek(ps);
  if (ps->p >= ps->end)
    return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                "bad header: expected %s, found the end of the header",
                expected);
  if (c >= 0x20 && c < 0x7f)
    return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                "bad header: expected %s, found '%c'", expected, c);
  return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
              "bad header: expected %s, found byte 0x%02x", expected,
              (unsigned)(unsigned char)c);
}

/* A quoted string; a backslash takes the next character literally, which
 * is all the escaping dtype names and the three keys can need. The value is
 * cut to fit @p buf; that only shortens names that are rejected anyway. */
static int parse_string(struct parser *ps, char *buf, size_t size) {
  char quote = peek(ps);
  size_t len = 0;
  if (quote != '\'' && quote != '"')
    return syntax_error(ps, "a string");
  ps->p++;
  for (;;) {
    if (ps->p >= ps->end || *ps->p == '\n')
      return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                  "bad header: unterminated string");
    char c = *ps->p++;
    if (c == quote)
      break;
    if (c == '\\') {
      if (ps->p >= ps->end)
        continue;
      c = *ps->p++;
    }
    if (len + 1 < size)
      buf[len++] = c;
  }
  buf[len] = '\0';
  return 0;
}

static int parse_bool(struct parser *ps, int *out) {
  const char *start = ps->p;
  while (ps->p < ps->end &&
         ((*ps->p >= 'A' && *ps->p <= 'Z') || (*ps->p >= 'a' && *ps->p <= 'z')))
    ps->p++;
  size_t len = (size_t)(ps->p - start);
  if (len == 4 && memcmp(start, "True", 4) == 0) {
    *out = 1;
    return 0;
  }
  if (len == 5 && memcmp(start, "False", 5) == 0) {
    *out = 0;
    return 0;
  }
  ps->p = start;
  return syntax_error(ps, "True or False for 'fortran_order'");
}

/* A non-negative integer, with Python 2's 'L' suffix allowed as numpy
 * allows it. */
static int parse_dim(struct parser *ps, uint64_t *out) {
  uint64_t v = 0;
  size_t digits = 0;
  int overflow = 0;
  if (peek(ps) == '-')
    return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                "bad header: negative dimension in 'shape'");
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    unsigned d = (unsigned)(*ps->p - '0');
    if (v > (UINT64_MAX - d) / 10)
      overflow = 1;
    v = v * 10 + d;
    digits++;
    ps->p++;
  }
  if (digits == 0)
    return syntax_error(ps, "an integer in 'shape'");
  if (peek(ps) == 'L' || peek(ps) == 'l')
    ps->p++;
  if (overflow)
    return fail(ps->msg, ps->msg_size, DASH_E_TOO_LARGE,
                "shape has a %zu-digit dimension, which exceeds the limits "
                "(DASH_ROOTS_MAX_*)",
                digits);
  *out = v;
  return 0;
}

/* A tuple of integers: "()", "(3,)", "(3, 4)", "(3, 4,)". "(3)" is the
 * integer 3 in Python, not a tuple, so numpy rejects it and so do we. */
static int parse_shape(struct parser *ps, struct header *h) {
  int rc;
  int commas = 0;
  if (peek(ps) != '(')
    return syntax_error(ps, "a tuple for 'shape'");
  ps->p++;
  h->ndim = 0;
  skip_space(ps);
  while (peek(ps) != ')') {
    uint64_t dim = 0;
    if ((rc = parse_dim(ps, &dim)) < 0)
      return rc;
    if (h->ndim == PARSE_MAX_DIMS)
      return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                  "bad header: 'shape' has more than %d dimensions",
                  PARSE_MAX_DIMS);
    h->shape[h->ndim++] = dim;
    skip_space(ps);
    if (peek(ps) == ',') {
      commas++;
      ps->p++;
      skip_space(ps);
    } else if (peek(ps) != ')') {
      return syntax_error(ps, "',' or ')' in 'shape'");
    }
  }
  ps->p++;
  if (h->ndim == 1 && commas == 0)
    return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                "bad header: 'shape' is an integer, not a tuple");
  return 0;
}

static int parse_value(struct parser *ps, const char *key, struct header *h) {
  if (strcmp(key, "descr") == 0) {
    if (h->have_descr)
      goto duplicate;
    h->have_descr = 1;
    if (peek(ps) == '[')
      return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
                  "unsupported dtype: structured arrays are not supported; "
                  "need <f4 or <f8");
    return parse_string(ps, h->descr, sizeof(h->descr));
  }
  if (strcmp(key, "fortran_order") == 0) {
    if (h->have_fortran_order)
      goto duplicate;
    h->have_fortran_order = 1;
    return parse_bool(ps, &h->fortran_order);
  }
  if (strcmp(key, "shape") == 0) {
    if (h->have_shape)
      goto duplicate;
    h->have_shape = 1;
    return parse_shape(ps, h);
  }
  return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
              "bad header: unexpected key '%s' (need exactly 'descr', "
              "'fortran_order' and 'shape')",
              key);
duplicate:
  return fail(ps->msg, ps->msg_size, DASH_E_FORMAT,
              "bad header: key '%s' appears twice", key);
}

static int parse_header(const char *text, size_t len, struct header *h,
                        char *msg, size_t msg_size) {
  struct parser ps = {text, text + len, msg, msg_size};
  int rc;

  memset(h, 0, sizeof(*h));
  skip_space(&ps);
  if (peek(&ps) != '{')
    return syntax_error(&ps, "'{' opening the dict");
  ps.p++;
  for (;;) {
    char key[32];
    skip_space(&ps);
    if (peek(&ps) == '}')
      break;
    if ((rc = parse_string(&ps, key, sizeof(key))) < 0)
      return rc;
    skip_space(&ps);
    if (peek(&ps) != ':')
      return syntax_error(&ps, "':' after a key");
    ps.p++;
    skip_space(&ps);
    if ((rc = parse_value(&ps, key, h)) < 0)
      return rc;
    skip_space(&ps);
    if (peek(&ps) == ',') {
      ps.p++;
      continue;
    }
    if (peek(&ps) != '}')
      return syntax_error(&ps, "',' or '}'");
  }
  ps.p++;
  /* numpy pads the dict with spaces and a newline; anything else after it
   * would make the literal invalid Python. */
  skip_space(&ps);
  if (ps.p < ps.end)
    return syntax_error(&ps, "nothing after the dict");
  if (!h->have_descr)
    return fail(msg, msg_size, DASH_E_FORMAT, "bad header: no 'descr' key");
  if (!h->have_fortran_order)
    return fail(msg, msg_size, DASH_E_FORMAT,
                "bad header: no 'fortran_order' key");
  if (!h->have_shape)
    return fail(msg, msg_size, DASH_E_FORMAT, "bad header: no 'shape' key");
  return 0;
}

/* Checks dtype, order and shape against what the tools take and the
 * library's limits; fills the stack's sizes and the data's byte count. */
static int check_header(const struct header *h, dash_npy_stack *st,
                        uint64_t *data_bytes, char *msg, size_t msg_size) {
  char shape[128];
  uint64_t n, b;

  if (strcmp(h->descr, "<f4") == 0)
    st->file_itemsize = 4;
  else if (strcmp(h->descr, "<f8") == 0)
    st->file_itemsize = 8;
  else
    return fail(msg, msg_size, DASH_E_FORMAT,
                "unsupported dtype '%s': need <f4 or <f8", h->descr);
  if (h->fortran_order)
    return fail(msg, msg_size, DASH_E_FORMAT,
                "fortran_order True is not supported: save a C-ordered "
                "array (np.ascontiguousarray)");
  format_shape(shape, sizeof(shape), h->shape, h->ndim);
  if (h->ndim != 2 && h->ndim != 3)
    return fail(msg, msg_size, DASH_E_FORMAT,
                "shape %s is %d-D: need (N, B, B) or (B, B)", shape, h->ndim);
  n = h->ndim == 3 ? h->shape[0] : 1;
  b = h->shape[h->ndim - 1];
  if (h->shape[h->ndim - 2] != b)
    return fail(msg, msg_size, DASH_E_FORMAT, "shape %s: blocks must be square",
                shape);
  /* Checked before anything is allocated for the data. The library
   * reports an empty shape as invalid; for a file that is a format
   * error. */
  int rc = dash_roots_check_shape((size_t)n, (size_t)b);
  if (rc < 0)
    return fail(msg, msg_size, rc == DASH_E_INVALID ? DASH_E_FORMAT : rc,
                "shape %s: %s", shape, dash_last_error());
  st->num_blocks = (size_t)n;
  st->block_size = (size_t)b;
  st->ndim = h->ndim;
  *data_bytes = n * b * b * (uint64_t)st->file_itemsize;
  return 0;
}

/* Reads count elements of <f8 from fd and rounds them to float. Values
 * beyond float's range become ±Inf (IEEE 754 conversion), which the
 * library then reports as non-finite input. */
static int read_f64(int fd, float *dst, size_t count, char *msg,
                    size_t msg_size) {
  unsigned char *buf = malloc(F64_CHUNK * 8);
  int rc = 0;
  if (buf == NULL) {
    rc = fail(msg, msg_size, DASH_E_NOMEM,
              "cannot allocate a conversion buffer");
    goto out;
  }
  for (size_t done = 0; done < count;) {
    size_t k = count - done < F64_CHUNK ? count - done : F64_CHUNK;
    ssize_t got = read_full(fd, buf, k * 8);
    if (got < 0) {
      rc = fail(msg, msg_size, DASH_E_IO, "read failed: %s", strerror(errno));
      goto out;
    }
    if ((size_t)got != k * 8) {
      rc = fail(msg, msg_size, DASH_E_IO,
                "truncated data: the file shrank while being read");
      goto out;
    }
    for (size_t i = 0; i < k; i++)
      dst[done + i] = (float)load_f64le(buf + 8 * i);
    done += k;
  }
out:
  free(buf);
  return rc;
}

int dash_npy_read_stack(dash_npy_stack *out, const char *path, char *msg,
                        size_t msg_size) {
  unsigned char pre[12];
  char text[DASH_NPY_MAX_HEADER];
  struct header h;
  dash_npy_stack st = {NULL, 0, 0, 0, 0};
  struct stat sb;
  uint64_t file_size, header_len, data_bytes = 0;
  size_t pre_len;
  ssize_t got;
  int fd = -1;
  int rc;

  if (msg != NULL && msg_size > 0)
    msg[0] = '\0';
  if (out == NULL || path == NULL) {
    rc = fail(msg, msg_size, DASH_E_INVALID, "out and path must be given");
    goto out;
  }
  memset(out, 0, sizeof(*out));
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot open: %s", strerror(errno));
    goto out;
  }
  if (fstat(fd, &sb) < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot stat: %s", strerror(errno));
    goto out;
  }
  /* The exact-size checks below need the size up front. */
  if (!S_ISREG(sb.st_mode)) {
    rc = fail(msg, msg_size, DASH_E_IO, "not a regular file");
    goto out;
  }
  file_size = (uint64_t)sb.st_size;

  got = read_full(fd, pre, 8);
  if (got < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "read failed: %s", strerror(errno));
    goto out;
  }
  if (got == 0 ||
      memcmp(pre, npy_magic, (size_t)got < 6 ? (size_t)got : 6) != 0) {
    rc = fail(msg, msg_size, DASH_E_FORMAT, "bad magic: not a .npy file");
    goto out;
  }
  if (got < 8) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "truncated header: the file ends after %zd bytes", got);
    goto out;
  }
  if (pre[7] != 0 || pre[6] < 1 || pre[6] > 3) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "unsupported .npy format version %u.%u: need 1.0, 2.0 or 3.0",
              (unsigned)pre[6], (unsigned)pre[7]);
    goto out;
  }
  /* Version 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one. */
  pre_len = pre[6] == 1 ? 10 : 12;
  got = read_full(fd, pre + 8, pre_len - 8);
  if (got < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "read failed: %s", strerror(errno));
    goto out;
  }
  if ((size_t)got != pre_len - 8) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "truncated header: the file ends inside the header length");
    goto out;
  }
  /* Every size below comes from the one fstat; a file that changes while
   * being read fails on a short read instead. */
  if (file_size < pre_len) {
    rc = fail(msg, msg_size, DASH_E_IO, "the file changed while being read");
    goto out;
  }
  header_len = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
  if (pre_len == 12)
    header_len |= (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
  if (header_len > file_size - pre_len) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "truncated header: header length says %llu bytes, the file "
              "has %llu after the preamble",
              (unsigned long long)header_len,
              (unsigned long long)(file_size - pre_len));
    goto out;
  }
  if (header_len > DASH_NPY_MAX_HEADER) {
    rc = fail(msg, msg_size, DASH_E_TOO_LARGE,
              "header length %llu exceeds the limit of %d bytes",
              (unsigned long long)header_len, DASH_NPY_MAX_HEADER);
    goto out;
  }
  got = read_full(fd, text, (size_t)header_len);
  if (got < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "read failed: %s", strerror(errno));
    goto out;
  }
  if ((uint64_t)got != header_len) {
    rc = fail(msg, msg_size, DASH_E_IO,
              "truncated header: the file shrank while being read");
    goto out;
  }
  if ((rc = parse_header(text, (size_t)header_len, &h, msg, msg_size)) < 0)
    goto out;
  if ((rc = check_header(&h, &st, &data_bytes, msg, msg_size)) < 0)
    goto out;

  uint64_t have = file_size - pre_len - header_len;
  if (have < data_bytes) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "truncated data: header says %llu bytes, file has %llu",
              (unsigned long long)data_bytes, (unsigned long long)have);
    goto out;
  }
  if (have > data_bytes) {
    rc = fail(msg, msg_size, DASH_E_FORMAT,
              "trailing data: header says %llu bytes, file has %llu; the "
              "data must end the file exactly",
              (unsigned long long)data_bytes, (unsigned long long)have);
    goto out;
  }

  size_t count = st.num_blocks * st.block_size * st.block_size;
  st.data = malloc(count * sizeof(float));
  if (st.data == NULL) {
    rc = fail(msg, msg_size, DASH_E_NOMEM,
              "cannot allocate %zu bytes for the stack", count * sizeof(float));
    goto out;
  }
  if (st.file_itemsize == 8) {
    if ((rc = read_f64(fd, st.data, count, msg, msg_size)) < 0)
      goto out;
  } else {
    got = read_full(fd, st.data, count * sizeof(float));
    if (got < 0) {
      rc = fail(msg, msg_size, DASH_E_IO, "read failed: %s", strerror(errno));
      goto out;
    }
    if ((size_t)got != count * sizeof(float)) {
      rc = fail(msg, msg_size, DASH_E_IO,
                "truncated data: the file shrank while being read");
      goto out;
    }
    if (!host_is_little_endian()) {
      unsigned char *bytes = (unsigned char *)st.data;
      for (size_t i = 0; i < count; i++)
        st.data[i] = load_f32le(bytes + 4 * i);
    }
  }
  *out = st;
  st.data = NULL;
  rc = 0;
out:
  free(st.data);
  if (fd >= 0)
    close(fd);
  return rc;
}

void dash_npy_stack_free(dash_npy_stack *stack) {
  if (stack == NULL)
    return;
  free(stack->data);
  memset(stack, 0, sizeof(*stack));
}

/* Writes the floats little-endian, through a small buffer when the host is
 * big-endian. */
static int write_f32_data(int fd, const float *data, size_t count) {
  unsigned char buf[4096];
  if (host_is_little_endian())
    return write_full(fd, data, count * sizeof(float));
  for (size_t done = 0; done < count;) {
    size_t k = count - done < sizeof(buf) / 4 ? count - done : sizeof(buf) / 4;
    for (size_t i = 0; i < k; i++)
      store_f32le(buf + 4 * i, data[done + i]);
    if (write_full(fd, buf, k * 4) < 0)
      return -1;
    done += k;
  }
  return 0;
}

int dash_npy_write_f32(const char *path, const float *data, const size_t *shape,
                       int ndim, char *msg, size_t msg_size) {
  /* numpy aligns the data to 64 bytes; the longest header of 8 dimensions
   * of 20 digits stays well inside 512. */
  unsigned char head[512];
  char shape_text[256];
  uint64_t dims[DASH_NPY_MAX_DIMS];
  char *tmp = NULL;
  int fd = -1;
  int created = 0;
  size_t count = 1;
  int rc;

  if (msg != NULL && msg_size > 0)
    msg[0] = '\0';
  if (path == NULL || data == NULL || (shape == NULL && ndim > 0) || ndim < 0 ||
      ndim > DASH_NPY_MAX_DIMS) {
    rc = fail(msg, msg_size, DASH_E_INVALID,
              "bad arguments: need a path, data and 0..%d dimensions",
              DASH_NPY_MAX_DIMS);
    goto out;
  }
  for (int i = 0; i < ndim; i++) {
    if (shape[i] != 0 && count > SIZE_MAX / sizeof(float) / shape[i]) {
      rc = fail(msg, msg_size, DASH_E_TOO_LARGE,
                "array of that shape does not fit in memory");
      goto out;
    }
    count *= shape[i];
    dims[i] = shape[i];
  }
  format_shape(shape_text, sizeof(shape_text), dims, ndim);

  memcpy(head, npy_magic, sizeof(npy_magic));
  head[6] = 1;
  head[7] = 0;
  int dict_len = snprintf((char *)head + 10, sizeof(head) - 10,
                          "{'descr': '<f4', 'fortran_order': False, "
                          "'shape': %s, }",
                          shape_text);
  if (dict_len < 0 || (size_t)dict_len + 10 + 64 > sizeof(head)) {
    rc = fail(msg, msg_size, DASH_E_INVALID, "header does not fit");
    goto out;
  }
  /* Pad with spaces and end with a newline so the data starts on a
   * 64-byte boundary, as numpy writes it. */
  size_t total = 10 + (size_t)dict_len + 1;
  total = (total + 63) / 64 * 64;
  memset(head + 10 + dict_len, ' ', total - 10 - (size_t)dict_len - 1);
  head[total - 1] = '\n';
  head[8] = (unsigned char)((total - 10) & 0xff);
  head[9] = (unsigned char)((total - 10) >> 8);

  size_t path_len = strlen(path);
  tmp = malloc(path_len + 5);
  if (tmp == NULL) {
    rc = fail(msg, msg_size, DASH_E_NOMEM, "cannot allocate a path");
    goto out;
  }
  memcpy(tmp, path, path_len);
  memcpy(tmp + path_len, ".tmp", 5);

  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot create '%s': %s", tmp,
              strerror(errno));
    goto out;
  }
  created = 1;
  if (write_full(fd, head, total) < 0 || write_f32_data(fd, data, count) < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot write '%s': %s", tmp,
              strerror(errno));
    goto out;
  }
  /* Flushed before the rename, so a crash leaves the old file or the whole
   * new one, never a short one under the final name. */
  if (fsync(fd) < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot flush '%s': %s", tmp,
              strerror(errno));
    goto out;
  }
  int closed = close(fd);
  fd = -1;
  if (closed < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot close '%s': %s", tmp,
              strerror(errno));
    goto out;
  }
  if (rename(tmp, path) < 0) {
    rc = fail(msg, msg_size, DASH_E_IO, "cannot rename '%s' to '%s': %s", tmp,
              path, strerror(errno));
    goto out;
  }
  created = 0;
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  if (created)
    unlink(tmp);
  free(tmp);
  return rc;
}
