#!/bin/sh
# `cmake --install` into a DESTDIR, then a program outside the tree builds
# against the installed dash.pc and talks to the installed dashd.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR PREFIX LIBDIR SYSCONFDIR
#                        [SANITIZERS]
#   PREFIX, LIBDIR (relative to PREFIX) and SYSCONFDIR (absolute) as the
#   build was configured; SANITIZERS as DASH_SANITIZE, which an
#   instrumented libdash needs in its consumer too.
set -eu
build=$1 src=$2 prefix=$3 libdir=$4 sysconfdir=$5 san=${6:-}
sanflags=
if [ -n "$san" ]; then sanflags="-fsanitize=$san"; fi

for tool in pkg-config cc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "skipped: $tool is not installed"
    exit 77
  fi
done

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
dest=$tmp/dest

DESTDIR=$dest cmake --install "$build" >"$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log"; echo "FAILED: cmake --install"; exit 1; }

case $libdir in /*) lib=$dest$libdir ;; *) lib=$dest$prefix/$libdir ;; esac
for f in "$dest$prefix/bin/dashd" "$dest$prefix/bin/dashctl" \
         "$dest$prefix/bin/dash-roots" "$dest$prefix/bin/dash-bench" \
         "$lib/libdash.so" "$lib/libdash.so.0" "$lib/pkgconfig/dash.pc" \
         "$dest$prefix/include/dash/dash.h" \
         "$dest$prefix/include/dash/roots.h" \
         "$dest$prefix/include/dash/status.h" \
         "$dest$prefix/lib/systemd/system/dashd.service" \
         "$dest$prefix/lib/systemd/system/dashd.socket" \
         "$dest$prefix/lib/sysusers.d/dashd.conf" \
         "$dest$prefix/lib/tmpfiles.d/dashd.conf" \
         "$dest$sysconfdir/dashd/dashd.conf" \
         "$dest$prefix/share/man/man8/dashd.8" \
         "$dest$prefix/share/man/man1/dashctl.1" \
         "$dest$prefix/share/man/man3/libdash.3"; do
  if [ ! -e "$f" ]; then
    echo "FAILED: not installed: ${f#"$dest"}"
    find "$dest" | sed "s|^$dest||"
    exit 1
  fi
done

# Only the installed tree is visible to pkg-config and the compiler.
cp "$src/tests/install_consumer.c" "$tmp/consumer.c"
export PKG_CONFIG_LIBDIR="$lib/pkgconfig" PKG_CONFIG_PATH=
export PKG_CONFIG_SYSROOT_DIR="$dest"
flags=$(pkg-config --cflags --libs dash) || {
  echo "FAILED: pkg-config dash"; exit 1; }
echo "pkg-config dash: $flags"
(cd "$tmp" && cc -std=c11 -Wall -Wextra -Werror $sanflags \
  -o consumer consumer.c $flags) || {
  echo "FAILED: the consumer does not build against the installed dash.pc"
  exit 1; }

"$dest$prefix/bin/dashd" --socket "$tmp/sock" \
  --config "$dest$sysconfdir/dashd/dashd.conf" >"$tmp/dashd.log" 2>&1 &
pid=$!
i=0
while [ ! -S "$tmp/sock" ]; do
  i=$((i + 1))
  if [ $i -gt 500 ] || ! kill -0 "$pid" 2>/dev/null; then
    cat "$tmp/dashd.log"; echo "FAILED: the installed dashd did not start"
    exit 1
  fi
  sleep 0.02
done
LD_LIBRARY_PATH=$lib "$tmp/consumer" "$tmp/sock" || {
  cat "$tmp/dashd.log"; echo "FAILED: the consumer could not talk to dashd"
  exit 1; }
# It ran against the installed library, not the build tree's.
LD_LIBRARY_PATH=$lib ldd "$tmp/consumer" | grep -q "$lib/libdash.so.0" || {
  LD_LIBRARY_PATH=$lib ldd "$tmp/consumer"
  echo "FAILED: the consumer did not load the installed libdash"; exit 1; }
kill -TERM "$pid"
wait "$pid" || { echo "FAILED: dashd exited $?"; exit 1; }
pid=
echo "install: ok"
