#!/usr/bin/python3
"""Runs examples/trainer.c against a real dashd and checks that it learns.

Usage: example_trainer_test.py DASHD DASHCTL TRAINER
"""
import os, re, signal, subprocess, sys, tempfile, time

dashd, dashctl, trainer = sys.argv[1:4]
with tempfile.TemporaryDirectory() as tmp:
    sock = os.path.join(tmp, "sock")
    log = open(os.path.join(tmp, "log"), "w")
    d = subprocess.Popen([dashd, "--socket", sock, "--threads", "1"],
                         stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([dashctl, "--socket", sock, "ping"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or d.poll() is not None:
                sys.exit("dashd did not come up: " +
                         open(os.path.join(tmp, "log")).read())
            time.sleep(0.05)
        r = subprocess.run([trainer, "--socket", sock, "--steps", "300"],
                           capture_output=True, text=True, timeout=90)
    finally:
        if d.poll() is None:
            d.send_signal(signal.SIGTERM)
        drc = d.wait(timeout=10)
    print(r.stdout, end="")
    print(r.stderr, end="", file=sys.stderr)
    assert r.returncode == 0, "trainer exited %d" % r.returncode
    assert drc == 0, "dashd exited %d on SIGTERM" % drc
    first = re.search(r"^step +0 +loss ([0-9.]+)", r.stdout, re.M)
    final = re.search(r"^final loss ([0-9.]+) accuracy ([0-9.]+) "
                      r"refreshes (\d+)$", r.stdout, re.M)
    assert first and final, "unexpected output"
    initial, loss, refreshes = (float(first.group(1)),
                                float(final.group(1)), int(final.group(3)))
    assert loss <= 0.25 * initial, \
        "final loss %.4f > 0.25 x initial %.4f" % (loss, initial)
    assert refreshes >= 20, "only %d refreshes adopted" % refreshes
    print("ok: initial %.4f final %.4f refreshes %d" %
          (initial, loss, refreshes))
