/* Where the daemon listens and the client connects by default. Internal. */
#ifndef DASH_PROTO_PATHS_H
#define DASH_PROTO_PATHS_H

#include <stddef.h>

/* $DASHD_SOCKET when set; else /run/dashd/dashd.sock for root; else
 * $XDG_RUNTIME_DIR/dashd.sock. 0, or DASH_E_INVALID (detail in
 * dash_last_error()) when none applies or the path does not fit. */
int dash__default_socket_path(char *out, size_t size);

#endif
