#!/usr/bin/python3
"""The PyTorch peer of dash-bench: the inverse roots of a stack of Shampoo
statistics computed the way DASH and Distributed Shampoo compute them in
PyTorch, on the stacks dash-bench made, beside the batched-GEMM throughput
of the same shapes.

Methods, each run on every shape of the stack in turn (one timed pass over
all shapes is the "stack" record; each shape also gets its own record):
  torch-ndb    DASH's solver: λ̂_max by 10 power-iteration steps in bf16,
               batched over the blocks (torch.bmm, (M + δI)·v with
               δ = 1e-6·mean diagonal, Rayleigh quotient), s = 2·λ̂_max;
               then NewtonDB with torch.bmm on A = (M + εI)/s:
               Y = A, Z = I; E = 1.5·I − 0.5·Z·Y, Y ← Y·E, Z ← E·Z, a
               fixed number of steps (10); p = 4 runs it twice, the second
               on the first run's Y ≈ A^(1/2); X = Z·s^(-1/p). Products in
               fp32, tf32 (torch.backends.cuda.matmul.allow_tf32) or bf16
               operands (Y, Z and E held in bf16, products accumulated in
               fp32 by cuBLAS and rounded to bf16).
  torch-eigh   Distributed Shampoo's eigendecomposition path in fp32:
               L, Q = torch.linalg.eigh(M), batched; L ← L − min(L_min, 0)
               + ε per block; X = (Q·diag(L^(-1/p)))·Qᵀ.
  cublas-bmm   the roofline: torch.bmm of B×B by B×B over the N blocks of
               each shape, in fp32, tf32 and bf16 (torch-bmm on a CPU).

Timing: torch.cuda.Event around each shape (time.perf_counter on a CPU,
where every operation is synchronous); ms_median and ms_min over --repeat
passes after --warmup untimed ones. The stack is on the device before the
clock starts; the result stays there. transfer_ms in the stack record is
what copying the stack in and the result out (pageable host memory) costs
on top, which a library that takes host pointers pays.

Flops, as dash-bench counts them: NewtonDB 3 GEMMs of 2B³ per step, less
the 2 that the first step of each run skips (Z = I there), per run; EVD
10B³. gflops = flops / ms_min; roofline_pct = gflops over the bmm rate of
the same shape and precision.

Accuracy: rel_err = ‖X − X*‖_F/‖X*‖_F over the stack, with its median and
largest value per block, against the float64 oracle X*: the inverse root
of the fp32 block by float64 eigh with Shampoo's eigenvalue heuristic.

Stacks: with --dump-dir, the stacks and oracles that `dash-bench
--dump-dir DIR` wrote (the very stacks dash-bench timed); otherwise this
script builds stacks of the same construction as dash-bench (EMA of G·Gᵀ
over low-rank gradients with decaying singular values, spectrum mapped
log-linearly onto [1/κ, 1]) in float64 on the device, with its own random
numbers, and computes the oracle of --ref-blocks blocks per shape (all by
default); ref_blocks in each record says how many blocks rel_err covers.

Output: one JSON object per line on stdout with --json (records "root",
"stack" and "roofline"; the root records carry the fields of dash-bench
--json, backend "torch"), else a table; progress on stderr.
Exit status: 0, 2 when the device is unavailable, 64 on a bad command
line.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

try:
    import numpy as np
    import torch
except ImportError:
    # Reported as a skip by main(), after --help had its chance.
    np = torch = None

EXIT_UNAVAILABLE = 2
EXIT_USAGE = 64

# DASH's rank-0 stack of Llama-953M, by block shape.
DEFAULT_SHAPES = ("230x1024", "8x512", "2x256")
PRECISIONS = ("fp32", "tf32", "bf16")
METHODS = ("ndb", "eigh", "bmm")
# dash-bench's EVD count: 9B³ for eigh with vectors, B³ for the rebuild.
EVD_FLOPS_PER_B3 = 10.0
# Blocks per chunk when comparing with the oracle, to bound the memory that
# the float64 copies take (64 blocks of 1024² are 512 MiB).
ERROR_CHUNK_ELEMS = 64 * 1024 * 1024
# Least time of one timed sample of the bmm roofline, so that launch
# overhead does not count against small shapes.
ROOFLINE_SAMPLE_MS = 20.0


def log(msg, end="\n"):
    print(msg, file=sys.stderr, end=end, flush=True)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """Exits 64 on a bad command line, as dash-bench does, so that 2 keeps
    meaning "this machine cannot run it"."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (self.prog, message), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def json_num(v):
    return v if v is not None and math.isfinite(v) else None


