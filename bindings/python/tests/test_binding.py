"""The Python binding (bindings/python/dash) against libdash and a real
dashd: in-process roots against a float64 reference, errors, and a stack's
whole round trip (shared statistics, step, sync, result) including a
daemon that dies under it.

Environment: PYTHONPATH with bindings/python, DASH_LIBRARY (libdash.so)
and DASHD (the daemon); ctest sets all three.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

import dash

DASHD = os.environ.get("DASHD")

# torch is imported only by the test that needs it.
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def spd_stack(n, b, cond, seed=0):
    """n blocks Q diag(lam) Q^T with a known spectrum lam (log-spaced from
    1 down to 1/cond), float64, and their exact inverse 4th roots."""
    rng = np.random.default_rng(seed)
    a = np.empty((n, b, b))
    x = np.empty((n, b, b))
    for i in range(n):
        q, _ = np.linalg.qr(rng.standard_normal((b, b)))
        lam = np.logspace(0, -np.log10(cond), b) * (1 + i)
        a[i] = (q * lam) @ q.T
        x[i] = (q * (lam + 1e-10) ** -0.25) @ q.T
    return a, x


def rel_err(x, ref):
    """Largest per-block relative Frobenius error."""
    x = np.asarray(x, dtype=np.float64).reshape(ref.shape)
    d = np.linalg.norm((x - ref).reshape(len(ref), -1), axis=1)
    return float(np.max(d / np.linalg.norm(ref.reshape(len(ref), -1),
                                            axis=1)))


class RootsTest(unittest.TestCase):
    """dash.roots(): in-process, no daemon needed."""

    def test_evd_matches_float64_reference(self):
        # cond 1e3: the fp32 rounding of the input itself stays far
        # below the tolerance (at 1e4 it alone costs ~1e-4).
        a, ref = spd_stack(3, 32, cond=1e3)
        x, infos = dash.roots(a.astype(np.float32), method="evd")
        self.assertEqual(x.shape, a.shape)
        self.assertEqual(x.dtype, np.float32)
        # Measured ~4e-6; 1e-4 relative Frobenius per block.
        self.assertLess(rel_err(x, ref), 1e-4)
        self.assertEqual(len(infos), 3)
        self.assertEqual({i["status"] for i in infos}, {"OK"})
        self.assertEqual(set(infos[0]),
                         {"iterations", "residual", "lambda_max", "status"})

    def test_ndb_matches_float64_reference(self):
        a, ref = spd_stack(3, 32, cond=1e3, seed=1)
        x, infos = dash.roots(a.astype(np.float32), method="ndb",
                              max_steps=30)
        # Measured ~3e-6 (the step that meets tol = 1e-3 converges
        # quadratically); 1e-4 relative Frobenius per block.
        self.assertLess(rel_err(x, ref), 1e-4)
        for i in infos:
            self.assertIn(i["status"], ("OK", "FALLBACK_EVD"))
            self.assertGreater(i["iterations"], 0)
            self.assertGreater(i["lambda_max"], 0)

    def test_single_block_keeps_its_shape(self):
        a, ref = spd_stack(1, 16, cond=10, seed=2)
        x, infos = dash.roots(a[0], method="evd")  # float64 in: converted
        self.assertEqual(x.shape, (16, 16))
        self.assertEqual(len(infos), 1)
        self.assertLess(rel_err(x[None], ref), 1e-4)

    def test_non_contiguous_input_is_copied_not_written(self):
        a, ref = spd_stack(2, 8, cond=10, seed=3)
        f = np.asfortranarray(a.astype(np.float32))
        before = f.copy()
        x, _ = dash.roots(f, method="evd")
        self.assertLess(rel_err(x, ref), 1e-4)
        np.testing.assert_array_equal(f, before)

    def test_bad_method_name_is_e_invalid(self):
        with self.assertRaises(dash.DashError) as cm:
            dash.roots(np.eye(4, dtype=np.float32), method="no-such-method")
        e = cm.exception
        self.assertEqual(e.name, "E_INVALID")
        self.assertEqual(e.status, -1)
        self.assertNotIsInstance(e, dash.DisconnectedError)
        self.assertTrue(str(e).startswith("E_INVALID: "), str(e))

    def test_bad_shape_is_value_error(self):
        with self.assertRaises(ValueError):
            dash.roots(np.zeros((2, 3, 4), dtype=np.float32))

    def test_unsupported_root_names_the_error(self):
        with self.assertRaises(dash.DashError) as cm:
            dash.roots(np.eye(4, dtype=np.float32), method="ndb", root=3)
        self.assertIn(cm.exception.name, ("E_UNSUPPORTED", "E_INVALID"))

    def test_package_import_does_not_import_torch(self):
        code = ("import sys, dash; "
                "sys.exit(1 if 'torch' in sys.modules else 0)")
        r = subprocess.run([sys.executable, "-c", code], timeout=60)
        self.assertEqual(r.returncode, 0)


class DaemonCase(unittest.TestCase):
    """Starts dashd on a temporary socket before each test, stops it with
    SIGTERM after, and requires a clean exit."""

    # Extra environment of the daemon (a subclass's fault injection).
    daemon_env = {}
    # The daemon's --backend.
    backend = "cpu"

    def setUp(self):
        if not DASHD:
            self.skipTest("DASHD is not set")
        self.dir = tempfile.mkdtemp(prefix="dash-py-")
        self.sock = os.path.join(self.dir, "dashd.sock")
        self.log = open(os.path.join(self.dir, "dashd.log"), "w+")
        self.proc = subprocess.Popen(
            [DASHD, "--socket", self.sock, "--threads", "1",
             "--backend", self.backend, "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, **self.daemon_env))
        self.killed = False
        self.clients = []
        deadline = time.monotonic() + 15
        while True:
            try:
                c = dash.Client(self.sock)
                c.close()
                break
            except dash.DisconnectedError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    self.fail("dashd did not come up: " + self._log())
                time.sleep(0.02)

    def _log(self):
        self.log.seek(0)
        return self.log.read()

    def tearDown(self):
        for c in self.clients:
            c.close()
        if not self.killed:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout"
        self.log.close()
        with open(os.path.join(self.dir, "dashd.log")) as f:
            log = f.read()
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self.killed:
            self.assertEqual(rc, 0, "dashd exit status; log:\n" + log)

    def client(self):
        c = dash.Client(self.sock)
        self.clients.append(c)
        return c


class StackTest(DaemonCase):

    def test_missing_socket_is_disconnected(self):
        with self.assertRaises(dash.DisconnectedError) as cm:
            dash.Client(os.path.join(self.dir, "nobody.sock"))
        self.assertEqual(cm.exception.status, -10)
        self.assertEqual(cm.exception.name, "E_DISCONNECTED")
        self.assertIsInstance(cm.exception, dash.DashError)

    def test_ping(self):
        with dash.Client(self.sock) as c:
            self.assertGreaterEqual(c.ping(), 0.0)
        self.assertTrue(c.closed)

    def test_step_sync_adopts_and_matches_roots(self):
        c = self.client()
        s = c.create_stack(4, 16)
        self.assertEqual((s.num_blocks, s.block_size), (4, 16))
        self.assertIsNone(s.result)
        stats = s.stats
        self.assertEqual(stats.shape, (4, 16, 16))
        self.assertEqual(stats.dtype, np.float32)
        self.assertTrue(stats.flags.writeable)
        self.assertFalse(stats.any())              # zeroed by libdash
        a, _ = spd_stack(4, 16, cond=1e2, seed=4)
        stats[:] = a
        s.step(7)
        info = s.sync(-1)
        self.assertTrue(info.adopted)
        self.assertEqual(info.step, 7)
        self.assertEqual(info.generation, 1)
        self.assertEqual(info.method, "ndb")
        self.assertEqual(sum(info.blocks_by_status.values()), 4)
        self.assertEqual(set(info.blocks_by_status),
                         {"OK", "NONFINITE_INPUT", "NOT_CONVERGED",
                          "FALLBACK_EVD"})
        self.assertFalse(info.in_flight)
        r = s.result
        self.assertEqual(r.shape, (4, 16, 16))
        # The daemon's math is libdash's: same options, same answer.
        x, _ = dash.roots(stats, method="ndb", threads=1)
        ref = x.astype(np.float64)
        self.assertLess(rel_err(r, ref), 1e-5)
        # Nothing new: a look adopts nothing and keeps the result.
        again = s.sync(0)
        self.assertFalse(again.adopted)
        self.assertEqual(again.generation, 1)
        np.testing.assert_array_equal(s.result, r)

    def test_result_is_read_only(self):
        c = self.client()
        s = c.create_stack(1, 4)
        s.stats[0] = np.eye(4, dtype=np.float32)
        s.step(1)
        self.assertTrue(s.sync(-1).adopted)
        r = s.result
        self.assertFalse(r.flags.writeable)
        with self.assertRaises(ValueError):
            r[0, 0, 0] = 1.0

    def test_second_refresh_moves_result_to_the_new_slot(self):
        c = self.client()
        s = c.create_stack(2, 8)
        s.stats[:] = np.eye(8, dtype=np.float32)
        s.step(1)
        self.assertTrue(s.sync(-1).adopted)
        np.testing.assert_allclose(s.result, np.eye(8)[None].repeat(2, 0),
                                   rtol=1e-4, atol=1e-4)
        s.stats[:] = 16 * np.eye(8, dtype=np.float32)   # root: 1/2
        s.step(2)
        info = s.sync(-1)
        self.assertTrue(info.adopted)
        self.assertEqual((info.generation, info.step), (2, 2))
        np.testing.assert_allclose(s.result,
                                   0.5 * np.eye(8)[None].repeat(2, 0),
                                   rtol=1e-4, atol=1e-4)

    @unittest.skipUnless(HAVE_TORCH, "torch is not installed")
    def test_stats_are_shared_without_copy_with_torch(self):
        import torch
        c = self.client()
        s = c.create_stack(2, 8)
        t = torch.from_numpy(s.stats)
        self.assertTrue(np.shares_memory(t.numpy(), s.stats))
        self.assertEqual(t.data_ptr(), s.stats.ctypes.data)
        # Written through torch only; the daemon sees it.
        t.copy_(torch.eye(8).repeat(2, 1, 1) * 81.0)     # root: 1/3
        s.step(3)
        self.assertTrue(s.sync(-1).adopted)
        np.testing.assert_allclose(s.result,
                                   np.eye(8)[None].repeat(2, 0) / 3.0,
                                   rtol=1e-4, atol=1e-4)

    def test_stats_views_share_one_buffer(self):
        c = self.client()
        s = c.create_stack(3, 5)
        v1, v2 = s.stats, s.stats
        self.assertTrue(np.shares_memory(v1, v2))
        v1[1, 2, 3] = 42.0
        self.assertEqual(v2[1, 2, 3], 42.0)

    def test_view_keeps_stack_alive(self):
        c = self.client()
        v = c.create_stack(2, 4).stats    # the Stack object is dropped
        v[:] = 1.0                         # still mapped: no crash
        self.assertEqual(float(v.sum()), 32.0)

    def test_options_by_name(self):
        c = self.client()
        s = c.create_stack(2, 8, method="evd", scaling="fro", root=2,
                           precision="fp32", fallback="none")
        s.stats[:] = 4 * np.eye(8, dtype=np.float32)
        s.step(5)
        info = s.sync(-1)
        self.assertEqual(info.method, "evd")
        np.testing.assert_allclose(s.result,
                                   0.5 * np.eye(8)[None].repeat(2, 0),
                                   rtol=1e-4, atol=1e-5)
        with self.assertRaises(dash.DashError) as cm:
            c.create_stack(2, 8, scaling="bogus")
        self.assertEqual(cm.exception.name, "E_INVALID")
        with self.assertRaises(dash.DashError) as cm:
            c.create_stack(0, 8)
        self.assertEqual(cm.exception.name, "E_INVALID")

    def test_close_twice_is_fine(self):
        c = dash.Client(self.sock)
        s = c.create_stack(2, 4)
        s2 = c.create_stack(1, 4)
        s.close()
        s.close()
        c.close()                       # destroys s2 first
        c.close()
        self.assertTrue(s2.closed)
        s2.close()
        with self.assertRaises(dash.DashError):
            s.step(1)
        with self.assertRaises(dash.DashError):
            c.ping()

    def test_daemon_killed_gives_disconnected(self):
        c = self.client()
        s = c.create_stack(2, 8)
        s.stats[:] = np.eye(8, dtype=np.float32)
        s.step(1)
        self.assertTrue(s.sync(-1).adopted)
        held = s.result.copy()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.killed = True
        with self.assertRaises(dash.DisconnectedError) as cm:
            s.step(2)
        self.assertEqual(cm.exception.status, -10)
        with self.assertRaises(dash.DisconnectedError):
            c.ping()
        # What the trainer holds stays usable.
        s.stats[:] = 2.0
        np.testing.assert_array_equal(s.result, held)
        s.close()
        s.close()
        c.close()
        c.close()


class _FakeTensor:
    """Quacks like a torch tensor for the binding's argument checks."""

    def __init__(self, shape, is_cuda=True, dtype="torch.float32",
                 contiguous=True, device=0):
        self.shape = shape
        self.is_cuda = is_cuda
        self.dtype = dtype
        self._contiguous = contiguous
        self.device = type("Device", (), {"index": device})()

    def is_contiguous(self):
        return self._contiguous

    def data_ptr(self):
        return 0


