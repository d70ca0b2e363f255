#!/bin/sh
# The CPU benchmark table: dash-bench on four stack shapes against the numpy
# peer on the same stacks, merged into one markdown table. Builds nothing.
#
# usage: bench/run-cpu.sh [BUILD_DIR [OUT_DIR]]
#   BUILD_DIR  a configured and built tree (default build)
#   OUT_DIR    where results and stacks go (default BUILD_DIR/bench-cpu);
#              the dumped stacks take about 300 MB with four kappas
# environment:
#   SHAPES   NxB list (default "64x128 16x256 8x512 2x1024")
#   KAPPAS   comma list (default 1e2,1e4,1e6,1e8)
#   REPEAT   timed runs per measurement (default 3)
#   WARMUP   untimed runs first (default 1)
#   THREADS  dash-bench --threads (default 0, every core)
# With the defaults the whole run takes about 9 minutes on two quiet cores,
# most of it NewtonDB and Coupled Newton on 2x1024; KAPPAS=1e2,1e4,1e6
# takes about 7.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
out=${2:-$build/bench-cpu}
shapes=${SHAPES:-64x128 16x256 8x512 2x1024}
kappas=${KAPPAS:-1e2,1e4,1e6,1e8}
repeat=${REPEAT:-3}
warmup=${WARMUP:-1}
threads=${THREADS:-0}
python=/usr/bin/python3

bench="$build/bin/dash-bench"
if [ ! -x "$bench" ]; then
  echo "run-cpu.sh: $bench is missing; build the dash-bench target first" >&2
  exit 1
fi
mkdir -p "$out"
shape_args=
for s in $shapes; do
  shape_args="$shape_args --shape $s"
done

# --skip-unavailable: a method this build lacks leaves a gap in the table
# rather than no table.
# shellcheck disable=SC2086 # shape_args is a list of words on purpose.
"$bench" --backend cpu --threads "$threads" $shape_args \
  --root 4 --kappa "$kappas" \
  --methods ndb/pi,ndb/fro,cn/pi,evd,cheb/pi,auto/pi \
  --repeat "$repeat" --warmup "$warmup" --dump-dir "$out/stacks" \
  --json --skip-unavailable >"$out/dash.jsonl"

# The iterations again with enough steps to converge, for the comparison at
# equal accuracy (the stacks are the same: they depend on the seed only).
# shellcheck disable=SC2086
"$bench" --backend cpu --threads "$threads" $shape_args \
  --root 4 --kappa "$kappas" --methods ndb/pi,cn/pi --steps 40 --tol 1e-4 \
  --repeat "$repeat" --warmup "$warmup" \
  --json --skip-unavailable >>"$out/dash.jsonl"

"$python" "$here/peer_numpy.py" "$out/stacks" --repeat "$repeat" \
  --warmup "$warmup" >"$out/numpy.jsonl"

"$python" "$here/format_results.py" "$out/dash.jsonl" "$out/numpy.jsonl" \
  | tee "$out/table.md"
echo "run-cpu.sh: results in $out" >&2
