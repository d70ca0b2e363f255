"""Client side of dashd: a connection (Client) and its stacks (Stack).

A Stack's ``stats`` is a writable float32 numpy array of shape (N, B, B)
over the shared memory the daemon reads: write the statistics in place
(``stack.stats[:] = L`` or ``np.copyto``), then ``stack.step(i)``.
``torch.from_numpy(stack.stats)`` gives a CPU tensor over the same memory
with no copy, so a trainer can ``torch_view.copy_(factor)`` directly.

Lifetime: a Stack keeps its Client alive, and every array handed out by
``stats``/``result`` keeps its Stack alive. An explicit ``close()``
(of the Stack, or of the Client, which closes its stacks first) frees the
memory at once, though: arrays obtained before must not be touched after
it (the memory is unmapped; touching it crashes the process).
"""
import ctypes
import dataclasses
import os
import threading
import weakref

import numpy as np

from . import _lib
from ._lib import lib
from ._names import parse
from .errors import DashError, E_INVALID, check

__all__ = ["Client", "Stack", "CudaStack", "RefreshInfo"]


@dataclasses.dataclass
class RefreshInfo:
    """What Stack.sync() tells about the result held after it."""
    adopted: bool            # True when this sync adopted a newer result
    generation: int          # 1 for a stack's first result, then +1
    step: int                # the step of the snapshot it came from
    compute_ms: float        # the daemon's time for the computation
    method: str              # the method that ran ("ndb", "evd", ...)
    max_iterations: int      # the most Newton steps of any block
    blocks_by_status: dict   # {"OK": n, "NONFINITE_INPUT": n, ...}
    in_flight: bool          # a refresh is computing or waiting


def _closed_error(what):
    return DashError(E_INVALID, "%s is closed" % what)