class CudaStackArgumentsTest(DaemonCase):
    """create_stack_cuda() refuses what is not a pair of CUDA tensors of
    the stack's shapes before anything reaches libdash (no GPU needed)."""

    def test_refuses_bad_tensors(self):
        c = self.client()
        good_s, good_r = _FakeTensor((2, 8, 8)), _FakeTensor((2, 2, 8, 8))
        cases = [
            (_FakeTensor((2, 8, 4)), good_r, "(N, B, B)"),
            (_FakeTensor((2, 8, 8), is_cuda=False), good_r, "CUDA tensor"),
            (_FakeTensor((2, 8, 8), dtype="torch.float16"), good_r,
             "float32"),
            (good_s, _FakeTensor((2, 8, 8)), "shape"),
            (good_s, _FakeTensor((2, 2, 8, 8), contiguous=False),
             "contiguous"),
            (good_s, _FakeTensor((2, 2, 8, 8), device=1), "GPUs 0 and 1"),
        ]
        for stats, results, words in cases:
            with self.assertRaises(dash.DashError) as cm:
                c.create_stack_cuda(stats, results)
            self.assertIn(words, str(cm.exception))


def _torch_cuda():
    if not HAVE_TORCH:
        return False
    import torch
    return torch.cuda.is_available()


class CudaStackTest(DaemonCase):
    """A stack over PyTorch CUDA tensors through the binding, end to end
    with a daemon computing on the GPU: runs wherever torch sees a GPU
    (scripts/test on a GPU machine with python3-torch), skips elsewhere.
    The same path without torch is test_daemon's cuda_ipc case."""

    backend = "cuda"

    def setUp(self):
        if not _torch_cuda():
            self.skipTest("skipped: no CUDA device (or torch without CUDA)")
        super().setUp()

    def test_tensor_views_at_offsets_round_trip(self):
        import torch
        n, b = 3, 32
        a, ref = spd_stack(n, b, cond=100.0, seed=5)
        # One caching-allocator block holds both buffers at offsets, as
        # tensors of a real trainer are: one IPC handle, two offsets.
        pool = torch.zeros(64 + n * b * b + 32 + 2 * n * b * b,
                           dtype=torch.float32, device="cuda")
        stats = pool[64:64 + n * b * b].view(n, b, b)
        results = pool[96 + n * b * b:].view(2, n, b, b)
        c = self.client()
        s = c.create_stack_cuda(stats, results, max_steps=30)
        self.assertIs(s.stats, stats)
        self.assertIsNone(s.result)
        stats.copy_(torch.from_numpy(a.astype(np.float32)))
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            s.step(1)
            # Overwritten at once on the stream: ordered after the
            # daemon's snapshot, so the result is the root of `a`.
            stats.fill_(float("nan"))
            info = s.sync(-1)
            self.assertTrue(info.adopted)
            got = s.result.clone()
        stream.synchronize()
        self.assertEqual(info.step, 1)
        # The GPU's NewtonDB against the float64 exact roots of a known
        # spectrum (cond 100): fp32 products and a stop at ‖I − E‖ < 1e-3
        # leave ~1e-4; 1e-3 relative Frobenius per block.
        self.assertLess(rel_err(got.cpu().numpy(), ref), 1e-3)
        s.close()


