#!/bin/sh
# Every C and CUDA source follows the repository's .clang-format.
# usage: format_check.sh SOURCE_DIR
set -u
src=$1
if ! command -v clang-format >/dev/null 2>&1; then
  echo "skipped: clang-format not installed"
  exit 77
fi
files=$(find "$src/include" "$src/kernels" "$src/proto" "$src/daemon" \
  "$src/client" "$src/tools" "$src/tests" "$src/examples" \
  \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | sort)
bad=0
for f in $files; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: ${f#"$src"/} (clang-format -i it)"
    bad=$((bad + 1))
  fi
done
total=$(echo "$files" | wc -l)
echo "$((total - bad)) passed, $bad failed"
[ "$bad" -eq 0 ]
