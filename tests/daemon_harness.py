"""A dashd for a test: started on a socket in a temporary directory,
waited for with dashctl ping, stopped with SIGTERM, required to exit 0."""

import contextlib
import os
import signal
import subprocess
import tempfile
import time


class Daemon:
    def __init__(self, proc, sock, log_path):
        self.proc, self.sock, self.log_path = proc, sock, log_path

    def log(self):
        with open(self.log_path) as f:
            return f.read()


@contextlib.contextmanager
def running_dashd(dashd, dashctl, *args, ready_seconds=10):
    """Yields a Daemon; its exit status on SIGTERM must be 0."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "sock")
        log_path = os.path.join(tmp, "log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([dashd, "--socket", sock, *args],
                                    stdout=log, stderr=log)
        d = Daemon(proc, sock, log_path)
        try:
            deadline = time.monotonic() + ready_seconds
            while subprocess.run([dashctl, "--socket", sock, "ping"],
                                 capture_output=True).returncode != 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("dashd did not come up: " + d.log())
                time.sleep(0.02)
            yield d
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=10)
        assert rc == 0, "dashd exited %d on SIGTERM: %s" % (rc, d.log())