class _Closeable:
    """A libdash handle: close() on leaving a with block and, quietly, on
    collection; _h() gives the live handle or raises. Subclasses set
    _what ("client", "stack") and self._handle."""

    _what = "object"

    @property
    def closed(self):
        return self._handle is None

    def _h(self):
        h = self._handle
        if h is None:
            raise _closed_error(self._what)
        return h

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Client(_Closeable):
    """A connection to dashd (dash_connect).

    ``socket_path`` None means libdash's default: $DASHD_SOCKET, else
    /run/dashd/dashd.sock for root, else $XDG_RUNTIME_DIR/dashd.sock.
    Raises DisconnectedError when no daemon answers there.
    Usable as a context manager; close() is idempotent.
    """

    _what = "client"

    def __init__(self, socket_path=None):
        self._handle = None
        self._lock = threading.RLock()
        self._stacks = weakref.WeakSet()
        self.socket_path = (os.fspath(socket_path)
                            if socket_path is not None else None)
        h = ctypes.c_void_p()
        arg = os.fsencode(self.socket_path) if socket_path is not None \
            else None
        check(lib.dash_connect(arg, ctypes.byref(h)))
        self._handle = h

    def ping(self):
        """Round trip to the daemon; returns its time in milliseconds."""
        rtt = ctypes.c_double()
        check(lib.dash_ping(self._h(), ctypes.byref(rtt)))
        return rtt.value

    @staticmethod
    def _options(num_blocks, block_size, root=4, method="ndb", scaling="pi",
                 max_steps=10, tol=1e-3, eps=1e-10, precision="fp32",
                 fallback="diverged"):
        return _lib.DashStackOptions(
            version=_lib.STACK_OPTIONS_VERSION,
            num_blocks=int(num_blocks), block_size=int(block_size),
            root=int(root), method=parse("method", method),
            scaling=parse("scaling", scaling), max_steps=int(max_steps),
            tol=float(tol), eps=float(eps),
            precision=parse("precision", precision),
            fallback=parse("fallback", fallback))

    def create_stack(self, num_blocks, block_size, **options):
        """Registers a stack of num_blocks blocks of block_size^2 floats
        (dash_stack_create); the statistics start zeroed. options: root=4,
        method="ndb", scaling="pi", max_steps=10, tol=1e-3, eps=1e-10,
        precision="fp32", fallback="diverged"."""
        o = self._options(num_blocks, block_size, **options)
        with self._lock:
            h = self._h()
            s = ctypes.c_void_p()
            check(lib.dash_stack_create(h, ctypes.byref(o), ctypes.byref(s)))
            stack = Stack(self, s)
            self._stacks.add(stack)
        return stack

    def create_stack_cuda(self, stats, results, **options):
        """Registers a stack over a GPU trainer's own memory
        (dash_stack_create_cuda): a daemon computing on a GPU opens both
        buffers through CUDA IPC and hands results over on the trainer's
        stream; with a daemon computing on the CPU, libdash copies through
        page-locked shared memory on the trainer's stream instead (step()
        then waits on the CPU for the work queued before it).

        stats: a contiguous float32 CUDA tensor of shape (N, B, B);
        results: one of shape (2, N, B, B), on the same GPU. Either may
        be a view into a larger allocation (PyTorch's caching allocator).
        The stack keeps both tensors alive. options as for create_stack.
        """
        shape = tuple(getattr(stats, "shape", ()))
        if len(shape) != 3 or shape[1] != shape[2]:
            raise DashError(E_INVALID,
                            "stats must be an (N, B, B) CUDA tensor, not %r"
                            % (shape,))
        n, b = shape[0], shape[1]
        _check_cuda_tensor(stats, "stats", (n, b, b))
        _check_cuda_tensor(results, "results", (2, n, b, b))
        device = stats.device.index
        if results.device.index != device:
            raise DashError(E_INVALID, "stats and results are on GPUs %d "
                            "and %d; both must be on one"
                            % (device, results.device.index))
        o = self._options(n, b, **options)
        with self._lock:
            h = self._h()
            s = ctypes.c_void_p()
            check(lib.dash_stack_create_cuda(
                h, ctypes.byref(o), int(device), stats.data_ptr(),
                results.data_ptr(), ctypes.byref(s)))
            stack = CudaStack(self, s, stats, results)
            self._stacks.add(stack)
        return stack

    def close(self):
        """Destroys the stacks still open, then disconnects. Idempotent."""
        with self._lock:
            if self._handle is None:
                return
            for s in list(self._stacks):
                s.close()
            h, self._handle = self._handle, None
            lib.dash_disconnect(h)

    def __repr__(self):
        return "<dash.Client %s%s>" % (
            self.socket_path or "(default socket)",
            " closed" if self.closed else "")


class Stack(_Closeable):
    """A stack registered with dashd; made by Client.create_stack()."""

    _what = "stack"

    def __init__(self, client, handle):
        self._client = client           # keeps the connection alive
        self._handle = handle
        self.num_blocks = int(lib.dash_stack_num_blocks(handle))
        self.block_size = int(lib.dash_stack_block_size(handle))
        self.shape = (self.num_blocks, self.block_size, self.block_size)

    @property
    def client(self):
        return self._client

    def _view(self, ptr):
        n, b = self.num_blocks, self.block_size
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        buf = (ctypes.c_float * (n * b * b)).from_address(addr)
        buf._dash_stack = self          # the array keeps the Stack alive
        return np.ctypeslib.as_array(buf).reshape(n, b, b)

    @property
    def stats(self):
        """The statistics: a writable float32 (N, B, B) numpy view of the
        shared memory (no copy). torch.from_numpy() of it shares it too."""
        return self._view(lib.dash_stack_stats(self._h()))

    @property
    def result(self):
        """The adopted inverse roots: a read-only float32 (N, B, B) view,
        None before the first adoption. Take it again after every sync()
        that adopts: the adopted slot changes, and a view taken before
        shows the other slot, which the daemon overwrites."""
        ptr = lib.dash_stack_result(self._h())
        if not ptr:
            return None
        a = self._view(ptr)
        a.flags.writeable = False
        return a

    def step(self, step):
        """Asks for a refresh from the statistics as they are now; returns
        once the daemon holds its snapshot (dash_step)."""
        check(lib.dash_step(self._h(), int(step), None))

    def sync(self, timeout_ms=0):
        """Adopts the newest finished result (dash_sync). timeout_ms 0:
        only look; -1: wait while a refresh is in flight; > 0: wait at
        most that long. Returns a RefreshInfo."""
        info = _lib.DashRefreshInfo()
        rc = check(lib.dash_sync(self._h(), int(timeout_ms),
                                 ctypes.byref(info)))
        return RefreshInfo(
            adopted=(rc == 1),
            generation=int(info.generation),
            step=int(info.step),
            compute_ms=float(info.compute_ms),
            method=_lib.enum_name("method", info.method),
            max_iterations=int(info.max_iterations),
            blocks_by_status={
                lib.dash_block_status_name(i).decode():
                    int(info.blocks_by_status[i])
                for i in range(_lib.BLOCK_STATUS_COUNT)},
            in_flight=bool(info.in_flight))

    def close(self):
        """Unregisters the stack and frees its memory (dash_stack_destroy);
        arrays taken from stats/result must not be used after. Idempotent;
        fine when the daemon is gone."""
        client = self._client
        with client._lock:
            h, self._handle = self._handle, None
            if h is None:
                return
            client._stacks.discard(self)
            # A closed client has already destroyed its stacks.
            if client._handle is not None:
                lib.dash_stack_destroy(h)

    def __repr__(self):
        return "<dash.Stack N=%d B=%d%s>" % (
            self.num_blocks, self.block_size,
            " closed" if self.closed else "")


