"""Tests of the dash-roots command-line tool.

Run as: /usr/bin/python3 dash_roots_cli.py PATH/TO/dash-roots

Malformed .npy files and bad flags must give exit code 2, exactly one line on
stderr that names the problem, and no output file; good input must give roots
that match a float64 reference. Needs only numpy and the standard library.
"""

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

# Set from argv[1] by main().
BINARY = None

MAGIC = b"\x93NUMPY"


def npy_file(header, version=(1, 0), data=b"", header_len=None, pad=True):
    """Builds a .npy file by hand, so that headers numpy would never write
    can be tested. header is the dict text; header_len overrides the length
    field; pad aligns the data to 64 bytes with spaces and a newline, as
    numpy does."""
    text = header.encode("latin1")
    size_len = 2 if version[0] == 1 else 4
    if pad:
        total = len(MAGIC) + 2 + size_len + len(text) + 1
        text += b" " * ((64 - total % 64) % 64) + b"\n"
    length = len(text) if header_len is None else header_len
    fmt = "<H" if size_len == 2 else "<I"
    return MAGIC + bytes(version) + struct.pack(fmt, length) + text + data


def f4_header(shape, descr="'<f4'", fortran="False"):
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (
        descr, fortran, repr(tuple(shape)))


def npy_of(array, version=None):
    """The bytes numpy itself writes for array."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def known_stack(n, b, seed):
    """n symmetric positive definite blocks Q diag(lam) Q^T with a random
    orthogonal Q and lam spread log-uniformly over [1e-2, 1] (both ends
    included, so every block has condition number 100). Returned in
    float64; callers round to float32 as they need."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(n):
        q, r = np.linalg.qr(rng.standard_normal((b, b)))
        q *= np.sign(np.diag(r))
        lam = 10.0 ** rng.uniform(-2.0, 0.0, b)
        lam[0], lam[-1] = 1e-2, 1.0
        a = (q * lam) @ q.T
        blocks.append((a + a.T) / 2)
    return np.stack(blocks)


def exact_root(a, p, eps):
    """(A + eps I)^(-1/p) of every block, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = a.shape[-1]
    w, v = np.linalg.eigh(a + eps * np.eye(b))
    return (v * w[..., None, :] ** (-1.0 / p)) @ np.swapaxes(v, -1, -2)


def rel_errors(x, ref):
    """Relative Frobenius error of every block."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, *ref.shape[-2:])
    ref = ref.reshape(x.shape)
    return (np.linalg.norm(x - ref, axis=(1, 2)) /
            np.linalg.norm(ref, axis=(1, 2)))


def strict_json(text):
    """json.loads accepts NaN and Infinity; the report must not need it."""
    def refuse(name):
        raise ValueError("non-standard JSON constant " + name)
    return json.loads(text, parse_constant=refuse)


# Tolerance of the good runs, relative Frobenius error per block. The
# inputs have condition number 100 and the results are fp32 (unit roundoff
# u = 6e-8). EVD: eigh is backward stable, so the root's relative error is
# about kappa^(1/p) * B * u = 3.2 * 16 * 6e-8 = 3e-6 for p = 4 (1e-5 for
# p = 2). NewtonDB, p = 2, 30 steps, default tol 1e-3: the iteration
# converges quadratically, so after the step in which ||I - E||_F < 1e-3
# the error is of order 1e-6, plus fp32 rounding of the same order. 1e-3
# is over 30 times above either, while a real mistake (wrong root, scaling
# not undone, blocks out of order or transposed, eps dropped) gives errors
# of order 0.1 to 1.
TOL = 1e-3