class DeviceLostTest(DaemonCase):
    """A computation that reports a failed GPU (DASH_E_DEVICE_LOST, here
    injected: no GPU is needed) poisons the daemon's CUDA context for good:
    its owner learns why, every client is disconnected, and dashd exits 3
    so that systemd's Restart=on-failure brings up a fresh one."""

    daemon_env = {"DASHD_TEST_FAULT": "device-lost"}

    def test_device_lost_tells_the_owner_disconnects_all_and_exits_3(self):
        owner, other = self.client(), self.client()
        s = owner.create_stack(2, 8)
        s.stats[:] = np.eye(8, dtype=np.float32)
        s.step(1)
        with self.assertRaises(dash.DashError) as cm:
            s.sync(5000)
        # The owner gets the failure itself, or the disconnection that
        # follows it at once when the reply lost the race to the close.
        self.assertIn(cm.exception.name, ("E_DEVICE_LOST", "E_DISCONNECTED"))
        if cm.exception.name == "E_DEVICE_LOST":
            self.assertIn("injected", str(cm.exception))
        self.killed = True              # its exit status is checked here
        self.assertEqual(self.proc.wait(timeout=15), 3, self._log())
        with self.assertRaises(dash.DisconnectedError):
            other.ping()
        with self.assertRaises(dash.DisconnectedError):
            s.step(2)
        self.assertIn("the GPU failed", self._log())


if __name__ == "__main__":
    unittest.main()
