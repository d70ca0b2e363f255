#!/usr/bin/python3
"""The command lines of dashd and dashctl: help, version, bad usage, a bad
configuration file, and dashctl ping/status against a real daemon.

Usage: dashd_cli.py DASHD DASHCTL DASH_BENCH
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

DASHD = DASHCTL = BENCH = None


class DaemonCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.sock = os.path.join(self.tmp.name, "sock")

    def tearDown(self):
        self.tmp.cleanup()

    def run_cmd(self, *args, timeout=30):
        return subprocess.run(list(args), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *extra):
        log = open(os.path.join(self.tmp.name, "log"), "w")
        p = subprocess.Popen([DASHD, "--socket", self.sock, *extra],
                             stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            if r.returncode == 0:
                return p
            time.sleep(0.02)
        p.kill()
        self.fail("dashd did not come up: %s" %
                  open(os.path.join(self.tmp.name, "log")).read())

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=10), 0)
        self.assertFalse(os.path.exists(self.sock))

    def test_help_and_version_exit_zero(self):
        for prog in (DASHD, DASHCTL):
            r = self.run_cmd(prog, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("usage", r.stdout.lower())
            r = self.run_cmd(prog, "--version")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"\d+\.\d+\.\d+")

    def test_bad_usage_exits_two(self):
        self.assertEqual(self.run_cmd(DASHD, "--bogus").returncode, 2)
        self.assertEqual(self.run_cmd(DASHD, "--threads", "-1",
                                      "--socket", self.sock).returncode, 2)
        self.assertEqual(self.run_cmd(DASHD, "--backend", "tpu",
                                      "--socket", self.sock).returncode, 2)
        self.assertEqual(self.run_cmd(DASHCTL, "frobnicate").returncode, 2)
        # A GPU for the CPU backend, a malformed name, a GPU not there.
        r = self.run_cmd(DASHD, "--backend", "cpu", "--device", "0",
                         "--socket", self.sock)
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs backend cuda", r.stderr)
        r = self.run_cmd(DASHD, "--device", "gpu0", "--socket", self.sock)
        self.assertEqual(r.returncode, 2)
        self.assertIn("neither a device ordinal nor GPU-UUID", r.stderr)
        r = self.run_cmd(DASHD, "--device", "GPU-00000000-0000",
                         "--socket", self.sock)
        self.assertEqual(r.returncode, 2)
        self.assertIn("GPU-00000000-0000", r.stderr)

    def test_bad_config_names_file_line_and_key(self):
        conf = os.path.join(self.tmp.name, "dashd.conf")
        with open(conf, "w") as f:
            f.write("# comment\nthreads = 2\nmax_clients = 0\n")
        r = self.run_cmd(DASHD, "--config", conf, "--socket", self.sock)
        self.assertEqual(r.returncode, 2)
        self.assertIn("%s:3" % conf, r.stderr)
        self.assertIn("max_clients", r.stderr)
        self.assertFalse(os.path.exists(self.sock))

    def test_dashctl_without_daemon_exits_one_naming_the_socket(self):
        r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
        self.assertEqual(r.returncode, 1)
        self.assertIn(self.sock, r.stderr)

    def test_ping_and_status_against_a_daemon(self):
        p = self.start("--threads", "1", "--backend", "cpu")
        try:
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("pong", r.stdout)
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "status",
                             "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            st = json.loads(r.stdout)
            self.assertEqual(st["backend"], "cpu")
            self.assertEqual(st["stacks"], [])
            self.assertGreaterEqual(st["clients"], 1)
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "status")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("backend cpu", r.stdout)
            self.assertIn("no stacks", r.stdout)
        finally:
            self.stop(p)

    def read_log(self):
        with open(os.path.join(self.tmp.name, "log")) as f:
            return f.read()

    def wait_log(self, text, seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.read_log():
                return
            time.sleep(0.02)
        self.fail("%r never appeared in the log:\n%s" % (text,
                                                        self.read_log()))

    def test_sighup_reloads_or_keeps_the_configuration(self):
        conf = os.path.join(self.tmp.name, "dashd.conf")
        with open(conf, "w") as f:
            f.write("log_level = info\nmax_clients = 8\n")
        p = self.start("--config", conf)
        try:
            # A bad file is refused as a whole; the daemon keeps serving.
            with open(conf, "w") as f:
                f.write("log_level = debug\nmax_clients = -4\n")
            p.send_signal(signal.SIGHUP)
            self.wait_log("keeping the running configuration")
            self.assertIn("%s:2" % conf, self.read_log())
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            self.assertEqual(r.returncode, 0, r.stderr)
            # A good one is applied; a restart-only key says so.
            with open(conf, "w") as f:
                f.write("log_level = debug\nthreads = 1\n")
            p.send_signal(signal.SIGHUP)
            self.wait_log("configuration reloaded")
            self.assertIn("'threads' changes only on restart", self.read_log())
            # max_clients went back to its default with its line gone.
            self.assertIn("log level debug, max_clients 64", self.read_log())
        finally:
            self.stop(p)

    def test_a_user_not_allowed_is_refused(self):
        conf = os.path.join(self.tmp.name, "dashd.conf")
        with open(conf, "w") as f:
            # Neither this test's uid nor its gid.
            f.write("allowed_uids = %d\nallowed_gids = %d\n" %
                    (os.getuid() + 4242, os.getgid() + 4242))
        log = open(os.path.join(self.tmp.name, "log"), "w")
        p = subprocess.Popen([DASHD, "--socket", self.sock, "--config",
                              conf], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(self.sock):
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            self.assertEqual(r.returncode, 1)
            self.assertIn("not allowed", r.stderr)
        finally:
            self.stop(p)

    def metrics(self):
        r = self.run_cmd(DASHCTL, "--socket", self.sock, "metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        values = {}
        for line in r.stdout.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
        return values

    def test_metrics_over_http(self):
        """--metrics-listen serves GET /metrics (what dashctl metrics
        prints) on TCP; other paths, methods and oversized requests get
        their HTTP errors, and the daemon serves on."""
        import re
        import socket
        import urllib.error
        import urllib.request
        p = self.start("--threads", "1", "--metrics-listen", "127.0.0.1:0")
        try:
            log = open(os.path.join(self.tmp.name, "log")).read()
            m = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics",
                          log)
            self.assertIsNotNone(m, log)
            base = m.group(1)
            with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertIn("version=0.0.4", r.headers["Content-Type"])
                body = r.read().decode()
            self.assertIn("dashd_stacks 0", body)
            self.assertIn("# TYPE dashd_refreshes_total counter", body)
            for path, method, code in (("/nope", "GET", 404),
                                       ("/metrics", "POST", 405)):
                req = urllib.request.Request(base + path, method=method,
                                             data=b"" if method == "POST"
                                             else None)
                with self.assertRaises(urllib.error.HTTPError) as cm:
                    urllib.request.urlopen(req, timeout=5)
                self.assertEqual(cm.exception.code, code)
            host, port = base[len("http://"):].split(":")
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000)
                reply = s.recv(64)
            self.assertTrue(reply.startswith(b"HTTP/1.1 431"), reply)
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=10), 0)
        r = self.run_cmd(DASHD, "--metrics-listen", "localhost:x",
                         "--socket", self.sock)
        self.assertEqual(r.returncode, 2)
        self.assertIn("is not HOST:PORT", r.stderr)

    def test_metrics_count_the_work_done(self):
        p = self.start("--threads", "1")
        try:
            before = self.metrics()
            self.assertEqual(before["dashd_stacks"], 0)
            self.assertEqual(
                before['dashd_refreshes_total{method="ndb",status="ok"}'], 0)
            # 1 warm-up and 3 measured refreshes of a 2x16 NewtonDB stack.
            r = self.run_cmd(BENCH, "--ipc", "--socket", self.sock,
                             "--shape", "2x16", "--repeat", "3")
            self.assertEqual(r.returncode, 0, r.stderr)
            m = self.metrics()
            self.assertEqual(
                m['dashd_refreshes_total{method="ndb",status="ok"}'], 4)
            self.assertEqual(
                m['dashd_refreshes_total{method="evd",status="ok"}'], 0)
            blocks = sum(v for k, v in m.items()
                         if k.startswith("dashd_blocks_total"))
            self.assertEqual(blocks, 4 * 2)
            self.assertEqual(m["dashd_refresh_duration_seconds_count"], 4)
            # Histogram buckets are cumulative and end at the count.
            buckets = [v for k, v in m.items()
                       if k.startswith("dashd_refresh_duration_seconds_bucket")]
            self.assertEqual(buckets, sorted(buckets))
            self.assertEqual(buckets[-1], 4)
            self.assertGreater(m['dashd_device_busy_seconds_total{device="cpu"}'],
                               0)
            # The benchmark's stack is gone with its client.
            self.assertEqual(m["dashd_stacks"], 0)
            self.assertEqual(m["dashd_mapped_bytes"], 0)
            self.assertGreaterEqual(m["dashd_connections_total"], 3)
        finally:
            self.stop(p)

    def test_second_daemon_on_a_live_socket_refuses(self):
        p = self.start()
        try:
            r = self.run_cmd(DASHD, "--socket", self.sock)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("another dashd", r.stderr)
            # The first one still answers.
            r = self.run_cmd(DASHCTL, "--socket", self.sock, "ping")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            self.stop(p)


if __name__ == "__main__":
    DASHD, DASHCTL, BENCH = sys.argv[1], sys.argv[2], sys.argv[3]
    result = unittest.main(argv=sys.argv[:1], exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