def kappa_label(k):
    e = math.log10(k)
    return "1e%d" % round(e) if abs(e - round(e)) < 1e-9 else "%g" % k


def parse_shape(s):
    try:
        n, b = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected NxB, e.g. 64x128, not %r"
                                         % s)
    if n < 1 or b < 1:
        raise argparse.ArgumentTypeError("N and B must be positive in %r" % s)
    return n, b


def parse_list(s, allowed, what):
    items = [x for x in s.split(",") if x]
    for x in items:
        if x not in allowed:
            raise UsageError("unknown %s %r (expected %s)" %
                             (what, x, ", ".join(allowed)))
    if not items:
        raise UsageError("no %s given" % what)
    return items


# ---- timing --------------------------------------------------------------


class Clock:
    """Marks on the device's stream of work. On a GPU a mark is a recorded
    CUDA event, read after one synchronize per pass; on a CPU every torch
    operation has finished when it returns, so a mark is the time."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def ms(self, a, b):
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3


def median_min(times):
    return statistics.median(times), min(times)


# ---- stacks --------------------------------------------------------------


class Part:
    """One shape of a stack at one κ: the fp32 blocks on the device and
    the float64 oracle of the blocks in ref_index (host memory, possibly a
    memory map of dash-bench's dump)."""

    def __init__(self, n, b, a_host, oracle, ref_index):
        self.n, self.b = n, b
        self.a_host = a_host
        self.oracle = oracle
        self.ref_index = ref_index
        self.a = None

    @property
    def label(self):
        return "%dx%d" % (self.n, self.b)


def block_seed(seed, b, i):
    # Block i of a shape gets its own stream, independent of N, as in
    # dash-bench's generator (whose numbers these are not).
    x = (seed * 0x9E3779B97F4A7C15) ^ (b * 0xD1B54A32D192ED03) ^ \
        ((i + 1) * 0x8CB92BA72F3D8DD7)
    return x & 0xFFFFFFFFFFFFFFFF


def build_stack(n, b, kappa, seed, device, steps=20, beta=0.95, decay=1.0,
                persist=0.5):
    """N symmetric positive definite fp32 blocks made as tools/spectra.c
    makes them: an EMA over `steps` steps of G·Gᵀ, G = B×r (r = B/8) with
    singular values k^(-decay) and a share `persist` that persists across
    steps; eigenvalues remapped log-linearly onto [1/κ, 1]. Returns the
    float64 blocks (exactly symmetric, already rounded to fp32 values)."""
    r = max(1, b // 8)
    sigma = torch.arange(1, r + 1, dtype=torch.float64).pow(-decay)
    keep, fresh = math.sqrt(persist), math.sqrt(1.0 - persist)
    out = torch.empty(n, b, b, dtype=torch.float64, device=device)
    # Chunks of blocks bound the memory of the gradients (steps·B·r each).
    chunk = max(1, min(n, (1 << 24) // max(1, steps * b * r)))
    for i0 in range(0, n, chunk):
        ids = range(i0, min(n, i0 + chunk))
        # Random numbers from a CPU generator per block, so that a stack
        # does not depend on the device it was built on.
        w0, noise = [], []
        for i in ids:
            g = torch.Generator().manual_seed(block_seed(seed, b, i))
            w0.append(torch.randn(b, r, generator=g, dtype=torch.float64))
            noise.append(torch.randn(steps, b, r, generator=g,
                                     dtype=torch.float64))
        w0 = torch.stack(w0).to(device)
        noise = torch.stack(noise).to(device)
        sig = sigma.to(device)
        s = torch.zeros(len(ids), b, b, dtype=torch.float64, device=device)
        for t in range(steps):
            grad = (keep * w0 + fresh * noise[:, t]) * sig
            s.mul_(beta).add_(torch.bmm(grad, grad.transpose(1, 2)),
                              alpha=1.0 - beta)
        s = 0.5 * (s + s.transpose(1, 2))
        w, q = torch.linalg.eigh(s)
        top = w[:, -1:]
        floor = torch.where(top > 0, top * 1e-14, torch.full_like(top, 1e-14))
        lw = torch.maximum(w, floor).log()
        lo, hi = lw[:, :1], lw[:, -1:]
        if b == 1:
            t = torch.ones_like(lw)
        else:
            rank = torch.arange(b, dtype=torch.float64,
                                device=device) / (b - 1)
            flat = (hi - lo) < 1e-12
            t = torch.where(flat, rank.expand_as(lw),
                            (lw - lo) / torch.where(flat, 1.0, hi - lo))
        lam = torch.exp((t - 1.0) * math.log(kappa))
        blk = torch.bmm(q * lam.unsqueeze(1), q.transpose(1, 2))
        blk = 0.5 * (blk + blk.transpose(1, 2))
        out[i0:i0 + len(ids)] = blk.float().double()
    return out


def oracle_roots(a64, root, eps):
    """Float64 inverse roots with Shampoo's heuristic, as spectra_oracle()
    computes them: λ ← λ − min(λ_min, 0) + ε, X = Q·diag(λ^(-1/p))·Qᵀ."""
    w, q = torch.linalg.eigh(a64)
    w = w - w[:, :1].clamp(max=0.0) + eps
    return torch.bmm(q * w.pow(-1.0 / root).unsqueeze(1), q.transpose(1, 2))


def generated_parts(shapes, kappa, seed, root, eps, ref_blocks, device):
    parts = []
    for n, b in shapes:
        log("stack %dx%d κ=%s: building (float64, %s) ..." %
            (n, b, kappa_label(kappa), device.type), end="")
        t0 = time.perf_counter()
        a64 = build_stack(n, b, kappa, seed, device)
        k = n if ref_blocks <= 0 else min(n, ref_blocks)
        # Evenly spread blocks, first and last included.
        idx = np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))
        sel = torch.from_numpy(idx).to(device)
        oracle = oracle_roots(a64[sel], root, eps).cpu().numpy()
        a_host = a64.float().cpu()
        del a64
        log(" %.1f s; oracle of %d of %d blocks" %
            (time.perf_counter() - t0, len(idx), n))
        parts.append(Part(n, b, a_host, oracle, idx))
    return parts


def load_dump(path, shapes, kappas):
    """dash-bench's index.json: root, eps, seed and the entries, grouped by
    κ in the order they appear, optionally only the given shapes/κ."""
    with open(os.path.join(path, "index.json")) as f:
        index = json.load(f)
    groups = {}
    for e in index["entries"]:
        n, b, k = int(e["N"]), int(e["B"]), float(e["kappa"])
        if shapes and (n, b) not in shapes:
            continue
        if kappas and not any(abs(k / x - 1) < 1e-9 for x in kappas):
            continue
        groups.setdefault(k, []).append(e)
    return index, groups


def dumped_parts(path, entries):
    parts = []
    for e in entries:
        n, b = int(e["N"]), int(e["B"])
        # Memory maps: the oracle of 230 blocks of 1024² is 1.9 GB and is
        # read chunk by chunk.
        a = np.load(os.path.join(path, e["stack"]), mmap_mode="r")
        o = np.load(os.path.join(path, e["oracle"]), mmap_mode="r")
        if a.shape != (n, b, b) or o.shape != (n, b, b):
            raise SystemExit("peer_torch: %s does not hold %dx%dx%d" %
                             (e["stack"], n, b, b))
        parts.append(Part(n, b, torch.from_numpy(np.array(a)), o,
                          np.arange(n)))
    return parts


# ---- the methods ---------------------------------------------------------


def start_vectors(n, b, seed, device):
    """Unit start vectors for the power iteration, one per block, drawn
    once outside the timed region (DASH draws them with torch.randn)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, b, 1, generator=g)
    return (v / v.norm(dim=1, keepdim=True)).to(device)


def power_iter_bf16(m, steps, v0):
    """λ̂_max of every block of m (fp32, N×B×B) by power iteration with the
    products in bf16; returns N×1×1 fp32. The δv term (δ = 1e-6·mean
    diagonal) keeps a start vector in the null space of a block from
    collapsing to zero."""
    m16 = m.to(torch.bfloat16)
    delta = m.diagonal(dim1=-2, dim2=-1).mean(dim=-1).mul_(1e-6).view(-1, 1, 1)
    v = v0
    for _ in range(steps):
        w = torch.bmm(m16, v.to(torch.bfloat16)).float()
        w.add_(delta * v)
        v = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
    w = torch.bmm(m16, v.to(torch.bfloat16)).float()
    # The Rayleigh quotient of a unit vector, a lower bound of λ_max.
    return (v * w).sum(dim=1, keepdim=True)


def newton_db(y, steps):
    """One NewtonDB run on y (N×B×B, eigenvalues in (0, 1]), consumed.
    Returns (Y, Z) ≈ (y^(1/2), y^(-1/2)) in y's dtype. Four buffers, swapped
    rather than copied."""
    e = torch.mul(y, -0.5)
    e.diagonal(dim1=-2, dim2=-1).add_(1.5)
    t = torch.empty_like(y)
    # The first step has Z = I: E = 1.5·I − 0.5·Y, Y ← Y·E, Z ← E.
    torch.bmm(y, e, out=t)
    y, t = t, y
    z, e = e, torch.empty_like(y)
    for _ in range(1, steps):
        torch.bmm(z, y, out=e)
        e.mul_(-0.5).diagonal(dim1=-2, dim2=-1).add_(1.5)
        torch.bmm(y, e, out=t)
        y, t = t, y
        torch.bmm(e, z, out=t)
        z, t = t, z
    return y, z


def ndb_inverse_root(a, root, eps, steps, power_steps, power_scale, v0,
                     dtype):
    m = a.clone()
    m.diagonal(dim1=-2, dim2=-1).add_(eps)
    s = power_iter_bf16(m, power_steps, v0).mul_(power_scale)
    y = m.div_(s).to(dtype)
    del m
    y, z = newton_db(y, steps)
    if root == 4:
        # Y ≈ (M/s)^(1/2) has its eigenvalues in (0, 1] too: a second run
        # gives Z ≈ (M/s)^(-1/4).
        del z
        y, z = newton_db(y, steps)
    del y
    return z.float().mul_(s.pow(-1.0 / root))


def eigh_inverse_root(a, root, eps):
    lam, q = torch.linalg.eigh(a)
    # Shampoo's heuristic, block by block: lift a negative spectrum to 0.
    lam = lam - lam[:, :1].clamp(max=0.0) + eps
    return torch.bmm(q * lam.pow(-1.0 / root).unsqueeze(1), q.transpose(1, 2))


def ndb_flops(n, b, root, steps):
    runs = 2 if root == 4 else 1
    return (3.0 * steps - 2.0) * runs * 2.0 * float(b) ** 3 * n


class MatmulPrecision:
    """fp32 products are true fp32 (allow_tf32 off), tf32 turns it on; the
    previous setting comes back afterwards."""

    def __init__(self, precision):
        self.tf32 = precision == "tf32"

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.tf32

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved


# ---- measurements --------------------------------------------------------


def run_passes(fn, parts, clock, repeat, warmup):
    """Runs fn on every part, warmup + repeat times; returns the per-part
    and whole-stack times of the timed passes and the last pass's
    results."""
    for _ in range(warmup):
        for p in parts:
            fn(p)
        clock.sync()
    per_part = [[] for _ in parts]
    whole = []
    outs = []
    for _ in range(repeat):
        outs = []  # frees the previous pass's results first
        marks = [clock.mark()]
        for p in parts:
            outs.append(fn(p))
            marks.append(clock.mark())
        clock.sync()
        for i in range(len(parts)):
            per_part[i].append(clock.ms(marks[i], marks[i + 1]))
        whole.append(clock.ms(marks[0], marks[-1]))
    return per_part, whole, outs


def block_errors(x, part):
    """Per-block squared norms ‖X − X*‖² and ‖X*‖² (float64 numpy) over
    part.ref_index, the comparison done on x's device in chunks."""
    dev = x.device
    per = max(1, ERROR_CHUNK_ELEMS // (part.b * part.b))
    num, den = [], []
    idx = part.ref_index
    for c0 in range(0, len(idx), per):
        sel = idx[c0:c0 + per]
        # A copy: slices of a memory map are read-only.
        o = torch.from_numpy(np.array(part.oracle[c0:c0 + per])).to(dev)
        d = x[torch.from_numpy(sel).to(dev)].double() - o
        num.append((d * d).sum(dim=(1, 2)).cpu().numpy())
        den.append((o * o).sum(dim=(1, 2)).cpu().numpy())
        del o, d
    return np.concatenate(num), np.concatenate(den)


def error_summary(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        per_block = np.sqrt(num) / np.sqrt(den)
        total = math.sqrt(num.sum()) / math.sqrt(den.sum())
    # np.max and np.median propagate NaN: a NaN block must show.
    return (total, float(np.max(per_block)), float(np.median(per_block)))


def nonfinite_blocks(x):
    return int((~torch.isfinite(x).flatten(1).all(dim=1)).sum().item())


def bmm_roofline(part, precision, clock, repeat):
    """Best and median GFLOP/s of torch.bmm on the part's N×B×B, with the
    stack's own values as operands."""
    x = part.a.to(torch.bfloat16) if precision == "bf16" else part.a
    out = torch.empty_like(x)
    flops = 2.0 * float(part.b) ** 3 * part.n
    with MatmulPrecision(precision):
        for _ in range(2):
            torch.bmm(x, x, out=out)
        clock.sync()
        m0 = clock.mark()
        torch.bmm(x, x, out=out)
        m1 = clock.mark()
        clock.sync()
        one = max(clock.ms(m0, m1), 1e-3)
        iters = max(1, int(math.ceil(ROOFLINE_SAMPLE_MS / one))) \
            if clock.cuda else 1
        samples = []
        for _ in range(max(repeat, 5) if clock.cuda else max(repeat, 1)):
            m0 = clock.mark()
            for _ in range(iters):
                torch.bmm(x, x, out=out)
            m1 = clock.mark()
            clock.sync()
            samples.append(clock.ms(m0, m1) / iters)
    del x, out
    ms_med, ms_min = median_min(samples)
    return {"flops": flops, "ms_min": ms_min, "ms_median": ms_med,
            "gflops": flops / (ms_min * 1e6),
            "gflops_median": flops / (ms_med * 1e6), "iters": iters,
            "samples": len(samples)}


def transfer_ms(parts, clock, device):
    """Median over 3 of copying every part in from pageable host memory
    and a result of the same size back out."""
    if device.type != "cuda":
        return None
    times = []
    for _ in range(3):
        m0 = clock.mark()
        for p in parts:
            d = p.a_host.to(device)
            d.cpu()
        m1 = clock.mark()
        clock.sync()
        times.append(clock.ms(m0, m1))
    return statistics.median(times)


class Emitter:
    def __init__(self, as_json):
        self.json = as_json
        self.header = False

    def __call__(self, rec):
        if self.json:
            print(json.dumps(rec), flush=True)
            return
        if rec["record"] == "roofline":
            print("# %s %s %s: %.1f GFLOP/s (median %.1f)" % (
                rec["method"], rec["precision"], rec["shape"], rec["gflops"],
                rec["gflops_median"]), flush=True)
            return
        if not self.header:
            print("%-10s %-5s %-28s %-5s %10s %10s %9s %9s %9s %9s" % (
                "method", "prec", "shape", "kappa", "ms_min", "ms_median",
                "GFLOP/s", "roofline%", "rel_err", "max_blk"))
            self.header = True

        def f(v, fmt):
            return "-" if v is None else fmt % v
        # The whole-stack pass after the shapes it covers.
        shape = rec["shape"]
        if rec["record"] == "stack":
            shape = "stack " + shape
        print("%-10s %-5s %-28s %-5s %10.3f %10.3f %9s %9s %9s %9s" % (
            rec["method"], rec["precision"], shape,
            kappa_label(rec["kappa"]), rec["ms_min"], rec["ms_median"],
            f(rec["gflops"], "%.1f"), f(rec["roofline_pct"], "%.1f%%"),
            f(rec["rel_err"], "%.2e"), f(rec["max_rel_err_block"], "%.2e")),
            flush=True)


def main():
    ap = Parser(description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="where to run (default cuda)")
    ap.add_argument("--dump-dir",
                    help="read the stacks and oracles of `dash-bench "
                    "--dump-dir DIR` (then --shape and --kappa only filter)")
    ap.add_argument("--shape", action="append", type=parse_shape,
                    metavar="NxB", help="a shape of the stack (repeatable; "
                    "default %s)" % " ".join(DEFAULT_SHAPES))
    ap.add_argument("--kappa", action="append", metavar="K[,K...]",
                    help="condition numbers (repeatable; default 1e4)")
    ap.add_argument("--root", type=int, help="p of A^(-1/p) (default 4, "
                    "or the dump's)")
    ap.add_argument("--eps", type=float, help="ε (default 1e-10, or the "
                    "dump's)")
    ap.add_argument("--steps", type=int, default=10,
                    help="NewtonDB steps per run (default 10, DASH's)")
    ap.add_argument("--power-steps", type=int, default=10,
                    help="power-iteration steps (default 10)")
    ap.add_argument("--power-scale", type=float, default=2.0,
                    help="c of s = c·λ̂_max (default 2)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="of ndb, eigh, bmm (default all)")
    ap.add_argument("--precision", default=",".join(PRECISIONS),
                    help="products of torch-ndb and the bmm roofline, of "
                    "fp32, tf32, bf16 (default all; torch-eigh is fp32)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed passes (default 5)")
    ap.add_argument("--eigh-repeat", type=int,
                    help="timed passes of torch-eigh (default --repeat)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed passes first (default 1)")
    ap.add_argument("--ref-blocks", type=int, default=0,
                    help="without --dump-dir: blocks per shape that get a "
                    "float64 oracle, evenly spread (default 0: all)")
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of built stacks and start vectors (default 1)")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object per line")
    args = ap.parse_args()

    try:
        methods = parse_list(args.methods, METHODS, "method")
        precisions = parse_list(args.precision, PRECISIONS, "precision")
        kappas = []
        for k in args.kappa or []:
            for x in k.split(","):
                if x:
                    try:
                        kappas.append(float(x))
                    except ValueError:
                        raise UsageError("--kappa: %r is not a number" % x)
        if any(not (k >= 1 and math.isfinite(k)) for k in kappas):
            raise UsageError("--kappa must be finite and >= 1")
        if args.repeat < 1 or args.warmup < 0 or args.steps < 1 or \
                args.power_steps < 0 or (args.eigh_repeat is not None and
                                         args.eigh_repeat < 1):
            raise UsageError("--repeat, --eigh-repeat and --steps must be "
                             ">= 1, --warmup and --power-steps >= 0")
    except UsageError as e:
        ap.error(str(e))
    eigh_repeat = args.eigh_repeat or args.repeat

    if torch is None:
        log("peer_torch: skipped: torch or numpy not available")
        return EXIT_UNAVAILABLE
    if args.device == "cuda" and not torch.cuda.is_available():
        log("peer_torch: skipped: no CUDA device (torch %s, "
            "torch.cuda.is_available() is false)" % torch.__version__)
        return EXIT_UNAVAILABLE
    device = torch.device(args.device)
    clock = Clock(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        log("torch %s, CUDA %s, %s" % (torch.__version__, torch.version.cuda,
                                       name))
    else:
        name = platform.processor() or platform.machine()
        log("torch %s on the CPU, %d threads" %
            (torch.__version__, torch.get_num_threads()))

    # The stacks, by κ.
    if args.dump_dir:
        index, groups = load_dump(args.dump_dir, args.shape, kappas)
        root, eps = int(index["root"]), float(index["eps"])
        if (args.root is not None and args.root != root) or \
                (args.eps is not None and args.eps != eps):
            ap.error("the dump was made with root %d, eps %g" % (root, eps))
        if not groups:
            ap.error("no stack of %s matches --shape/--kappa" % args.dump_dir)
        source = "dash-bench dump"
        seed = int(index.get("seed", args.seed))
    else:
        root = 4 if args.root is None else args.root
        eps = 1e-10 if args.eps is None else args.eps
        if root < 1 or not (eps >= 0):
            ap.error("--root must be >= 1 and --eps >= 0")
        shapes = args.shape or [parse_shape(s) for s in DEFAULT_SHAPES]
        groups = {k: shapes for k in (kappas or [1e4])}
        source = "generated"
        seed = args.seed
    if "ndb" in methods and root not in (2, 4):
        log("peer_torch: torch-ndb computes roots 2 and 4 only; skipping it "
            "for root %d" % root)
        methods = [m for m in methods if m != "ndb"]

    emit = Emitter(args.json)
    rooflines = {}  # (N, B, precision) -> bmm measurement
    common = {"backend": "torch", "device": device.type, "device_name": name,
              "torch": torch.__version__, "root": root, "eps": eps,
              "stacks": source, "seed": seed}

    with torch.no_grad():
        for kappa, group in groups.items():
            if args.dump_dir:
                log("stacks of κ=%s from %s ..." % (kappa_label(kappa),
                                                    args.dump_dir))
                parts = dumped_parts(args.dump_dir, group)
            else:
                parts = generated_parts(group, kappa, seed, root, eps,
                                        args.ref_blocks, device)
            for p in parts:
                p.a = p.a_host.to(device)
            stack_label = "+".join(p.label for p in parts)
            clock.sync()

            if "bmm" in methods:
                for p in parts:
                    for prec in precisions:
                        key = (p.n, p.b, prec)
                        if key in rooflines:
                            continue
                        log("bmm %s %s ..." % (prec, p.label), end="")
                        r = bmm_roofline(p, prec, clock, args.repeat)
                        rooflines[key] = r
                        log(" %.1f GFLOP/s" % r["gflops"])
                        rec = {"record": "roofline",
                               "method": "cublas-bmm" if clock.cuda
                               else "torch-bmm", "precision": prec,
                               "N": p.n, "B": p.b, "shape": p.label}
                        rec.update({k: common[k] for k in
                                    ("backend", "device", "device_name",
                                     "torch")})
                        rec.update({k: json_num(v) if isinstance(v, float)
                                    else v for k, v in r.items()})
                        emit(rec)
            move_ms = transfer_ms(parts, clock, device)

            variants = []
            if "ndb" in methods:
                for prec in precisions:
                    variants.append(("torch-ndb", prec))
            if "eigh" in methods:
                variants.append(("torch-eigh", "fp32"))
            for method, prec in variants:
                ndb = method == "torch-ndb"
                if ndb:
                    dtype = torch.bfloat16 if prec == "bf16" else torch.float32
                    v0 = {id(p): start_vectors(p.n, p.b, seed, device)
                          for p in parts}

                    def fn(p):
                        return ndb_inverse_root(
                            p.a, root, eps, args.steps, args.power_steps,
                            args.power_scale, v0[id(p)], dtype)
                    repeat = args.repeat
                else:
                    def fn(p):
                        return eigh_inverse_root(p.a, root, eps)
                    repeat = eigh_repeat
                log("%s %s %s κ=%s ..." % (method, prec, stack_label,
                                           kappa_label(kappa)), end="")
                with MatmulPrecision(prec):
                    per_part, whole, outs = run_passes(
                        fn, parts, clock, repeat, args.warmup)
                nums, dens, all_flops, roof_ms = [], [], 0.0, 0.0
                bad = 0
                records = []
                for p, times, x in zip(parts, per_part, outs):
                    num, den = block_errors(x, p)
                    nums.append(num)
                    dens.append(den)
                    err, err_max, err_med = error_summary(num, den)
                    nf = nonfinite_blocks(x)
                    bad += nf
                    ms_med, ms_min = median_min(times)
                    if ndb:
                        flops = ndb_flops(p.n, p.b, root, args.steps)
                    else:
                        flops = EVD_FLOPS_PER_B3 * float(p.b) ** 3 * p.n
                    roof = rooflines.get((p.n, p.b, prec)) if ndb else None
                    all_flops += flops
                    if roof is not None:
                        roof_ms += flops / (roof["gflops"] * 1e6)
                    gflops = flops / (ms_min * 1e6)
                    rec = {"record": "root", "method": method,
                           "resolved_method": method,
                           "scaling": "pi" if ndb else "none",
                           "precision": prec, "N": p.n, "B": p.b,
                           "shape": p.label, "kappa": kappa}
                    rec.update(common)
                    if ndb:
                        rec.update({"steps": args.steps,
                                    "power_steps": args.power_steps,
                                    "power_scale": args.power_scale})
                    rec.update({
                        "repeat": repeat, "warmup": args.warmup,
                        "ms_min": ms_min, "ms_median": ms_med,
                        "flops": flops, "gflops": json_num(gflops),
                        "roofline_gflops": roof["gflops"] if roof else None,
                        "roofline_pct": json_num(100.0 * gflops /
                                                 roof["gflops"])
                        if roof else None,
                        "rel_err": json_num(err),
                        "max_rel_err_block": json_num(err_max),
                        "median_rel_err_block": json_num(err_med),
                        "ref_blocks": int(len(p.ref_index)),
                        "nonfinite_blocks": nf,
                        "max_iterations": (2 if root == 4 else 1) *
                        args.steps if ndb else 0})
                    records.append(rec)
                outs = x = None
                if clock.cuda:
                    torch.cuda.empty_cache()
                err, err_max, err_med = error_summary(np.concatenate(nums),
                                                      np.concatenate(dens))
                ms_med, ms_min = median_min(whole)
                log(" %.3f ms, rel_err %.2e" % (ms_med, err))
                for rec in records:
                    emit(rec)
                gflops = all_flops / (ms_min * 1e6)
                roof_gflops = all_flops / (roof_ms * 1e6) \
                    if ndb and roof_ms > 0 else None
                rec = {"record": "stack", "method": method,
                       "resolved_method": method,
                       "scaling": "pi" if ndb else "none", "precision": prec,
                       "shape": stack_label,
                       "shapes": [[p.n, p.b] for p in parts],
                       "kappa": kappa}
                rec.update(common)
                if ndb:
                    rec["steps"] = args.steps
                rec.update({
                    "repeat": repeat, "warmup": args.warmup,
                    "ms_min": ms_min, "ms_median": ms_med,
                    "transfer_ms": json_num(move_ms), "flops": all_flops,
                    "gflops": json_num(gflops),
                    # The stack's flops at each shape's bmm rate.
                    "roofline_gflops": json_num(roof_gflops),
                    "roofline_pct": json_num(100.0 * gflops / roof_gflops)
                    if roof_gflops else None,
                    "rel_err": json_num(err),
                    "max_rel_err_block": json_num(err_max),
                    "median_rel_err_block": json_num(err_med),
                    "ref_blocks": int(sum(len(p.ref_index) for p in parts)),
                    "blocks": sum(p.n for p in parts),
                    "nonfinite_blocks": bad})
                emit(rec)

            for p in parts:
                p.a = None
            del parts
            if clock.cuda:
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