def _check_cuda_tensor(t, what, shape):
    """A contiguous float32 CUDA tensor of this shape, or DashError."""
    if not getattr(t, "is_cuda", False):
        raise DashError(E_INVALID, "%s must be a CUDA tensor" % what)
    if str(t.dtype) != "torch.float32":
        raise DashError(E_INVALID, "%s must be float32, not %s"
                        % (what, t.dtype))
    if tuple(t.shape) != shape:
        raise DashError(E_INVALID, "%s has shape %r; the stack needs %r"
                        % (what, tuple(t.shape), shape))
    if not t.is_contiguous():
        raise DashError(E_INVALID, "%s must be contiguous" % what)


def _stream_handle(stream, device):
    """The cudaStream_t of a torch.cuda.Stream, an int, or None (torch's
    current stream on device)."""
    if stream is None:
        import torch
        return torch.cuda.current_stream(device).cuda_stream
    return int(getattr(stream, "cuda_stream", stream))


class CudaStack(Stack):
    """A stack over a GPU trainer's tensors; made by
    Client.create_stack_cuda(). step() and sync() order the hand-over on
    a CUDA stream: kernels queued on it after sync() adopted a result see
    that result complete; the CPU waits for neither."""

    def __init__(self, client, handle, stats, results):
        super().__init__(client, handle)
        self._stats = stats             # kept alive: the daemon maps them
        self._results = results
        self._stream = None

    @property
    def stats(self):
        """The statistics tensor given at creation."""
        self._h()
        return self._stats

    @property
    def result(self):
        """The adopted result slot: a view of the results tensor (no
        copy), None before the first adoption. As for Stack.result, take
        it again after every sync() that adopts."""
        ptr = lib.dash_stack_result_cuda(self._h())
        if not ptr:
            return None
        slot_bytes = self._results[0].numel() * 4
        slot = (ptr - self._results.data_ptr()) // slot_bytes
        return self._results[slot]

    def step(self, step, stream=None):
        """Asks for a refresh (dash_step) ordered on stream: a
        torch.cuda.Stream, a raw cudaStream_t as an int, or None for
        torch's current stream of the tensors' GPU. The trainer's later
        kernels on that stream wait for the daemon's snapshot on the GPU;
        sync() orders its hand-over on the same stream."""
        s = _stream_handle(stream, self._stats.device)
        check(lib.dash_step(self._h(), int(step), s or None))
        self._stream = s

    def __repr__(self):
        return "<dash.CudaStack N=%d B=%d on cuda:%d%s>" % (
            self.num_blocks, self.block_size, self._stats.device.index,
            " closed" if self.closed else "")
