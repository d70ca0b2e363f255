"""Exceptions of the dash binding, one per failed libdash call."""
from . import _lib

__all__ = ["DashError", "DisconnectedError", "check", "E_DISCONNECTED"]

E_INVALID = -1
E_DISCONNECTED = -10


class DashError(Exception):
    """A libdash call failed.

    Attributes: ``status`` (the negative dash_status), ``name``
    (dash_status_name(), e.g. "E_INVALID") and ``message``
    (dash_last_error() right after the call, or dash_strerror() when the
    library recorded no detail). ``str()`` is "E_NAME: message".
    """

    def __init__(self, status, message=None, name=None):
        self.status = int(status)
        self.name = name if name is not None else _lib.status_name(status)
        if message is None:
            message = _lib.last_error()
        if not message:
            message = _lib.lib.dash_strerror(self.status).decode()
        self.message = message
        super().__init__("%s: %s" % (self.name, self.message))

    def __str__(self):
        return "%s: %s" % (self.name, self.message)


class DisconnectedError(DashError):
    """DASH_E_DISCONNECTED: no daemon answers, or it went away."""


def error_for(status, message=None):
    cls = DisconnectedError if status == E_DISCONNECTED else DashError
    return cls(status, message)


def check(rc):
    """Returns rc when it is >= 0, else raises the matching DashError.

    Call it right after the libdash call, on the same thread: the detail
    comes from dash_last_error(), which is per thread and overwritten by
    the next dash call.
    """
    if rc < 0:
        raise error_for(rc)
    return rc
