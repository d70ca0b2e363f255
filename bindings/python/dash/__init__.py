"""dash: Python binding of libdash, the client library of dashd.

    import dash
    with dash.Client() as c:                       # or Client("/tmp/d.sock")
        s = c.create_stack(num_blocks, block_size)  # root=4, method="ndb"...
        s.stats[:] = L                # or torch.from_numpy(s.stats).copy_(L)
        s.step(step)                  # returns once the daemon snapshotted
        if s.sync(0).adopted:         # a newer result was adopted
            precondition(s.result)    # read-only (N, B, B) float32 view

    x, infos = dash.roots(a, root=4, method="evd")  # in-process, no daemon

A GPU trainer shares its own tensors instead (CUDA IPC; the daemon needs
backend cuda), and the hand-over is ordered on its CUDA stream:

        s = c.create_stack_cuda(stats, results)  # (N,B,B), (2,N,B,B) cuda
        s.step(step)                  # torch's current stream, or stream=
        if s.sync(0).adopted:
            precondition(s.result)    # a view of results, no copy

``stack.stats`` views the memory shared with the daemon: writes are seen
by the next step() with no copy, and ``torch.from_numpy(stack.stats)`` is
a tensor over the same memory. torch is not imported here; ``dash.optim``
(imported on its own) has the optimizer.

The library is found through $DASH_LIBRARY, this checkout's build*/lib,
or the system (see dash._lib).
"""
import os

from .client import Client, CudaStack, RefreshInfo, Stack
from .errors import DashError, DisconnectedError
from .roots import roots

__version__ = "0.1.0"

__all__ = ["Client", "Stack", "CudaStack", "RefreshInfo", "roots", "DashError",
           "DisconnectedError", "default_socket_path", "__version__"]


def default_socket_path():
    """The socket libdash uses when none is given: $DASHD_SOCKET, else
    /run/dashd/dashd.sock for root, else $XDG_RUNTIME_DIR/dashd.sock;
    None when no rule applies (connecting then fails with E_INVALID)."""
    env = os.environ.get("DASHD_SOCKET")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/dashd/dashd.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "dashd.sock")
    return None
