/* Framing of the control protocol: encoding frames, sending them with
 * their fds, and reassembling frames and fds from a stream socket. */
#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../kernels/internal.h"
#include "dash/status.h"

/* Bytes of the length prefix. */
#define PREFIX_BYTES ((size_t)4)
/* Room one read asks for when no longer frame is being assembled. */
#define READ_CHUNK ((size_t)16 * 1024)
/* Most fds Linux passes with one sendmsg (SCM_MAX_FD). The control buffer
 * holds that many, so our own size never truncates a message. */
#define KERNEL_MAX_FDS 253
/* Entries of dash__wire_reader.fds. */
#define READER_FDS \
  ((int)(sizeof(((dash__wire_reader *)0)->fds) / sizeof(struct dash__wire_fd)))

static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static void close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

int dash__wire_encode(const Dashpb__Envelope *env, uint32_t max_frame,
                      uint8_t **out, size_t *len) {
  uint8_t *frame = NULL;
  size_t packed, total, wrote;
  int rc = 0;

  if (out != NULL)
    *out = NULL;
  if (len != NULL)
    *len = 0;
  if (env == NULL || out == NULL || len == NULL)
    return dash__fail(DASH_E_INVALID, "dash__wire_encode: NULL argument");
  /* protobuf-c sizes the message without writing it, so an oversized
   * envelope is refused before its frame is allocated. */
  packed = dashpb__envelope__get_packed_size(env);
  if (packed > max_frame ||
      __builtin_add_overflow(packed, PREFIX_BYTES, &total)) {
    rc = dash__fail(DASH_E_TOO_LARGE,
                    "a frame of %zu bytes exceeds the limit of %u bytes",
                    packed, (unsigned)max_frame);
    goto out;
  }
  frame = malloc(total);
  if (frame == NULL) {
    rc = dash__fail(DASH_E_NOMEM, "no memory for a frame of %zu bytes", total);
    goto out;
  }
  put_le32(frame, (uint32_t)packed);
  wrote = dashpb__envelope__pack(env, frame + PREFIX_BYTES);
  if (wrote != packed) {
    rc = dash__fail(DASH_E_INTERNAL, "protobuf-c packed %zu of %zu bytes",
                    wrote, packed);
    goto out;
  }
  *out = frame;
  *len = total;
  frame = NULL;
out:
  free(frame);
  return rc;
}

/* Maps the errno of a failed sendmsg to a status. */
static int send_error(int err) {
  if (err == EPIPE || err == ECONNRESET || err == ENOTCONN)
    return dash__fail(DASH_E_DISCONNECTED, "the peer closed the connection");
  return dash__fail(DASH_E_IO, "sendmsg: %s", strerror(err));
}

/* One sendmsg of buf[off, len), carrying the fds only when nothing of the
 * frame went yet: the receiver finds them at the frame's first byte.
 * Returns the bytes sent, or -errno. */
