#!/usr/bin/python3
"""Merges dash-bench --json, peer_numpy.py and peer_torch.py outputs into
one markdown table.

Usage: /usr/bin/python3 bench/format_results.py FILE.jsonl [FILE.jsonl ...]
           [--max-err 1e-3] [--ref-backend numpy] [--stack]

For every shape and kappa the reference is the fastest row of the
--ref-backend (numpy by default; torch for the GPU table) by ms_median
whose rel_err is at most --max-err. Every row whose rel_err is within it
gets "speed-up vs BACKEND" = reference ms / its ms; a less accurate row
gets "n/a (err)", and a shape/kappa without an accurate reference row gets
"n/a (no ref)".

--stack prints, instead of the table, one line per stack and kappa that
puts the methods side by side on the whole stack (the shapes of
peer_torch.py's stack records, else every shape in the files): ms is the
sum of each method's per-shape ms_median, × that over DASH's configuration
in dash-bench (ndb/pi, fp32, 10 steps), err the worst per-shape rel_err;
then, where peer_torch.py measured the bmm roofline, each NewtonDB row's
share of it.
"""

import argparse
import json
import math
import sys


def load(paths):
    roots, rooflines, stacks = [], [], []
    for path in paths:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    sys.exit("%s:%d: not JSON: %s" % (path, lineno, e))
                kind = rec.get("record", "root")
                if kind == "root":
                    roots.append(rec)
                elif kind == "roofline":
                    rooflines.append(rec)
                elif kind == "stack":
                    stacks.append(rec)
    return roots, rooflines, stacks


def kappa_label(k):
    e = math.log10(k)
    return "1e%d" % round(e) if abs(e - round(e)) < 1e-9 else "%g" % k


def num(v, fmt):
    return "-" if v is None or not math.isfinite(v) else fmt % v


def accurate(rec, max_err):
    err = rec.get("rel_err")
    return err is not None and math.isfinite(err) and err <= max_err


def method_label(rec):
    m, r = rec["method"], rec.get("resolved_method", rec["method"])
    label = "%s→%s" % (m, r) if m == "auto" and r != m else m
    # Products in less than fp32 say so (fp32 and fp64 rows keep their
    # plain names).
    if rec.get("precision") in ("tf32", "bf16", "fp16"):
        label += " %s" % rec["precision"]
    # Iterative rows run with other than DASH's 10 steps say so.
    if r in ("ndb", "cn", "torch-ndb") and rec.get("steps", 10) != 10:
        if rec.get("tol") is None:
            label += " (%d steps)" % rec["steps"]
        else:
            label += " (%d steps, tol %g)" % (rec["steps"], rec["tol"])
    return label


def same_kappa(a, b):
    return abs(a / b - 1.0) < 1e-9


def is_dash(rec):
    return rec.get("backend") not in ("numpy", "torch")


def entry_label(rec):
    if is_dash(rec):
        scaling = rec.get("scaling", "none")
        return "dash-%s %s%s %s" % (
            rec.get("backend"), method_label(rec),
            "" if scaling == "none" else "/" + scaling, rec.get("precision"))
    if rec.get("backend") == "torch":
        return "%s %s" % (rec["method"], rec.get("precision"))
    return method_label(rec)


def dash_config(rec):
    """DASH's own configuration: NewtonDB, power-iteration scaling, fp32,
    10 steps."""
    return (is_dash(rec) and rec.get("resolved_method") == "ndb" and
            rec.get("scaling") == "pi" and rec.get("precision") == "fp32" and
            rec.get("steps", 10) == 10)


