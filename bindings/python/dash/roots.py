"""In-process inverse roots through libdash's dash_roots_compute (CPU)."""
import ctypes

import numpy as np

from . import _lib
from ._lib import lib
from ._names import parse
from .errors import check

__all__ = ["roots"]

_FP = ctypes.POINTER(ctypes.c_float)


def _options(**kw):
    """A dash_roots_options holding DASH_ROOTS_OPTIONS_INIT's values."""
    o = _lib.DashRootsOptions(
        version=_lib.ROOTS_OPTIONS_VERSION, method=1,  # NEWTON_DB
        scaling=0, backend=1, precision=0, root=4,     # POWER_ITER, CPU, FP32
        eps=1e-10, max_steps=10, tol=1e-3, power_steps=10, power_scale=2.0,
        power_vectors=16, cheb_degree=20, fallback=1,  # DIVERGED
        threads=0, seed=0x5eed)
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def roots(a, *, root=4, method="auto", scaling="pi", max_steps=10, tol=1e-3,
          eps=1e-10, fallback="diverged", threads=0):
    """X_i = (A_i + eps I)^(-1/root) of every block of ``a``, computed in
    this process on the CPU (dash_roots_compute).

    ``a``: (N, B, B) or (B, B), symmetric PSD; converted to a C-contiguous
    float32 array (copied only when needed; never written). Returns
    ``(x, infos)``: x float32 of a's shape, infos a list of N dicts with
    "iterations", "residual", "lambda_max" and "status" (the block status
    name: "OK", "NONFINITE_INPUT", "NOT_CONVERGED", "FALLBACK_EVD").
    Raises DashError (E_INVALID for a bad name or option, E_UNSUPPORTED
    for a method/root pair that does not exist, ...).
    """
    arr = np.ascontiguousarray(a, dtype=np.float32)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError("roots: expected an (N, B, B) or (B, B) array, got "
                         "shape %s" % (np.shape(a),))
    n, b = arr.shape[0], arr.shape[1]
    o = _options(method=parse("method", method),
                 scaling=parse("scaling", scaling), root=int(root),
                 eps=float(eps), max_steps=int(max_steps), tol=float(tol),
                 fallback=parse("fallback", fallback), threads=int(threads))
    out = np.zeros_like(arr)
    infos = (_lib.DashBlockInfo * max(n, 1))()
    check(lib.dash_roots_compute(out.ctypes.data_as(_FP),
                                 arr.ctypes.data_as(_FP), n, b,
                                 ctypes.byref(o), infos, None))
    result = [{"iterations": int(infos[i].iterations),
               "residual": float(infos[i].residual),
               "lambda_max": float(infos[i].lambda_max),
               "status": _lib.lib.dash_block_status_name(
                   infos[i].status).decode()} for i in range(n)]
    return (out[0] if squeeze else out), result
