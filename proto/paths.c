/* The default socket path, one rule for the daemon and the client. */
#include "paths.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include "../kernels/internal.h"

int dash__default_socket_path(char *out, size_t size) {
  /* secure_getenv: a setuid program that loads libdash must not be
   * steered to another socket by its caller's environment. */
  const char *env = secure_getenv("DASHD_SOCKET");
  const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
  int n;
  struct sockaddr_un addr;
  if (env != NULL && env[0] != '\0')
    n = snprintf(out, size, "%s", env);
  else if (geteuid() == 0)
    n = snprintf(out, size, "/run/dashd/dashd.sock");
  else if (xdg != NULL && xdg[0] != '\0')
    n = snprintf(out, size, "%s/dashd.sock", xdg);
  else
    return dash__fail(DASH_E_INVALID,
                      "no socket path: set DASHD_SOCKET or XDG_RUNTIME_DIR, "
                      "or pass one");
  if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(addr.sun_path))
    return dash__fail(DASH_E_INVALID,
                      "socket path too long (%d bytes; %zu "
                      "fit a Unix socket address)",
                      n, sizeof(addr.sun_path) - 1);
  return 0;
}