class CliTest(unittest.TestCase):
    def setUp(self):
        self._dir = tempfile.TemporaryDirectory(prefix="dash_roots_cli.")
        self.dir = self._dir.name
        self.out = self.path("out.npy")

    def tearDown(self):
        self._dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, content):
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def save(self, name, array):
        path = self.path(name)
        np.save(path, array)
        return path

    def run_tool(self, *args):
        return subprocess.run([BINARY] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=120)

    def assert_rejected(self, args, keyword, code=2):
        """Runs the tool expecting failure: the exit code, one line on
        stderr starting with 'dash-roots: ' that contains keyword, and no
        file created (no output, no .tmp)."""
        before = sorted(os.listdir(self.dir))
        r = self.run_tool(*args)
        lines = r.stderr.splitlines()
        self.assertEqual(r.returncode, code,
                         "exit code %d, stderr %r" % (r.returncode, r.stderr))
        self.assertEqual(len(lines), 1, "stderr %r" % r.stderr)
        self.assertTrue(lines[0].startswith("dash-roots: "), lines[0])
        self.assertIn(keyword.lower(), lines[0].lower())
        self.assertEqual(sorted(os.listdir(self.dir)), before)
        return lines[0]

    def assert_ok(self, *args):
        r = self.run_tool(*args)
        self.assertEqual(r.returncode, 0,
                         "exit code %d, stderr %r" % (r.returncode, r.stderr))
        self.assertFalse(os.path.exists(self.out + ".tmp"))
        return r