static ssize_t send_once(int sock, const uint8_t *buf, size_t len, size_t off,
                         const int *fds, int nfds) {
  union {
    char buf[CMSG_SPACE(DASH_WIRE_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct iovec iov;
  struct msghdr msg;
  ssize_t n;

  memset(&msg, 0, sizeof(msg));
  iov.iov_base = (void *)(buf + off);
  iov.iov_len = len - off;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (off == 0 && nfds > 0) {
    struct cmsghdr *c;
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
  }
  /* MSG_NOSIGNAL: a vanished peer is an error to return, not a SIGPIPE
   * that kills the daemon or the trainer. */
  n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  return n < 0 ? -(ssize_t)errno : n;
}

static int check_fds(const int *fds, int nfds) {
  if (nfds < 0 || nfds > DASH_WIRE_MAX_FDS || (nfds > 0 && fds == NULL))
    return dash__fail(DASH_E_INVALID, "%d fds: a frame carries 0 to %d", nfds,
                      DASH_WIRE_MAX_FDS);
  return 0;
}

static int check_send_args(const uint8_t *buf, size_t len, const size_t *off,
                           const int *fds, int nfds) {
  if (off == NULL || *off > len || (buf == NULL && len > 0))
    return dash__fail(DASH_E_INVALID, "bad buffer or offset to send");
  if (check_fds(fds, nfds) < 0)
    return DASH_E_INVALID;
  /* Fds ride on data: with nothing to send they would be lost. */
  if (nfds > 0 && len == 0)
    return dash__fail(DASH_E_INVALID, "fds need at least one byte of data");
  return 0;
}

int dash__wire_send(int sock, const Dashpb__Envelope *env, const int *fds,
                    int nfds) {
  uint8_t *frame = NULL;
  size_t len = 0, off = 0;
  int rc;

  rc = check_fds(fds, nfds);
  if (rc < 0)
    goto out;
  rc = dash__wire_encode(env, DASH_WIRE_MAX_FRAME, &frame, &len);
  if (rc < 0)
    goto out;
  while (off < len) {
    ssize_t n = send_once(sock, frame, len, off, fds, nfds);
    if (n == -EINTR)
      continue;
    if (n == -EAGAIN || n == -EWOULDBLOCK) {
      rc = dash__fail(DASH_E_TIMEOUT,
                      "the send timed out after %zu of %zu bytes", off, len);
      goto out;
    }
    if (n < 0) {
      rc = send_error((int)-n);
      goto out;
    }
    off += (size_t)n;
  }
out:
  free(frame);
  return rc;
}

int dash__wire_send_some(int sock, const uint8_t *buf, size_t len, size_t *off,
                         const int *fds, int nfds) {
  int rc = check_send_args(buf, len, off, fds, nfds);
  if (rc < 0)
    return rc;
  while (*off < len) {
    ssize_t n = send_once(sock, buf, len, *off, fds, nfds);
    if (n == -EINTR)
      continue;
    if (n == -EAGAIN || n == -EWOULDBLOCK)
      return 0;
    if (n < 0)
      return send_error((int)-n);
    *off += (size_t)n;
  }
  return 0;
}

void dash__wire_reader_init(dash__wire_reader *r, uint32_t max_frame) {
  memset(r, 0, sizeof(*r));
  r->max_frame = max_frame;
}

void dash__wire_reader_free(dash__wire_reader *r) {
  uint32_t max_frame = r->max_frame;
  for (int i = 0; i < r->nfds; i++)
    if (r->fds[i].fd >= 0)
      close(r->fds[i].fd);
  free(r->buf);
  dash__wire_reader_init(r, max_frame);
}

/* The length of the frame at the head of the buffer, prefix included:
 * 1 with *frame, 0 while fewer than 4 bytes are buffered, or
 * DASH_E_TOO_LARGE. */
static int head_frame(const dash__wire_reader *r, size_t *frame) {
  uint32_t n;
  if (r->len < PREFIX_BYTES)
    return 0;
  n = get_le32(r->buf);
  if (n > r->max_frame || __builtin_add_overflow(PREFIX_BYTES, n, frame))
    return dash__fail(DASH_E_TOO_LARGE,
                      "a frame of %u bytes exceeds the limit of %u bytes",
                      (unsigned)n, (unsigned)r->max_frame);
  return 1;
}

/* Makes room for the next read and sets *room to it. The buffer grows to
 * hold the frame at its head only once that frame's length prefix has
 * been checked against max_frame, so (with frames taken between fills) a
 * peer can make us hold at most 4 + max_frame + READ_CHUNK bytes. *room
 * is 0 when a complete frame waits and the buffer is full. */
static int make_room(dash__wire_reader *r, size_t *room) {
  size_t frame = 0, need = 1, want, cap;
  uint8_t *p;
  int rc = head_frame(r, &frame);

  *room = 0;
  if (rc < 0)
    return rc;
  if (rc == 1 && r->len >= frame) {
    /* A complete frame waits: read into the space there is, never grow,
     * so a reader whose frames are not taken stays bounded. */
    *room = r->cap - r->len;
    return 0;
  }
  if (rc == 1)
    need = frame - r->len;
  if (r->cap - r->len >= need) {
    *room = r->cap - r->len;
    return 0;
  }
  want = need > READ_CHUNK ? need : READ_CHUNK;
  if (__builtin_add_overflow(r->len, want, &cap))
    return dash__fail(DASH_E_TOO_LARGE, "the read buffer would overflow");
  p = realloc(r->buf, cap);
  if (p == NULL)
    return dash__fail(DASH_E_NOMEM, "no memory for a %zu-byte read buffer",
                      cap);
  r->buf = p;
  r->cap = cap;
  *room = cap - r->len;
  return 0;
}

/* Moves the fds of a received message into got[] (at most max; the rest
 * are closed) and closes fds of other kinds of control message. Returns
 * how many landed in got[]. */
static int take_fds(struct msghdr *msg, int *got, int max) {
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL;
       c = CMSG_NXTHDR(msg, c)) {
    size_t count;
    if (c->cmsg_level != SOL_SOCKET)
      continue;
#ifdef SCM_PIDFD
    /* Only with SO_PASSPIDFD, which we never set; but it is an fd. */
    if (c->cmsg_type == SCM_PIDFD) {
      int fd;
      memcpy(&fd, CMSG_DATA(c), sizeof(fd));
      close(fd);
      continue;
    }
#endif
    if (c->cmsg_type != SCM_RIGHTS)
      continue;
    count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      /* CMSG_DATA need not be aligned for int. */
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
      if (n < max)
        got[n++] = fd;
      else
        close(fd);
    }
  }
  return n;
}

int dash__wire_reader_fill(dash__wire_reader *r, int sock) {
  union {
    char buf[CMSG_SPACE(KERNEL_MAX_FDS * sizeof(int)) +
             CMSG_SPACE(sizeof(struct ucred)) + 256];
    struct cmsghdr align;
  } ctl;
  int got[KERNEL_MAX_FDS];
  struct iovec iov;
  struct msghdr msg;
  const char *bad = NULL;
  size_t room;
  ssize_t n;
  uint64_t last;
  int ngot, rc;

  rc = make_room(r, &room);
  if (rc < 0)
    return rc;
  if (room == 0)
    return 0;
  /* The byte count is returned as an int. */
  if (room > INT_MAX)
    room = INT_MAX;
  memset(&msg, 0, sizeof(msg));
  iov.iov_base = r->buf + r->len;
  iov.iov_len = room;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof(ctl.buf);
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return 0;
    if (errno == ECONNRESET)
      return dash__fail(DASH_E_DISCONNECTED, "the peer reset the connection");
    return dash__fail(DASH_E_IO, "recvmsg: %s", strerror(errno));
  }
  /* Take every fd before anything can fail, so that none leaks. */
  ngot = take_fds(&msg, got, KERNEL_MAX_FDS);
  if (n == 0) {
    if (ngot > 0) {
      close_fds(got, ngot);
      return dash__fail(DASH_E_PROTOCOL, "%d fds arrived without data", ngot);
    }
    return dash__fail(DASH_E_DISCONNECTED, "the peer closed the connection");
  }
  /* Linux ends a read right after (or inside) the data of a sendmsg that
   * carried fds, and may glue earlier data in front of it: the last byte
   * of this read is the one that surely belongs to the fds' sendmsg. */
  last = r->consumed + r->len + (uint64_t)n - 1;
  r->len += (size_t)n;
  if (msg.msg_flags & MSG_CTRUNC)
    bad = "control data was truncated";
  else if (ngot > READER_FDS - 1 - r->nfds)
    bad = "more fds arrived than the reader holds";
  if (bad != NULL) {
    close_fds(got, ngot);
    /* The data stays, so the stream stays in sync; an fd of -1 marks the
     * frame that lost its fds, and reader_next drops it. One entry is
     * kept free for this mark; if a peer that sends fds with every byte
     * used it up, the newest entry gives way (its frame may then come
     * without that fd, which the request's fd count check refuses). */
    if (r->nfds == READER_FDS) {
      r->nfds--;
      if (r->fds[r->nfds].fd >= 0)
        close(r->fds[r->nfds].fd);
    }
    r->fds[r->nfds].offset = last;
    r->fds[r->nfds].fd = -1;
    r->nfds++;
    return dash__fail(DASH_E_PROTOCOL, "%s (%d fds closed)", bad, ngot);
  }
  for (int i = 0; i < ngot; i++) {
    r->fds[r->nfds].offset = last;
    r->fds[r->nfds].fd = got[i];
    r->nfds++;
  }
  return (int)n;
}

