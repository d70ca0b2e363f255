"""Enum names <-> values through libdash's own parsers."""
import ctypes

from . import _lib
from .errors import DashError, E_INVALID

_KINDS = ("method", "scaling", "backend", "precision", "fallback")


def parse(kind, name):
    """The value of an enum name ("ndb", "evd", "pi", ...) as libdash
    parses it; DashError E_INVALID for an unknown name."""
    if kind not in _KINDS:
        raise ValueError("unknown enum kind %r" % (kind,))
    if not isinstance(name, str):
        raise DashError(E_INVALID, "%s must be a name (str), not %r"
                        % (kind, name))
    out = ctypes.c_int()
    rc = getattr(_lib.lib, "dash_%s_parse" % kind)(name.encode(),
                                                   ctypes.byref(out))
    if rc < 0:
        detail = _lib.last_error() or "unknown %s %r" % (kind, name)
        raise DashError(rc, detail)
    return out.value
