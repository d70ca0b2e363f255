#!/bin/sh
# `cpack -G DEB` builds the package, which holds the programs, libdash,
# the units, the configuration and the maintainer scripts.
# Usage: packaging_test.sh BUILD_DIR PREFIX SYSCONFDIR
set -eu
build=$1 prefix=$2 sysconfdir=$3

for tool in cpack dpkg-deb dpkg-shlibdeps; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "skipped: $tool is not installed (apt-get install dpkg-dev)"
    exit 77
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp" \
   >"$tmp/cpack.log" 2>&1) || {
  cat "$tmp/cpack.log"; echo "FAILED: cpack -G DEB"; exit 1; }
deb=$(ls "$tmp"/dashd_*.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
  cat "$tmp/cpack.log"; echo "FAILED: no dashd_*.deb"; exit 1
fi
echo "package: $(basename "$deb")"
dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\./|/|' \
  >"$tmp/contents"
p=${prefix%/}
for f in "$p/bin/dashd" "$p/bin/dashctl" "$p/bin/dash-roots" \
         "$p/bin/dash-bench" "$p/lib/systemd/system/dashd.service" \
         "$p/lib/systemd/system/dashd.socket" \
         "$p/lib/sysusers.d/dashd.conf" "$p/lib/tmpfiles.d/dashd.conf" \
         "$sysconfdir/dashd/dashd.conf" "$p/include/dash/dash.h" \
         "$p/share/man/man8/dashd.8"; do
  grep -qx "$f" "$tmp/contents" || {
    cat "$tmp/contents"; echo "FAILED: $f is not in the package"; exit 1; }
done
grep -q '/libdash\.so\.0' "$tmp/contents" || {
  cat "$tmp/contents"; echo "FAILED: libdash.so.0 is not in the package"
  exit 1; }

dpkg-deb --field "$deb" Package Depends >"$tmp/fields"
grep -qx 'Package: dashd' "$tmp/fields" || {
  cat "$tmp/fields"; echo "FAILED: the package is not named dashd"; exit 1; }
# Computed by dpkg-shlibdeps: libuv and libc at least.
grep -q 'libuv1' "$tmp/fields" && grep -q 'libc6' "$tmp/fields" || {
  cat "$tmp/fields"; echo "FAILED: Depends lacks libuv1/libc6"; exit 1; }

dpkg-deb --control "$deb" "$tmp/control"
for s in postinst prerm postrm; do
  [ -x "$tmp/control/$s" ] || {
    echo "FAILED: maintainer script $s missing or not executable"; exit 1; }
done
grep -q 'systemctl enable --now dashd.socket' "$tmp/control/postinst" || {
  echo "FAILED: postinst does not enable dashd.socket"; exit 1; }
grep -qx "$sysconfdir/dashd/dashd.conf" "$tmp/control/conffiles" 2>/dev/null || {
  cat "$tmp/control/conffiles" 2>/dev/null || true
  echo "FAILED: $sysconfdir/dashd/dashd.conf is not a conffile"; exit 1; }
echo "packaging: ok"
