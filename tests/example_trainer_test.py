#!/usr/bin/python3
"""Runs examples/trainer.c against a real dashd and checks that it learns.

Usage: example_trainer_test.py DASHD DASHCTL TRAINER [DASHD-ARG...]

Extra arguments go to dashd: with "--backend cuda" the daemon computes on
the GPU from the trainer's shared memory, and without a device the test
prints "skipped: no CUDA device" and exits 77.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import running_dashd  # noqa: E402

dashd, dashctl, trainer = sys.argv[1:4]
extra = sys.argv[4:]
if "cuda" in extra:
    # dashd refuses --backend cuda at once, exit 2, without a device.
    with tempfile.TemporaryDirectory() as tmp:
        probe = subprocess.Popen(
            [dashd, "--backend", "cuda", "--socket", tmp + "/sock"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = probe.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            probe.terminate()
            out, _ = probe.communicate()
    # Without a GPU, a driver or the plugin (a build without CUDA) dashd
    # says why in a line that starts "dashd: backend cuda:".
    if probe.returncode == 2 and "backend cuda:" in out:
        print("skipped: no CUDA device")
        sys.exit(77)
with running_dashd(dashd, dashctl, "--threads", "1", *extra) as d:
    if extra:
        st = subprocess.run([dashctl, "--socket", d.sock, "status"],
                            capture_output=True, text=True)
        print(st.stdout, end="")
        assert "backend cuda" in st.stdout, "dashd is not on CUDA"
    r = subprocess.run([trainer, "--socket", d.sock, "--steps", "300"],
                       capture_output=True, text=True, timeout=90)
print(r.stdout, end="")
print(r.stderr, end="", file=sys.stderr)
assert r.returncode == 0, "trainer exited %d" % r.returncode
first = re.search(r"^step +0 +loss ([0-9.]+)", r.stdout, re.M)
final = re.search(r"^final loss ([0-9.]+) accuracy ([0-9.]+) "
                  r"refreshes (\d+)$", r.stdout, re.M)
assert first and final, "unexpected output"
initial, loss, refreshes = (float(first.group(1)), float(final.group(1)),
                            int(final.group(3)))
assert loss <= 0.25 * initial, \
    "final loss %.4f > 0.25 x initial %.4f" % (loss, initial)
assert refreshes >= 20, "only %d refreshes adopted" % refreshes
print("ok: initial %.4f final %.4f refreshes %d" % (initial, loss, refreshes))
print("1 passed, 0 failed")
