#!/bin/sh
# Every public header compiles on its own, warning-free and pedantic, as C11
# and as C++11, and its options initializer is usable in both languages.
# usage: public_headers.sh INCLUDE_DIR
set -eu
inc=$1
cc=${CC:-cc}
cxx=${CXX:-c++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
passed=0
for header in "$inc"/dash/*.h; do
  name=dash/$(basename "$header")
  cat >"$tmp/t.c" <<EOF2
#include <$name>
#include <dash/roots.h>
int main(void) {
  dash_roots_options o = DASH_ROOTS_OPTIONS_INIT;
  return o.version == DASH_ROOTS_OPTIONS_VERSION ? 0 : 1;
}
EOF2
  cp "$tmp/t.c" "$tmp/t.cpp"
  for lang in c c++; do
    if [ "$lang" = c ]; then
      cmd="$cc -std=c11 -Wall -Wextra -pedantic -Werror -I$inc -c $tmp/t.c -o $tmp/t.o"
    else
      cmd="$cxx -std=c++11 -Wall -Wextra -pedantic -Werror -I$inc -c $tmp/t.cpp -o $tmp/t.o"
    fi
    if $cmd 2>"$tmp/err"; then
      passed=$((passed + 1))
    else
      echo "FAIL: $name as $lang:"
      cat "$tmp/err"
      failed=$((failed + 1))
    fi
  done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