/* Drops the head frame of frame bytes and its first k fds entries. */
static void consume(dash__wire_reader *r, size_t frame, int k) {
  memmove(r->buf, r->buf + frame, r->len - frame);
  r->len -= frame;
  r->consumed += frame;
  memmove(r->fds, r->fds + k, (size_t)(r->nfds - k) * sizeof(r->fds[0]));
  r->nfds -= k;
  /* Give a large frame's buffer back once it is gone. */
  if (r->len == 0 && r->cap > READ_CHUNK) {
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
  }
}

int dash__wire_reader_next(dash__wire_reader *r, Dashpb__Envelope **env,
                           int *fds, int *nfds) {
  if (env != NULL)
    *env = NULL;
  if (nfds != NULL)
    *nfds = 0;
  if (env == NULL || (fds != NULL && nfds == NULL))
    return dash__fail(DASH_E_INVALID, "dash__wire_reader_next: NULL argument");
  for (;;) {
    size_t frame = 0;
    uint64_t end;
    int k = 0, marked = 0, rc = head_frame(r, &frame);
    int held[READER_FDS];
    Dashpb__Envelope *e;

    if (rc <= 0)
      return rc;
    if (r->len < frame)
      return 0;
    /* fds[] is in stream order and holds nothing before r->consumed, so
     * the frame's fds are the entries before its end. */
    end = r->consumed + frame;
    while (k < r->nfds && r->fds[k].offset < end) {
      if (r->fds[k].fd < 0)
        marked = 1;
      held[k] = r->fds[k].fd;
      k++;
    }
    if (marked) {
      /* Its fds were lost and reader_fill reported it: drop silently. */
      close_fds(held, k);
      consume(r, frame, k);
      continue;
    }
    if (k > DASH_WIRE_MAX_FDS) {
      close_fds(held, k);
      consume(r, frame, k);
      return dash__fail(DASH_E_PROTOCOL, "a frame carried %d fds; at most %d",
                        k, DASH_WIRE_MAX_FDS);
    }
    e = dashpb__envelope__unpack(NULL, frame - PREFIX_BYTES,
                                 r->buf + PREFIX_BYTES);
    if (e == NULL) {
      close_fds(held, k);
      consume(r, frame, k);
      return dash__fail(DASH_E_PROTOCOL, "a frame of %zu bytes does not decode",
                        frame - PREFIX_BYTES);
    }
    if (fds != NULL) {
      memcpy(fds, held, (size_t)k * sizeof(int));
      *nfds = k;
    } else {
      close_fds(held, k);
    }
    consume(r, frame, k);
    *env = e;
    return 1;
  }
}
