#!/bin/sh
# The man pages format without a groff warning and have the sections the
# project promises. Usage: man_pages.sh MAN_DIR
set -eu
dir=$1
for page in dashd.8 dashctl.1 libdash.3; do
  f=$dir/$page
  for s in NAME SYNOPSIS DESCRIPTION FILES "EXIT STATUS|RETURN VALUE" \
           "SEE ALSO"; do
    grep -Eq "^\.SH \"?($s)\"?\$" "$f" || {
      echo "FAILED: $page has no section $s"; exit 1; }
  done
done
grep -q '^\.SH SIGNALS' "$dir/dashd.8" || {
  echo "FAILED: dashd.8 has no SIGNALS"; exit 1; }
grep -q '^\.SH OPTIONS' "$dir/dashd.8" && grep -q 'check\\-config' "$dir/dashd.8" || {
  echo "FAILED: dashd.8 does not document --check-config"; exit 1; }
if ! command -v groff >/dev/null 2>&1; then
  echo "man pages: sections checked; groff is not installed, formatting not"
  exit 0
fi
for page in dashd.8 dashctl.1 libdash.3; do
  out=$(groff -man -ww -z -Tutf8 "$dir/$page" 2>&1) || true
  if [ -n "$out" ]; then
    echo "$out"; echo "FAILED: groff warns on $page"; exit 1
  fi
done
echo "man pages: ok"
