/* Framing of the dashd control protocol, shared by the daemon and the
 * client: a 4-byte little-endian length, then one dashpb.Envelope; fds
 * ride with the frame that names them (SCM_RIGHTS on the same sendmsg).
 * Internal: never installed, never part of the public headers. */
#ifndef DASH_PROTO_WIRE_H
#define DASH_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "dash.pb-c.h"

/* Protocol version carried in every Envelope. */
#define DASH_WIRE_VERSION 1u
/* Hard limit of one frame's payload, checked before anything is
 * allocated for it. */
#define DASH_WIRE_MAX_FRAME (1u << 20)
/* Most fds one frame may carry: a CUDA_VMM_FD stack sends one per
 * physical allocation of its two buffers. */
#define DASH_WIRE_MAX_FDS 64

/* Packs env into a new frame (length prefix included). *out is malloc'd;
 * the caller frees it. 0, DASH_E_TOO_LARGE (over max_frame), or
 * DASH_E_NOMEM. */
int dash__wire_encode(const Dashpb__Envelope *env, uint32_t max_frame,
                      uint8_t **out, size_t *len);

/* Sends a whole frame with nfds fds (sent with its first byte) on a
 * blocking socket, with MSG_NOSIGNAL. 0, DASH_E_DISCONNECTED (peer
 * gone), DASH_E_TOO_LARGE, DASH_E_INVALID (nfds out of range), DASH_E_IO,
 * or DASH_E_TIMEOUT when the socket's SO_SNDTIMEO expired (or it was
 * non-blocking and full) mid-frame: the stream is then broken. */
int dash__wire_send(int sock, const Dashpb__Envelope *env, const int *fds,
                    int nfds);

/* Sends as much of buf as the socket takes now (non-blocking sockets),
 * with fds on the first byte when *off == 0. Advances *off. 0 when all is
 * sent (*off == len) or the socket would block; DASH_E_DISCONNECTED;
 * DASH_E_IO; DASH_E_INVALID (*off > len, nfds out of range, or fds with
 * an empty buf). When fds are given, buf must be exactly the frame that
 * names them (the reader finds a sendmsg's fds by its bytes); buffers
 * without fds may hold many frames. */
int dash__wire_send_some(int sock, const uint8_t *buf, size_t len, size_t *off,
                         const int *fds, int nfds);

/* An fd received at a byte offset of the stream. Linux hands a sendmsg's
 * fds to the read that takes that sendmsg's first byte, ends that read
 * within or right after that sendmsg's data, but may glue earlier data
 * in front of it; so the last byte of the read is the one known to be
 * the fds' sendmsg's, and it lies within the frame that carried them. */
struct dash__wire_fd {
  uint64_t offset; /* stream offset of the last byte of its recvmsg */
  int fd;          /* -1: marks a frame whose fds were lost (dropped) */
};

/* Incremental reassembly of frames and their fds from a stream socket. */
typedef struct dash__wire_reader {
  uint8_t *buf; /* bytes received and not yet consumed */
  size_t len, cap;
  uint64_t consumed; /* stream offset of buf[0] */
  struct dash__wire_fd fds[2 * DASH_WIRE_MAX_FDS];
  int nfds;
  uint32_t max_frame;
} dash__wire_reader;

void dash__wire_reader_init(dash__wire_reader *r, uint32_t max_frame);
/* Frees the buffer and closes every fd still held. */
void dash__wire_reader_free(dash__wire_reader *r);

/* One recvmsg (MSG_CMSG_CLOEXEC) of what the socket holds. Returns the
 * number of bytes read (> 0); 0 when a non-blocking socket has nothing
 * (or SO_RCVTIMEO expired), or when a complete frame waits and the buffer
 * is full (take frames with dash__wire_reader_next first);
 * DASH_E_DISCONNECTED at end of stream; DASH_E_PROTOCOL when control
 * data was truncated (MSG_CTRUNC) or more fds arrived than a reader
 * holds: the fds that did arrive are closed, the bytes are kept (the
 * stream stays in sync) and dash__wire_reader_next drops the frame they
 * came with without reporting it again; DASH_E_PROTOCOL too when fds
 * came with no data (they are closed; end of stream follows);
 * DASH_E_TOO_LARGE
 * when the buffered length prefix exceeds max_frame (as
 * dash__wire_reader_next reports; nothing is read); DASH_E_NOMEM;
 * DASH_E_IO. Take every complete frame between two fills. */
int dash__wire_reader_fill(dash__wire_reader *r, int sock);

/* Takes the next complete frame. Returns 1 with *env (free it with
 * dashpb__envelope__free_unpacked(*env, NULL)) and in fds[] (room for
 * DASH_WIRE_MAX_FDS) the *nfds fds that arrived within the frame's bytes;
 * the caller owns them and must close the ones the request does not call
 * for. fds and nfds may both be NULL: a frame's fds are then closed.
 * An Envelope of another version is returned as it is. 0 when no
 * complete frame is buffered. DASH_E_TOO_LARGE when a
 * length prefix exceeds max_frame: the stream cannot be resynchronised,
 * drop the connection. DASH_E_PROTOCOL when a frame does not decode or
 * carried more than DASH_WIRE_MAX_FDS fds: the frame and all its fds are
 * dropped (closed), *env is NULL, and the stream stays in sync. */
int dash__wire_reader_next(dash__wire_reader *r, Dashpb__Envelope **env,
                           int *fds, int *nfds);

#endif