class MalformedInput(CliTest):
    """Every malformed .npy is refused before anything is computed."""

    def reject(self, content, keyword):
        path = self.write("in.npy", content)
        return self.assert_rejected(
            ["--in", path, "--out", self.out, "--method", "evd"], keyword)

    def good_block_bytes(self, n=2, b=4):
        return np.zeros((n, b, b), np.float32).tobytes()

    def test_rejects_bad_magic(self):
        self.reject(b"PK\x03\x04 this is a zip, not numpy" + b"\0" * 64,
                    "magic")

    def test_rejects_empty_file(self):
        self.reject(b"", "magic")

    def test_rejects_unknown_version(self):
        self.reject(npy_file(f4_header((2, 4, 4)), version=(4, 0),
                             data=self.good_block_bytes()), "version")

    def test_rejects_int32(self):
        line = self.reject(npy_of(np.zeros((2, 4, 4), np.int32)), "dtype")
        self.assertIn("<i4", line)

    def test_rejects_big_endian_float32(self):
        line = self.reject(npy_of(np.zeros((2, 4, 4), ">f4")), "dtype")
        self.assertIn(">f4", line)

    def test_rejects_complex(self):
        line = self.reject(npy_of(np.zeros((2, 4, 4), np.complex64)), "dtype")
        self.assertIn("<c8", line)

    def test_rejects_float16(self):
        self.reject(npy_of(np.zeros((2, 4, 4), np.float16)), "dtype")

    def test_rejects_structured_dtype(self):
        self.reject(npy_of(np.zeros((2, 4, 4), [("a", "<f4")])), "dtype")

    def test_rejects_fortran_order(self):
        content = npy_of(np.asfortranarray(
            np.arange(32, dtype=np.float32).reshape(2, 4, 4)))
        self.assertIn(b"'fortran_order': True", content)
        self.reject(content, "fortran_order")

    def test_rejects_non_square_stack(self):
        self.reject(npy_of(np.zeros((3, 4, 5), np.float32)), "square")

    def test_rejects_non_square_matrix(self):
        self.reject(npy_of(np.zeros((4, 5), np.float32)), "square")

    def test_rejects_1d(self):
        self.reject(npy_of(np.zeros(16, np.float32)), "need (N, B, B)")

    def test_rejects_4d(self):
        self.reject(npy_of(np.zeros((2, 2, 4, 4), np.float32)),
                    "need (N, B, B)")

    def test_rejects_scalar(self):
        self.reject(npy_of(np.float32(1.0)), "need (N, B, B)")

    def test_rejects_truncated_data(self):
        content = npy_of(np.zeros((4, 16, 16), np.float32))
        line = self.reject(content[:-100], "truncated data")
        self.assertIn("4096", line)

    def test_rejects_trailing_data(self):
        content = npy_of(np.zeros((4, 16, 16), np.float32))
        self.reject(content + b"\0" * 4, "trailing")

    def test_rejects_truncated_header(self):
        self.reject(npy_of(np.zeros((2, 4, 4), np.float32))[:30],
                    "truncated header")

    def test_rejects_truncated_preamble(self):
        self.reject(MAGIC + b"\x01", "truncated header")

    def test_rejects_header_length_beyond_file(self):
        self.reject(npy_file(f4_header((2, 4, 4)), header_len=60000,
                             data=self.good_block_bytes()), "header")

    def test_rejects_header_beyond_limit(self):
        # A well-formed version 2.0 header of 20000 bytes: within the file,
        # but over numpy's own 10000-byte limit.
        header = f4_header((2, 4, 4)) + " " * 20000
        self.reject(npy_file(header, version=(2, 0),
                             data=self.good_block_bytes()), "exceeds")

    def test_rejects_unterminated_dict(self):
        self.reject(npy_file("{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (2, 4, 4)",
                             data=self.good_block_bytes()), "header")

    def test_rejects_unexpected_key(self):
        self.reject(npy_file("{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (2, 4, 4), 'extra': 1}",
                             data=self.good_block_bytes()), "extra")

    def test_rejects_missing_key(self):
        self.reject(npy_file("{'descr': '<f4', 'fortran_order': False}",
                             data=self.good_block_bytes()), "shape")

    def test_rejects_duplicate_key(self):
        self.reject(npy_file("{'descr': '<f4', 'descr': '<f4', "
                             "'fortran_order': False, 'shape': (2, 4, 4)}",
                             data=self.good_block_bytes()), "twice")

    def test_rejects_shape_that_is_not_a_tuple(self):
        self.reject(npy_file(f4_header((16,)).replace("(16,)", "(16)"),
                             data=self.good_block_bytes()), "tuple")

    def test_rejects_negative_dimension(self):
        self.reject(npy_file("{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (-2, 4, 4)}",
                             data=self.good_block_bytes()), "negative")

    def test_rejects_non_bool_fortran_order(self):
        self.reject(npy_file(f4_header((2, 4, 4), fortran="0"),
                             data=self.good_block_bytes()), "fortran_order")

    def test_rejects_garbage_after_dict(self):
        self.reject(npy_file(f4_header((2, 4, 4)) + " x",
                             data=self.good_block_bytes()), "header")

    def test_rejects_zero_blocks(self):
        self.reject(npy_of(np.zeros((0, 4, 4), np.float32)), "N = 0")

    def test_rejects_empty_blocks(self):
        self.reject(npy_of(np.zeros((2, 0, 0), np.float32)), "B = 0")

    # The absurd shapes come with no data at all: had the tool allocated
    # before checking, it would fail on memory (exit 1, another message)
    # or on truncated data, not with "exceeds" from the limit checks.
    def test_rejects_too_many_blocks(self):
        line = self.reject(npy_file(f4_header((1 << 40, 2, 2))), "exceeds")
        self.assertIn("DASH_ROOTS_MAX_BLOCKS", line)

    def test_rejects_too_large_block(self):
        line = self.reject(npy_file(f4_header((1, 100000, 100000))),
                           "exceeds")
        self.assertIn("DASH_ROOTS_MAX_BLOCK_SIZE", line)

    def test_rejects_too_many_bytes(self):
        # Each dimension within its own limit; 300 GiB in all.
        line = self.reject(npy_file(f4_header((300, 16384, 16384))),
                           "exceeds")
        self.assertIn("DASH_ROOTS_MAX_BYTES", line)

    def test_rejects_dimension_beyond_64_bits(self):
        self.reject(npy_file(f4_header((2, 4, 4)).replace(
            "(2,", "(123456789012345678901234567890,")), "exceeds")

    def test_rejects_missing_input(self):
        self.assert_rejected(["--in", self.path("nope.npy"), "--out",
                              self.out], "nope.npy")

    def test_rejects_directory_input(self):
        os.mkdir(self.path("d"))
        self.assert_rejected(["--in", self.path("d"), "--out", self.out],
                             "regular file")

    def test_failure_keeps_existing_output(self):
        self.write("out.npy", b"old contents")
        self.reject(npy_of(np.zeros((3, 4, 5), np.float32)), "square")
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), b"old contents")