def print_stack_summary(roots, rooflines, stacks):
    """One line per stack and κ: every method with a row for each of the
    stack's shapes, side by side; then the NewtonDB rows' share of the bmm
    roofline."""
    defs = []
    for st in stacks:
        key = (tuple(tuple(s) for s in st["shapes"]), st["kappa"])
        if not any(k == key[0] and same_kappa(q, key[1]) for k, q in defs):
            defs.append(key)
    if not defs:
        shapes, kappas = [], []
        for r in roots:
            if (r["N"], r["B"]) not in shapes:
                shapes.append((r["N"], r["B"]))
            if not any(same_kappa(r["kappa"], k) for k in kappas):
                kappas.append(r["kappa"])
        defs = [(tuple(shapes), k) for k in kappas]
    roof = {(r["N"], r["B"], r["precision"]): r["gflops"] for r in rooflines
            if r.get("backend") == "torch" and r.get("gflops")}
    for shapes, kappa in defs:
        by_label = {}
        for r in roots:
            if same_kappa(r["kappa"], kappa) and (r["N"], r["B"]) in shapes:
                by_label.setdefault(entry_label(r), {})[(r["N"], r["B"])] = r
        entries = []
        for label, rows in by_label.items():
            if all(s in rows for s in shapes):
                rows = [rows[s] for s in shapes]
                errs = [r.get("rel_err") for r in rows]
                err = (max(errs) if all(e is not None and math.isfinite(e)
                                        for e in errs) else None)
                entries.append((label, rows, sum(r["ms_median"] for r in rows),
                                err))
        head = "stack %s κ=%s" % ("+".join("%dx%d" % s for s in shapes),
                                  kappa_label(kappa))
        if not entries:
            print("%s: no method has a row for every shape" % head)
            continue
        base = next((e for e in entries if dash_config(e[1][0])), None)
        parts = []
        for e in entries:
            label, rows, ms, err = e
            ratio = ""
            if base is not None and e is not base and base[2] > 0:
                ratio = " %.2f×" % (ms / base[2])
            parts.append("%s %s ms%s (err %s)" % (
                label, "%.1f" % ms if ms >= 10 else "%.3f" % ms, ratio,
                num(err, "%.1e")))
        print("%s, ms summed over shapes%s: %s" % (
            head, ", × vs " + base[0] if base else
            " (no dash-bench ndb/pi fp32 row)", " | ".join(parts)))
        shares = []
        for label, rows, ms, err in entries:
            prec = rows[0].get("precision")
            if rows[0].get("resolved_method") not in ("ndb", "torch-ndb") or \
                    any((r["N"], r["B"], prec) not in roof for r in rows):
                continue
            flops = sum(r["flops"] for r in rows)
            # The stack's flops at each shape's bmm rate of this precision.
            roof_ms = sum(r["flops"] / (roof[(r["N"], r["B"], prec)] * 1e6)
                          for r in rows)
            ms_min = sum(r["ms_min"] for r in rows)
            if flops > 0 and ms_min > 0:
                shares.append("%s %.0f%% of %s bmm (%.4g of %.4g GFLOP/s)" % (
                    label, 100.0 * roof_ms / ms_min, prec,
                    flops / (ms_min * 1e6), flops / (roof_ms * 1e6)))
        if shares:
            print("%s, NewtonDB against torch.bmm on the same shapes: %s" % (
                head, " | ".join(shares)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--max-err", type=float, default=1e-3)
    ap.add_argument("--ref-backend", default="numpy",
                    help="the backend whose fastest accurate row is the "
                    "reference (default numpy)")
    ap.add_argument("--stack", action="store_true",
                    help="the whole-stack summary lines instead of the table")
    args = ap.parse_args()
    roots, rooflines, stacks = load(args.files)
    if not roots:
        sys.exit("format_results: no measurements in %s" % " ".join(args.files))
    if args.stack:
        print_stack_summary(roots, rooflines, stacks)
        return
    ref_backend = args.ref_backend

    # Shapes in the order they first appear, kappas ascending within each.
    groups = {}
    for rec in roots:
        groups.setdefault((rec["N"], rec["B"], rec["kappa"]), []).append(rec)
    shape_order = []
    for rec in roots:
        if (rec["N"], rec["B"]) not in shape_order:
            shape_order.append((rec["N"], rec["B"]))
    keys = sorted(groups, key=lambda k: (shape_order.index(k[:2]), k[2]))

    print("| shape | κ | method | scaling | ms_median | rel_err | gflops "
          "| roofline%% | speed-up vs %s |" % ref_backend)
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for key in keys:
        rows = groups[key]
        peers = [r for r in rows if r.get("backend") == ref_backend and
                 accurate(r, args.max_err)]
        ref = min(peers, key=lambda r: r["ms_median"]) if peers else None
        # Rows of other backends first, in their run order; the reference
        # backend's after.
        rows = ([r for r in rows if r.get("backend") != ref_backend] +
                [r for r in rows if r.get("backend") == ref_backend])
        for r in rows:
            if not accurate(r, args.max_err):
                speed = "n/a (err)"
            elif ref is None:
                speed = "n/a (no ref)"
            else:
                speed = "%.2f×" % (ref["ms_median"] / r["ms_median"])
                if r is ref:
                    speed += " (ref)"
            pct = r.get("roofline_pct")
            print("| %dx%d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                key[0], key[1], kappa_label(key[2]), method_label(r),
                r.get("scaling", "-"), num(r["ms_median"], "%.3f"),
                num(r.get("rel_err"), "%.2e"), num(r.get("gflops"), "%.1f"),
                num(pct, "%.1f%%"), speed))

    # dash-bench's CPU sgemm rooflines, then the GPU ones (dash-bench's
    # cuBLAS GEMM and peer_torch.py's bmm).
    cpu_roofs = [r for r in rooflines if "threads" in r]
    bmm_roofs = [r for r in rooflines if "threads" not in r]
    if cpu_roofs:
        print()
        print("| shape | threads | sgemm GFLOP/s, thread per block "
              "| sgemm GFLOP/s, threaded | roofline |")
        print("|---|---:|---:|---:|---:|")
        for r in cpu_roofs:
            print("| %dx%d | %d | %.1f | %.1f | %.1f |" % (
                r["N"], r["B"], r["threads"], r["gflops_thread_per_block"],
                r["gflops_threaded"], r["gflops"]))
    if bmm_roofs:
        print()
        print("| shape | GEMM | precision | GFLOP/s (best) "
              "| GFLOP/s (median) |")
        print("|---|---|---|---:|---:|")
        for r in bmm_roofs:
            print("| %dx%d | %s | %s | %s | %s |" % (
                r["N"], r["B"], r.get("method", "-"), r.get("precision", "-"),
                num(r.get("gflops"), "%.1f"),
                num(r.get("gflops_median"), "%.1f")))
    print()
    print("speed-up: the fastest %s row with rel_err ≤ %g is the "
          "reference of its shape and κ (ref); rel_err is ‖X − X*‖_F/‖X*‖_F "
          "over the stack against a float64 eigh oracle." %
          (ref_backend, args.max_err))


if __name__ == "__main__":
    main()
