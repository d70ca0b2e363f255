#!/bin/sh
# The programs and libdash load on machines without the CUDA libraries:
# only the plugin (lib/dash/libdash_cuda.so) may need them.
# Usage: no_cuda_link.sh FILE...
set -eu
status=0
for f in "$@"; do
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  bad=$(printf '%s\n' "$needed" | grep -E '^lib(cuda|cudart|cublas|cublasLt|cusolver|nvrtc)\b' || true)
  if [ -n "$bad" ]; then
    echo "FAIL: $f needs $(echo $bad)"
    status=1
  else
    echo "ok: $(basename "$f") needs no CUDA library"
  fi
done
exit $status
