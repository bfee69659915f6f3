#!/usr/bin/env bash
# The PyTorch reference checks (tests/reference/parity.py) on CPU, for CI. Needs a built worker
# (native/build/shira-worker, or $SHIRA_WORKER) and a Python with torch: $PYTHON, else python3, else Debian's
# /usr/bin/python3 (apt-get install python3-torch). Without torch it says so and exits 0 (skipped, not failed).
# Last line is always "reference: N passed, N failed" (", 1 skipped" when skipped).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONDONTWRITEBYTECODE=1

PY=""
for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import torch' >/dev/null 2>&1; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  echo "skipped: python3-torch not installed (apt-get install -y python3-torch)"
  echo "reference: 0 passed, 0 failed, 1 skipped"
  exit 0
fi
WORKER="${SHIRA_WORKER:-$ROOT/native/build/shira-worker}"
if [ ! -x "$WORKER" ]; then
  echo "no worker binary at $WORKER (build native/ first)"
  echo "reference: 0 passed, 1 failed"
  exit 1
fi
"$PY" "$ROOT/tests/reference/parity.py" --device cpu --worker "$WORKER" "$@"
rc=$?
# parity.py prints the summary line itself; a crash before it gets one here.
if [ $rc -gt 1 ]; then echo "reference: 0 passed, 1 failed"; fi
exit $rc
