#!/usr/bin/env bash
# The PyTorch reference checks (tests/reference/parity.py) on CPU, for CI. Needs a built worker
# (native/build/shira-worker, or $SHIRA_WORKER) and a Python with torch: $PYTHON, else python3, else Debian's
# /usr/bin/python3 (apt-get install python3-torch). Without torch it says so and exits 0 (skipped, not failed).
# Last line is always "reference: N passed, N failed" (", 1 skipped" when skipped).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONDONTWRITEBYTECODE=1

. "$ROOT/tests/reference/torch_python.sh"
torch_python_or_skip reference
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