class OutputFailures(CliTest):
    """Output that cannot be written fails the run (exit code 1) with one
    line and leaves no file behind."""

    def setUp(self):
        super().setUp()
        self.good = self.save("in.npy", known_stack(2, 4, 1).astype(
            np.float32))

    def test_unwritable_output_fails(self):
        out = self.path("no/such/dir/out.npy")
        self.assert_rejected(["--in", self.good, "--out", out, "--method",
                              "evd"], "cannot create", code=1)

    def test_unwritable_report_fails_before_output(self):
        report = self.path("no/such/dir/report.json")
        self.assert_rejected(["--in", self.good, "--out", self.out,
                              "--method", "evd", "--report", report],
                             "cannot create", code=1)

    def test_malformed_input_leaves_no_report(self):
        path = self.write("bad.npy", b"not numpy at all")
        self.assert_rejected(["--in", path, "--out", self.out, "--report",
                              self.path("report.json")], "magic")


class BadFlags(CliTest):
    """Bad usage is refused with exit code 2 and one line naming it."""

    def setUp(self):
        super().setUp()
        self.good = self.save("in.npy", known_stack(2, 4, 1).astype(
            np.float32))

    def reject_flags(self, extra, keyword):
        return self.assert_rejected(
            ["--in", self.good, "--out", self.out] + extra, keyword)

    def test_rejects_unknown_flag(self):
        self.reject_flags(["--bogus", "1"], "--bogus")

    def test_rejects_positional_argument(self):
        self.reject_flags(["stray"], "stray")

    def test_rejects_root_zero(self):
        self.reject_flags(["--root", "0"], "root")

    def test_rejects_root_three_with_ndb(self):
        self.reject_flags(["--method", "ndb", "--root", "3"], "root")

    def test_rejects_non_integer_steps(self):
        self.reject_flags(["--steps", "abc"], "steps")

    def test_rejects_steps_with_trailing_text(self):
        self.reject_flags(["--steps", "10x"], "steps")

    def test_rejects_steps_out_of_range(self):
        self.reject_flags(["--steps", "1001"], "steps")

    def test_rejects_fractional_root(self):
        self.reject_flags(["--root=4.5"], "root")

    def test_rejects_huge_threads(self):
        self.reject_flags(["--threads", "99999999999999999999"], "threads")

    def test_rejects_negative_threads(self):
        self.reject_flags(["--threads", "-1"], "threads")

    def test_rejects_negative_eps(self):
        self.reject_flags(["--eps", "-1"], "eps")

    def test_rejects_nan_eps(self):
        self.reject_flags(["--eps", "nan"], "eps")

    def test_rejects_overflowing_tol(self):
        self.reject_flags(["--tol", "1e999"], "tol")

    def test_rejects_unknown_method(self):
        self.reject_flags(["--method", "magic"], "method")

    def test_rejects_unknown_scaling(self):
        self.reject_flags(["--scaling", "none"], "scaling")

    def test_rejects_unknown_backend(self):
        self.reject_flags(["--backend", "tpu"], "backend")

    def test_rejects_unknown_precision(self):
        self.reject_flags(["--precision", "fp8"], "precision")

    def test_rejects_unknown_fallback(self):
        self.reject_flags(["--fallback", "always"], "fallback")

    def test_rejects_flag_without_value(self):
        self.reject_flags(["--root"], "needs a value")

    def test_rejects_missing_in(self):
        self.assert_rejected(["--out", self.out], "--in")

    def test_rejects_missing_out(self):
        self.assert_rejected(["--in", self.good], "--out")

    def test_help_lists_every_flag_with_defaults(self):
        r = self.run_tool("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ["--in", "--out", "--method", "--root", "--eps",
                     "--scaling", "--steps", "--tol", "--backend",
                     "--precision", "--threads", "--fallback", "--report",
                     "--help", "--version"]:
            self.assertIn(flag + " ", r.stdout)
        # The defaults of DASH_ROOTS_OPTIONS_INIT.
        for default in ["default ndb", "default 4", "default 1e-10",
                        "default pi", "default 10", "default 0.001",
                        "default cpu", "default fp32", "default 0",
                        "default diverged"]:
            self.assertIn(default, r.stdout)
        for line in r.stdout.splitlines():
            self.assertLessEqual(len(line), 80, line)

    def test_version(self):
        r = self.run_tool("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("dash-roots "), r.stdout)


class GoodRuns(CliTest):
    """Roots match the float64 reference; shapes, dtypes and the report
    come out as documented."""

    N, B = 4, 16

    def setUp(self):
        super().setUp()
        self.a64 = known_stack(self.N, self.B, seed=7)
        self.a32 = self.a64.astype(np.float32)
        self.input = self.save("in.npy", self.a32)

    def load_out(self, shape):
        x = np.load(self.out)
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(x.shape, shape)
        return x

    def check_against_reference(self, x, a, p, eps):
        # The reference is the exact root of the very fp32 data the tool
        # read, so only the tool's own error is measured.
        err = rel_errors(x, exact_root(a, p, eps))
        self.assertTrue(np.all(err < TOL), "relative errors %s" % err)

    def test_evd_root_4_matches_reference(self):
        self.assert_ok("--in", self.input, "--out", self.out, "--method",
                       "evd", "--root", "4", "--eps", "1e-10")
        x = self.load_out((self.N, self.B, self.B))
        self.check_against_reference(x, self.a32, 4, 1e-10)

    def test_ndb_root_2_matches_reference(self):
        self.assert_ok("--in", self.input, "--out", self.out, "--method",
                       "ndb", "--root", "2", "--steps", "30")
        x = self.load_out((self.N, self.B, self.B))
        self.check_against_reference(x, self.a32, 2, 1e-10)

    def test_equals_form_of_flags(self):
        self.assert_ok("--in=" + self.input, "--out=" + self.out,
                       "--method=evd", "--root=2")
        self.check_against_reference(
            self.load_out((self.N, self.B, self.B)), self.a32, 2, 1e-10)

    def test_matrix_input_gives_matrix_output(self):
        path = self.save("m.npy", self.a32[1])
        self.assert_ok("--in", path, "--out", self.out, "--method", "evd")
        x = self.load_out((self.B, self.B))
        self.check_against_reference(x, self.a32[1], 4, 1e-10)

    def test_float64_input_accepted(self):
        path = self.save("f8.npy", self.a64)
        self.assert_ok("--in", path, "--out", self.out, "--method", "evd")
        x = self.load_out((self.N, self.B, self.B))
        self.check_against_reference(x, self.a64, 4, 1e-10)

    def test_float64_input_across_conversion_chunks(self):
        # 3 * 160 * 160 = 76800 doubles: more than one of the reader's
        # 65536-element conversion chunks, so a chunk seam shows up as a
        # wrong block. With B = 160 the EVD bound of TOL's comment is
        # 3.2 * 160 * 6e-8 = 3e-5, still far under TOL.
        a64 = known_stack(3, 160, seed=11)
        path = self.save("big.npy", a64)
        self.assert_ok("--in", path, "--out", self.out, "--method", "evd")
        x = self.load_out((3, 160, 160))
        self.check_against_reference(x, a64, 4, 1e-10)

    def test_format_versions_2_and_3_accepted(self):
        for version in [(2, 0), (3, 0)]:
            path = self.write("v.npy", npy_of(self.a32, version=version))
            self.assert_ok("--in", path, "--out", self.out, "--method", "evd")
            self.check_against_reference(
                self.load_out((self.N, self.B, self.B)), self.a32, 4, 1e-10)

    def test_header_variants_accepted(self):
        # Keys in another order, double quotes, no trailing comma, odd
        # whitespace and Python 2's long suffix are all valid headers.
        data = self.a32.tobytes()
        headers = [
            "{'shape': (4, 16, 16), 'fortran_order': False, 'descr': '<f4'}",
            '{"descr":"<f4","fortran_order":False,"shape":(4,16,16,),}',
            "{ 'descr' :\t'<f4' ,\n 'fortran_order' : False , "
            "'shape' : ( 4 , 16 , 16 ) }",
            "{'descr': '<f4', 'fortran_order': False, "
            "'shape': (4L, 16L, 16L), }",
        ]
        for header in headers:
            for pad in [True, False]:
                path = self.write("h.npy", npy_file(header, data=data,
                                                    pad=pad))
                self.assert_ok("--in", path, "--out", self.out, "--method",
                               "evd")
                self.check_against_reference(
                    self.load_out((self.N, self.B, self.B)), self.a32, 4,
                    1e-10)

    def test_output_may_replace_input(self):
        self.assert_ok("--in", self.input, "--out", self.input, "--method",
                       "evd")
        x = np.load(self.input)
        self.check_against_reference(x, self.a32, 4, 1e-10)
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.npy"])

    def test_report_has_one_ok_entry_per_block(self):
        report = self.path("report.json")
        self.assert_ok("--in", self.input, "--out", self.out, "--method",
                       "evd", "--root", "4", "--report", report)
        with open(report) as f:
            r = strict_json(f.read())
        self.assertFalse(os.path.exists(report + ".tmp"))
        self.assertEqual(r["method"], "evd")
        self.assertEqual(r["backend"], "cpu")
        self.assertEqual(r["root"], 4)
        self.assertEqual(r["eps"], 1e-10)
        self.assertEqual(r["num_blocks"], self.N)
        self.assertEqual(r["block_size"], self.B)
        for key in ["scaling", "ms_total", "ms_read", "ms_write",
                    "max_iterations"]:
            self.assertIn(key, r)
        self.assertEqual(r["blocks_by_status"]["OK"], self.N)
        self.assertEqual(sum(r["blocks_by_status"].values()), self.N)
        self.assertEqual([b["index"] for b in r["blocks"]],
                         list(range(self.N)))
        for b in r["blocks"]:
            self.assertEqual(b["status"], "OK")
            for key in ["iterations", "residual", "lambda_max"]:
                self.assertIn(key, b)

    def check_nan_block(self, method, p):
        a = self.a32.copy()
        a[2, 3, 5] = np.nan
        path = self.save("nan.npy", a)
        report = self.path("report.json")
        self.assert_ok("--in", path, "--out", self.out, "--method", method,
                       "--root", str(p), "--steps", "30", "--report", report)
        with open(report) as f:
            r = strict_json(f.read())
        statuses = [b["status"] for b in r["blocks"]]
        self.assertEqual(statuses, ["OK", "OK", "NONFINITE_INPUT", "OK"])
        self.assertEqual(r["blocks_by_status"]["NONFINITE_INPUT"], 1)
        x = self.load_out((self.N, self.B, self.B))
        good = [0, 1, 3]
        self.check_against_reference(x[good], a[good], p, 1e-10)
        # The tool documents that such a block is written as NaN.
        self.assertTrue(np.all(np.isnan(x[2])))

    def test_nan_block_reported_evd(self):
        self.check_nan_block("evd", 4)

    def test_nan_block_reported_ndb(self):
        self.check_nan_block("ndb", 2)


def main():
    global BINARY
    if len(sys.argv) != 2:
        print("usage: %s PATH/TO/dash-roots" % sys.argv[0], file=sys.stderr)
        return 2
    BINARY = os.path.abspath(sys.argv[1])
    if not os.access(BINARY, os.X_OK):
        print("%s: not an executable" % BINARY, file=sys.stderr)
        return 2
    suite = unittest.defaultTestLoader.loadTestsFromModule(
        sys.modules[__name__])
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    failed = (len(result.failures) + len(result.errors) +
              len(result.unexpectedSuccesses))
    passed = result.testsRun - failed - len(result.skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
