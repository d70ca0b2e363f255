#!/usr/bin/python3
"""Merges dash-bench --json and peer_numpy.py outputs into one markdown
table.

Usage: /usr/bin/python3 bench/format_results.py FILE.jsonl [FILE.jsonl ...]
           [--max-err 1e-3]

For every shape and kappa the reference is the fastest numpy-backend row
(by ms_median) whose rel_err is at most --max-err. Every row whose rel_err
is within it gets "speed-up vs numpy" = reference ms / its ms; a less
accurate row gets "n/a (err)", and a shape/kappa without an accurate numpy
row gets "n/a (no ref)".
"""

import argparse
import json
import math
import sys


def load(paths):
    roots, rooflines = [], []
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
    return roots, rooflines


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
    # Iterative rows run with other than DASH's 10 steps say so.
    if r in ("ndb", "cn") and rec.get("steps", 10) != 10:
        label += " (%d steps, tol %g)" % (rec["steps"], rec["tol"])
    return label


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--max-err", type=float, default=1e-3)
    args = ap.parse_args()
    roots, rooflines = load(args.files)
    if not roots:
        sys.exit("format_results: no measurements in %s" % " ".join(args.files))

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
          "| roofline% | speed-up vs numpy |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for key in keys:
        rows = groups[key]
        peers = [r for r in rows
                 if r.get("backend") == "numpy" and accurate(r, args.max_err)]
        ref = min(peers, key=lambda r: r["ms_median"]) if peers else None
        # dash rows first, in their run order; the numpy peers after.
        rows = ([r for r in rows if r.get("backend") != "numpy"] +
                [r for r in rows if r.get("backend") == "numpy"])
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

    if rooflines:
        print()
        print("| shape | threads | sgemm GFLOP/s, thread per block "
              "| sgemm GFLOP/s, threaded | roofline |")
        print("|---|---:|---:|---:|---:|")
        for r in rooflines:
            print("| %dx%d | %d | %.1f | %.1f | %.1f |" % (
                r["N"], r["B"], r["threads"], r["gflops_thread_per_block"],
                r["gflops_threaded"], r["gflops"]))
    print()
    print("speed-up: the fastest numpy row with rel_err ≤ %g is the "
          "reference of its shape and κ (ref); rel_err is ‖X − X*‖_F/‖X*‖_F "
          "over the stack against a float64 eigh oracle." % args.max_err)


if __name__ == "__main__":
    main()
