#!/usr/bin/python3
"""Smoke test of the benchmark tools: dash-bench runs every method on a
tiny stack, prints well-formed JSON, dumps stacks with the spectra it
promises, and bench/peer_numpy.py and bench/format_results.py read them;
dash-bench --backend cuda says when there is no device (exit 2, or 0 with
--skip-unavailable) and, where there is one, measures on it.
Timings are not checked: benchmarks are tools, not timed tests.

Usage: dash_bench_smoke.py DASH_BENCH BENCH_DIR
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

BENCH = None
BENCH_DIR = None
PY = "/usr/bin/python3"


class BenchSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dump = os.path.join(cls.tmp.name, "stacks")
        cls.proc = subprocess.run(
            [BENCH, "--shape", "4x32", "--kappa", "1e2,1e6",
             "--methods", "ndb/pi,cn/fro,evd,cheb/pi-multi,auto/pi",
             "--repeat", "1", "--json", "--dump-dir", cls.dump],
            capture_output=True, text=True, timeout=120)
        cls.records = [json.loads(line) for line in cls.proc.stdout.splitlines()
                       if line.strip()]
        cls.roots = [r for r in cls.records if r.get("record") == "root"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_bench_exits_zero_with_one_row_per_method_and_kappa(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)
        self.assertEqual(len(self.roots), 5 * 2)
        self.assertEqual({r["method"] for r in self.roots},
                         {"ndb", "cn", "evd", "cheb", "auto"})

    def test_bench_reports_resolved_auto_and_status_counts(self):
        for r in self.roots:
            self.assertEqual(sum(r["blocks_by_status"].values()), 4)
            if r["method"] == "auto":
                self.assertEqual(r["resolved_method"], "evd")

    def test_bench_evd_matches_its_oracle(self):
        # EVD on a 32x32 block: fp32 for kappa 1e2 (error ~ u·sqrt(B)·κ/p
        # ≈ 1e-6), the fp64 reduction for 1e6 (~1e-6). 1e-4 leaves room
        # for unlucky spectra while still catching a wrong oracle or root.
        for r in self.roots:
            if r["method"] in ("evd", "auto"):
                self.assertLess(r["rel_err"], 1e-4, r)

    def test_dumped_stacks_have_the_requested_condition_number(self):
        with open(os.path.join(self.dump, "index.json")) as f:
            index = json.load(f)
        self.assertEqual(len(index["entries"]), 2)
        for e in index["entries"]:
            a = np.load(os.path.join(self.dump, e["stack"])).astype(np.float64)
            self.assertEqual(a.shape, (4, 32, 32))
            np.testing.assert_allclose(a, np.swapaxes(a, 1, 2), atol=1e-7)
            w = np.linalg.eigvalsh(a)
            # The generator maps the spectrum onto [1/κ, 1] and rounds to
            # fp32: λ_max within 1 %, κ within 10 % at κ = 1e2; at 1e6 the
            # rounding moves λ_min = 1e-6 by up to about u·λ_max·√B ≈ 3e-7,
            # so κ is only within a factor 2 there.
            tol = 0.1 if e["kappa"] <= 1e4 else 1.0
            for blk in w:
                self.assertAlmostEqual(blk[-1], 1.0, delta=0.01)
                self.assertLess(abs(blk[-1] / blk[0] / e["kappa"] - 1), tol)
            o = np.load(os.path.join(self.dump, e["oracle"]))
            self.assertEqual(o.dtype, np.float64)

    def test_numpy_peer_and_formatter_read_the_dump(self):
        peer = subprocess.run(
            [PY, os.path.join(BENCH_DIR, "peer_numpy.py"), self.dump,
             "--repeat", "1", "--variants", "f64"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(peer.returncode, 0, peer.stderr)
        rows = [json.loads(l) for l in peer.stdout.splitlines() if l.strip()]
        self.assertEqual(len(rows), 2)
        for r in rows:
            # float64 eigh against the float64 oracle of the same matrix;
            # the peer rounds its result to fp32 (u = 6e-8 per element),
            # so the error is about 3e-8 and 1e-6 is a wide margin.
            self.assertLess(r["rel_err"], 1e-6)
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as d, \
                tempfile.NamedTemporaryFile("w", suffix=".jsonl") as n:
            d.write(self.proc.stdout)
            d.flush()
            n.write(peer.stdout)
            n.flush()
            fmt = subprocess.run(
                [PY, os.path.join(BENCH_DIR, "format_results.py"), d.name,
                 n.name], capture_output=True, text=True, timeout=60)
        self.assertEqual(fmt.returncode, 0, fmt.stderr)
        self.assertIn("(ref)", fmt.stdout)
        self.assertIn("| 4x32 | 1e6 | auto→evd |", fmt.stdout)


class BenchCuda(unittest.TestCase):
    ARGS = ["--backend", "cuda", "--shape", "4x32", "--kappa", "1e2",
            "--methods", "evd,ndb/pi", "--repeat", "2", "--json"]

    def bench(self, *extra, hide_devices=False):
        env = dict(os.environ)
        if hide_devices:
            # An empty list hides every device from the CUDA runtime, so
            # this holds on a GPU machine and in a build without CUDA.
            env["CUDA_VISIBLE_DEVICES"] = ""
        return subprocess.run([BENCH] + self.ARGS + list(extra), env=env,
                              capture_output=True, text=True, timeout=120)

    def test_bench_cuda_without_a_device_exits_2_and_says_so(self):
        p = self.bench(hide_devices=True)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("dash-bench: skipped: no CUDA device", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_bench_cuda_without_a_device_exits_0_with_skip_unavailable(self):
        p = self.bench("--skip-unavailable", hide_devices=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("dash-bench: skipped: no CUDA device", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_bench_cuda_on_a_device_times_both_paths_against_cublas(self):
        p = self.bench("--skip-unavailable")
        if "no CUDA device" in p.stderr:
            self.skipTest("no CUDA device")
        self.assertEqual(p.returncode, 0, p.stderr)
        records = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        roots = [r for r in records if r["record"] == "root"]
        if not roots:
            self.skipTest("the CUDA backend runs none of these methods yet: "
                          + p.stderr)
        roofs = [r for r in records if r["record"] == "roofline"]
        self.assertEqual(len(roofs), 1, records)
        self.assertEqual(roofs[0]["backend"], "cuda")
        self.assertEqual(roofs[0]["method"], "cublasGemmStridedBatchedEx")
        self.assertEqual(roofs[0]["precision"], "fp32")
        self.assertGreater(roofs[0]["gflops"], 0)
        for r in roots:
            self.assertEqual(r["backend"], "cuda")
            self.assertEqual(r["device_name"], roofs[0]["device_name"])
            self.assertTrue(r["device_name"])
            for key in ("ms_min", "ms_median", "ms_host_min",
                        "ms_host_median"):
                self.assertGreater(r[key], 0, (key, r))
            self.assertEqual(sum(r["blocks_by_status"].values()), 4)
            # κ = 1e2 in fp32: both methods come within 1e-3 (AUTO's
            # promise) by orders of magnitude on the CPU.
            self.assertLess(r["rel_err"], 1e-3, r)
            if r["resolved_method"] == "ndb":
                self.assertEqual(r["roofline_gflops"], roofs[0]["gflops"])
                self.assertIsNotNone(r["roofline_pct"])

    def test_formatter_reads_cuda_records(self):
        # The records dash-bench --backend cuda --json prints, with made-up
        # numbers: the formatter must take them beside the CPU's.
        root = {"record": "root", "method": "ndb", "resolved_method": "ndb",
                "scaling": "pi", "backend": "cuda", "precision": "fp32",
                "device_name": "Some GPU", "N": 4, "B": 32, "root": 4,
                "kappa": 100.0, "eps": 1e-10, "steps": 10, "tol": 0.001,
                "threads": 0, "repeat": 2, "ms_min": 0.5, "ms_median": 0.6,
                "ms_host_min": 0.9, "ms_host_median": 1.0, "flops": 3e6,
                "gflops": 6.0, "roofline_gflops": 60.0, "roofline_pct": 10.0,
                "rel_err": 1e-6, "max_rel_err_block": 2e-6,
                "max_iterations": 17,
                "blocks_by_status": {"OK": 4, "NONFINITE_INPUT": 0,
                                     "NOT_CONVERGED": 0, "FALLBACK_EVD": 0}}
        roof = {"record": "roofline", "method": "cublasGemmStridedBatchedEx",
                "backend": "cuda", "device_name": "Some GPU",
                "precision": "fp32", "N": 4, "B": 32, "gflops": 60.0}
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
            f.write(json.dumps(root) + "\n" + json.dumps(roof) + "\n")
            f.flush()
            fmt = subprocess.run(
                [PY, os.path.join(BENCH_DIR, "format_results.py"), f.name],
                capture_output=True, text=True, timeout=60)
        self.assertEqual(fmt.returncode, 0, fmt.stderr)
        self.assertIn("| 4x32 | 1e2 | ndb", fmt.stdout)


if __name__ == "__main__":
    BENCH, BENCH_DIR = sys.argv[1], sys.argv[2]
    result = unittest.main(argv=sys.argv[:1], exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
