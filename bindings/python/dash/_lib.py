"""Loads libdash with ctypes and declares the C API used by the binding.

Search order: ``$DASH_LIBRARY``; the build tree of this checkout
(``build/lib/libdash.so``, then any ``build*/lib/libdash.so`` under the
repository root); the system (``ctypes.util.find_library("dash")``, then
``libdash.so.0``).
"""
import ctypes
import ctypes.util
import glob
import os

__all__ = ["lib", "path", "DashStackOptions", "DashRefreshInfo",
           "DashRootsOptions", "DashBlockInfo", "DashRootsReport",
           "BLOCK_STATUS_COUNT"]

BLOCK_STATUS_COUNT = 4          # DASH_BLOCK_STATUS_COUNT
STACK_OPTIONS_VERSION = 1       # DASH_STACK_OPTIONS_VERSION
ROOTS_OPTIONS_VERSION = 2       # DASH_ROOTS_OPTIONS_VERSION


class DashStackOptions(ctypes.Structure):
    """struct dash_stack_options (dash.h)."""
    _fields_ = [
        ("version", ctypes.c_uint),
        ("num_blocks", ctypes.c_size_t),
        ("block_size", ctypes.c_size_t),
        ("root", ctypes.c_int),
        ("method", ctypes.c_int),
        ("scaling", ctypes.c_int),
        ("max_steps", ctypes.c_int),
        ("tol", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("precision", ctypes.c_int),
        ("fallback", ctypes.c_int),
    ]


class DashRefreshInfo(ctypes.Structure):
    """struct dash_refresh_info (dash.h)."""
    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("step", ctypes.c_uint64),
        ("compute_ms", ctypes.c_double),
        ("method", ctypes.c_int),
        ("max_iterations", ctypes.c_int),
        ("blocks_by_status", ctypes.c_uint64 * BLOCK_STATUS_COUNT),
        ("in_flight", ctypes.c_int),
    ]


class DashRootsOptions(ctypes.Structure):
    """struct dash_roots_options (roots.h)."""
    _fields_ = [
        ("version", ctypes.c_uint),
        ("method", ctypes.c_int),
        ("scaling", ctypes.c_int),
        ("backend", ctypes.c_int),
        ("precision", ctypes.c_int),
        ("root", ctypes.c_int),
        ("eps", ctypes.c_double),
        ("max_steps", ctypes.c_int),
        ("tol", ctypes.c_double),
        ("power_steps", ctypes.c_int),
        ("power_scale", ctypes.c_double),
        ("power_vectors", ctypes.c_int),
        ("cheb_degree", ctypes.c_int),
        ("fallback", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("seed", ctypes.c_uint64),
        ("stream_priority", ctypes.c_int),
        ("device_only", ctypes.c_int),
    ]


class DashBlockInfo(ctypes.Structure):
    """struct dash_block_info (roots.h)."""
    _fields_ = [
        ("iterations", ctypes.c_int),
        ("residual", ctypes.c_float),
        ("lambda_max", ctypes.c_float),
        ("status", ctypes.c_int),
    ]


class DashRootsReport(ctypes.Structure):
    """struct dash_roots_report (roots.h)."""
    _fields_ = [
        ("method", ctypes.c_int),
        ("scaling", ctypes.c_int),
        ("backend", ctypes.c_int),
        ("ms_total", ctypes.c_double),
        ("max_iterations", ctypes.c_int),
        ("blocks_by_status", ctypes.c_uint64 * BLOCK_STATUS_COUNT),
    ]


def _candidates():
    env = os.environ.get("DASH_LIBRARY")
    if env:
        # An explicit choice: no silent fallback to another copy.
        return [env], True
    out = []
    here = os.path.dirname(os.path.abspath(__file__))
    d = here
    while True:
        if os.path.isdir(os.path.join(d, ".git")) or os.path.isfile(
                os.path.join(d, "include", "dash", "dash.h")):
            first = os.path.join(d, "build", "lib", "libdash.so")
            if os.path.exists(first):
                out.append(first)
            for p in sorted(glob.glob(os.path.join(d, "build*", "lib",
                                                   "libdash.so"))):
                if p not in out:
                    out.append(p)
            break
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    found = ctypes.util.find_library("dash")
    if found:
        out.append(found)
    out.append("libdash.so.0")
    return out, False


def _load():
    cands, explicit = _candidates()
    errors = []
    for c in cands:
        try:
            return ctypes.CDLL(c), c
        except OSError as e:
            errors.append("%s: %s" % (c, e))
            if explicit:
                break
    raise ImportError(
        "dash: cannot load libdash (set DASH_LIBRARY to the path of "
        "libdash.so, build the tree into build/, or install the dashd "
        "package); tried:\n  " + "\n  ".join(errors))


lib, path = _load()

_P = ctypes.POINTER
_c = ctypes.c_void_p
_int = ctypes.c_int
_sz = ctypes.c_size_t
_fp = _P(ctypes.c_float)


def _decl(name, restype, argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = argtypes


# status.h
_decl("dash_strerror", ctypes.c_char_p, [_int])
_decl("dash_status_name", ctypes.c_char_p, [_int])
_decl("dash_last_error", ctypes.c_char_p, [])
# dash.h (dash_client* and dash_stack* are opaque: c_void_p)
_decl("dash_connect", _int, [ctypes.c_char_p, _P(_c)])
_decl("dash_disconnect", None, [_c])
_decl("dash_stack_create", _int, [_c, _P(DashStackOptions), _P(_c)])
_decl("dash_stack_stats", _fp, [_c])
_decl("dash_step", _int, [_c, ctypes.c_uint64, _c])
_decl("dash_sync", _int, [_c, _int, _P(DashRefreshInfo)])
_decl("dash_stack_result", _fp, [_c])
_decl("dash_stack_create_cuda", _int,
      [_c, _P(DashStackOptions), _int, _c, _c, _P(_c)])
_decl("dash_stack_result_cuda", _c, [_c])
_decl("dash_stack_num_blocks", _sz, [_c])
_decl("dash_stack_block_size", _sz, [_c])
_decl("dash_stack_destroy", _int, [_c])
_decl("dash_ping", _int, [_c, _P(ctypes.c_double)])
# roots.h
_decl("dash_roots_check_shape", _int, [_sz, _sz])
_decl("dash_roots_compute", _int,
      [_fp, _fp, _sz, _sz, _P(DashRootsOptions), _P(DashBlockInfo),
       _P(DashRootsReport)])
_decl("dash_roots_cuda_available", _int, [])
for _kind in ("method", "scaling", "backend", "precision", "fallback"):
    _decl("dash_%s_name" % _kind, ctypes.c_char_p, [_int])
    _decl("dash_%s_parse" % _kind, _int, [ctypes.c_char_p, _P(_int)])
_decl("dash_block_status_name", ctypes.c_char_p, [_int])


def enum_name(kind, value):
    """Name of an enum value ("ndb"), or str(value) for an unknown one."""
    s = getattr(lib, "dash_%s_name" % kind)(int(value))
    return s.decode() if s is not None else str(int(value))


def status_name(status):
    return lib.dash_status_name(int(status)).decode()


def last_error():
    s = lib.dash_last_error()
    return s.decode("utf-8", "replace") if s else ""
