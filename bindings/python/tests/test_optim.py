"""Tests of dash.optim.DashShampoo against a real dashd.

Environment: $DASHD (the daemon binary), $DASH_LIBRARY (libdash) and
PYTHONPATH holding bindings/python; ctest sets all three
(tests/python_optim_tests.cmake).
"""
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import warnings

import torch

import dash
from dash.optim import DashShampoo

DASHD = os.environ.get("DASHD")


def start_dashd(socket_path):
    """Starts dashd on socket_path and waits until it answers a ping."""
    proc = subprocess.Popen([DASHD, "--socket", socket_path, "--threads", "1",
                             "--log-level", "warn"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("dashd exited with %d" % proc.returncode)
        try:
            c = dash.Client(socket_path)
            c.ping()
            c.close()
            return proc
        except dash.DashError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("dashd did not answer within 20 s")


def stop_dashd(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def problem(seed=0):
    """A fixed small classification problem: 256 points in 20 dimensions,
    3 classes given by a random linear map, and a 2-layer MLP whose weights
    (40×20 and 3×40) cut into 16-blocks with edge blocks of 8, 4 and 3."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(256, 20, generator=g)
    w = torch.randn(20, 3, generator=g)
    y = (x @ w).argmax(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(20, 40), torch.nn.ReLU(),
                                torch.nn.Linear(40, 3))
    return model, x, y


def train(model, opt, x, y, steps):
    loss = None
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return loss.item()


def loss_of(model, x, y):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item()


OPTS = dict(lr=1e-2, block_size=16, precondition_frequency=5,
            matrix_eps=1e-6, weight_decay=1e-3)


@unittest.skipUnless(DASHD and os.path.exists(DASHD), "$DASHD not set")
class DashShampooTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="dash-optim-")
        cls.sock = os.path.join(cls.dir, "dashd.sock")
        cls.nosock = os.path.join(cls.dir, "nobody.sock")
        cls.proc = start_dashd(cls.sock)

    @classmethod
    def tearDownClass(cls):
        stop_dashd(cls.proc)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def in_process(self, params, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt = DashShampoo(params, socket_path=self.nosock, **kw)
        self.assertTrue(opt.in_process)
        return opt

    # (1) The daemon, synchronous, gives what the in-process path gives.
    def test_sync_daemon_matches_in_process(self):
        m1, x, y = problem()
        m2, _, _ = problem()
        o1 = DashShampoo(m1.parameters(), socket_path=self.sock,
                         async_refresh=False, **OPTS)
        self.assertFalse(o1.in_process)
        o2 = self.in_process(m2.parameters(), **OPTS)
        l1 = train(m1, o1, x, y, 50)
        l2 = train(m2, o2, x, y, 50)
        self.assertEqual(o1.refreshes, 10)
        self.assertEqual(o2.refreshes, 10)
        for (name, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
            rel = ((p1 - p2).norm() / p2.norm()).item()
            self.assertLessEqual(rel, 1e-5, name)
        self.assertAlmostEqual(l1, l2, places=5)
        o1.close()

    # (2) Asynchronous refresh trains. Measured: initial loss 1.112; after 60
    # steps 0.0058 .. 0.0066 asynchronously (which step a refresh is adopted
    # on depends on timing), 0.0058 synchronously and in process, 0.0131 for
    # torch AdamW with the same lr and weight decay. The threshold 0.05 is
    # ≈8× the worst asynchronous run, so that a slow, loaded machine whose
    # daemon adopts late (the update is then plain Adam) still passes,
    # while an optimizer that does not train (loss stays near 1.1) fails.
    def test_async_trains(self):
        model, x, y = problem()
        l0 = loss_of(model, x, y)
        opt = DashShampoo(model.parameters(), socket_path=self.sock, **OPTS)
        loss = train(model, opt, x, y, 60)
        self.assertGreater(l0, 1.0)
        self.assertLess(loss, 0.05)
        self.assertGreaterEqual(opt.refreshes, 1)
        self.assertIsNotNone(opt.generation)
        opt.close()

    # (3) The daemon dies: training continues on the last roots; a new
    # daemon on the same socket is picked up again.
    def test_daemon_killed_and_restarted(self):
        sock = os.path.join(self.dir, "killed.sock")
        proc = start_dashd(sock)
        try:
            model, x, y = problem()
            opt = DashShampoo(model.parameters(), socket_path=sock,
                              max_staleness=1, **OPTS)
            train(model, opt, x, y, 12)
            self.assertTrue(opt.connected)
            before = opt.refreshes
            self.assertGreaterEqual(before, 2)
            roots = [r.clone() for st in opt.state.values()
                     for r in st.get("L_root", [])]
            proc.kill()
            proc.wait()
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                loss = train(model, opt, x, y, 15)
            lost = [x for x in w if "lost dashd" in str(x.message)]
            self.assertEqual(len(lost), 1)
            self.assertFalse(opt.connected)
            self.assertFalse(opt.in_process)
            self.assertEqual(opt.refreshes, before)
            now = [r for st in opt.state.values()
                   for r in st.get("L_root", [])]
            for a, b in zip(roots, now):
                self.assertTrue(torch.equal(a, b))
            self.assertTrue(all(torch.isfinite(p).all()
                                for p in model.parameters()))
            self.assertLess(loss, 1.0)
            proc = start_dashd(sock)
            train(model, opt, x, y, 12)
            self.assertTrue(opt.connected)
            self.assertGreater(opt.refreshes, before)
            self.assertIsNotNone(opt.generation)
            opt.close()
        finally:
            stop_dashd(proc)

    # (4) state_dict round trip, through torch.save/torch.load.
    def test_state_dict_round_trip(self):
        model, x, y = problem()
        opt = DashShampoo(model.parameters(), socket_path=self.sock,
                          async_refresh=False, **OPTS)
        train(model, opt, x, y, 15)
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()},
                   buf)
        buf.seek(0)
        saved = torch.load(buf)
        model2, _, _ = problem(seed=99)
        opt2 = DashShampoo(model2.parameters(), socket_path=self.sock,
                           async_refresh=False, **OPTS)
        model2.load_state_dict(saved["model"])
        opt2.load_state_dict(saved["opt"])
        for p, p2 in zip(model.parameters(), model2.parameters()):
            st, st2 = opt.state[p], opt2.state[p2]
            self.assertEqual(sorted(st), sorted(st2))
            self.assertEqual(st["step"], 15)
            self.assertEqual(st2["step"], 15)
            for key in ("exp_avg", "exp_avg_sq"):
                self.assertTrue(torch.equal(st[key], st2[key]))
            for key in ("L", "R", "L_root", "R_root"):
                for a, b in zip(st.get(key, []), st2.get(key, [])):
                    self.assertTrue(torch.equal(a, b))
        # Step 16 is a refresh step (1 + 3·5): opt2 re-creates its stacks.
        train(model, opt, x, y, 1)
        train(model2, opt2, x, y, 1)
        self.assertEqual(opt2.refreshes, 1)
        for p1, p2 in zip(model.parameters(), model2.parameters()):
            self.assertTrue(torch.equal(p1, p2))
        # and one more (no refresh) step
        train(model, opt, x, y, 1)
        train(model2, opt2, x, y, 1)
        for p1, p2 in zip(model.parameters(), model2.parameters()):
            self.assertTrue(torch.equal(p1, p2))
        opt.close()
        opt2.close()

    # (5) No daemon at construction: one warning, in-process roots.
    def test_no_daemon_warns_once(self):
        model, x, y = problem()
        with self.assertWarns(RuntimeWarning):
            opt = DashShampoo(model.parameters(), socket_path=self.nosock,
                              **OPTS)
        self.assertTrue(opt.in_process)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            train(model, opt, x, y, 12)
        self.assertEqual([str(x.message) for x in w], [])
        self.assertEqual(opt.refreshes, 3)

    # 1-D parameters get AdamW; 4-D weights are reshaped.
    def test_conv_and_bias(self):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 5, 3)
        x = torch.randn(4, 3, 8, 8)
        opt = self.in_process(conv.parameters(), lr=1e-2, block_size=16,
                              precondition_frequency=2)
        for _ in range(5):
            opt.zero_grad()
            conv(x).pow(2).mean().backward()
            opt.step()
        st = opt.state[conv.weight]
        self.assertEqual([tuple(l.shape) for l in st["L"]], [(5, 5), (5, 5)])
        self.assertEqual([tuple(r.shape) for r in st["R"]],
                         [(16, 16), (11, 11)])
        self.assertNotIn("L", opt.state[conv.bias])
        self.assertTrue(torch.isfinite(conv.weight).all())


if __name__ == "__main__":
    unittest.main()
