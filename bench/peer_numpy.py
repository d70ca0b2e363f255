#!/usr/bin/python3
"""The numpy peer of dash-bench: inverse roots the way Distributed Shampoo
computes them with its eigendecomposition path, on the very stacks that
`dash-bench --dump-dir DIR` wrote, timed and measured against the same
float64 oracle.

For each stack and variant:
    A = stack.astype(dtype)                      # as Shampoo casts
    L, Q = eigh(A)                               # batched over blocks
    L = L - min(L_min, 0) + eps                  # per block
    X = (Q * L[..., None, :] ** (-1/p)) @ Qᵀ     # batched matmul
    X = X.astype(float32)                        # the preconditioner dtype
All four steps are timed. The variants: numpy_eigh_f64 and numpy_eigh_f32
(np.linalg.eigh; note that numpy computes eigh in float64 even for float32
input and rounds the result, so only its rebuild is single precision) and
scipy_syevd_f32 (scipy.linalg.eigh with ssyevd, block by block: a genuine
float32 eigh, like torch.linalg.eigh on float32).

Output: one JSON object per line with the fields dash-bench --json prints,
backend "numpy". numpy's BLAS configuration goes to stderr once; OPENBLAS_*
and OMP_* variables are left as the caller set them.

Usage: /usr/bin/python3 bench/peer_numpy.py DUMP_DIR [--repeat R]
                               [--warmup W] [--variants f32,f64,s32]
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np

try:
    import scipy.linalg
except ImportError:  # only the s32 variant needs it
    scipy = None

# name: (method, compute dtype, precision label). numpy.linalg.eigh always
# runs float64 LAPACK (dsyevd) and rounds its results for float32 input, so
# numpy_eigh_f32 is float64 eigh with a float32 rebuild; scipy_syevd_f32
# (ssyevd block by block) is the genuinely single-precision peer, like
# torch.linalg.eigh on float32.
VARIANTS = {
    "f32": ("numpy_eigh_f32", np.float32, "fp32"),
    "f64": ("numpy_eigh_f64", np.float64, "fp64"),
    "s32": ("scipy_syevd_f32", np.float32, "fp32"),
}


def eigh_scipy(a):
    lam = np.empty(a.shape[:-1], a.dtype)
    q = np.empty_like(a)
    for i in range(a.shape[0]):
        lam[i], q[i] = scipy.linalg.eigh(a[i], driver="evd",
                                         check_finite=False)
    return lam, q


def inverse_root(stack, dtype, root, eps, eigh=np.linalg.eigh):
    a = stack.astype(dtype, copy=False)
    lam, q = eigh(a)
    # Shampoo's heuristic, block by block: lift a negative spectrum to 0.
    lam = lam - np.minimum(lam[..., :1], 0.0) + dtype(eps)
    x = (q * lam[..., None, :] ** dtype(-1.0 / root)) @ np.swapaxes(q, -1, -2)
    return x.astype(np.float32, copy=False)


def rel_errors(x, oracle):
    d = x.astype(np.float64) - oracle
    num = np.einsum("nij,nij->n", d, d)
    den = np.einsum("nij,nij->n", oracle, oracle)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_block = np.sqrt(num) / np.sqrt(den)
        total = math.sqrt(num.sum()) / math.sqrt(den.sum())
    return total, float(np.max(per_block))


def json_num(v):
    return v if v is not None and math.isfinite(v) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump_dir", help="a dash-bench --dump-dir directory")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--variants", default="f32,f64,s32",
                    help="of f32, f64 (numpy.linalg.eigh in that dtype) and "
                    "s32 (scipy ssyevd per block)")
    args = ap.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        ap.error("--repeat must be >= 1 and --warmup >= 0")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error("unknown variant %r" % v)
    if "s32" in variants and scipy is None:
        ap.error("the s32 variant needs scipy")

    with open(os.path.join(args.dump_dir, "index.json")) as f:
        index = json.load(f)
    root, eps = int(index["root"]), float(index["eps"])

    print("numpy %s; BLAS and LAPACK:" % np.__version__, file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        np.show_config()

    for e in index["entries"]:
        stack = np.load(os.path.join(args.dump_dir, e["stack"]))
        oracle = np.load(os.path.join(args.dump_dir, e["oracle"]))
        n, b = int(e["N"]), int(e["B"])
        if stack.shape != (n, b, b) or oracle.shape != (n, b, b):
            sys.exit("peer_numpy: %s does not hold %dx%dx%d" %
                     (e["stack"], n, b, b))
        for v in variants:
            method, dtype, precision = VARIANTS[v]
            eigh = eigh_scipy if v == "s32" else np.linalg.eigh
            print("%s %dx%d kappa=%g ..." % (method, n, b, e["kappa"]),
                  file=sys.stderr, end="", flush=True)
            for _ in range(args.warmup):
                inverse_root(stack, dtype, root, eps, eigh)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                x = inverse_root(stack, dtype, root, eps, eigh)
                times.append((time.perf_counter() - t0) * 1e3)
            times.sort()
            ms_min, ms_median = times[0], float(np.median(times))
            err, max_block = rel_errors(x, oracle)
            # dash-bench's EVD count: 9B³ for eigh with vectors plus B³ for
            # the rebuild, though numpy rebuilds with a full 2B³ matmul.
            flops = 10.0 * b ** 3 * n
            print(" %.3f ms, rel_err %.2e" % (ms_median, err),
                  file=sys.stderr)
            rec = {
                "record": "root", "method": method,
                "resolved_method": method, "scaling": "none",
                "backend": "numpy", "precision": precision, "N": n, "B": b,
                "root": root, "kappa": e["kappa"], "eps": eps,
                "repeat": args.repeat, "ms_min": ms_min,
                "ms_median": ms_median, "flops": flops,
                "gflops": flops / (ms_min * 1e6), "roofline_gflops": None,
                "roofline_pct": None, "rel_err": json_num(err),
                "max_rel_err_block": json_num(max_block),
                "max_iterations": 0,
                "blocks_by_status": {"OK": n, "NONFINITE_INPUT": 0,
                                     "NOT_CONVERGED": 0, "FALLBACK_EVD": 0},
            }
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
