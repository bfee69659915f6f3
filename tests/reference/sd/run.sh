#!/usr/bin/env bash
# Self-tests of the Stable Diffusion reference and its fixtures (tests/reference/sd/selftest.py), CPU only, no worker
# needed. Needs a Python with torch ($PYTHON, python3, or Debian's /usr/bin/python3: apt-get install python3-torch);
# without one it says so and exits 0 (skipped, not failed). Last line is always "sd-reference: N passed, N failed".
set -u
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
# One thread, whatever the caller set: several checks compare two runs bit for bit (the CLI against the in-process
# oracle), and torch's multithreaded reductions split work by thread count and timing (CI exports 2: they differed).
export OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1

. "$ROOT/tests/reference/torch_python.sh"
torch_python_or_skip sd-reference
"$PY" "$ROOT/tests/reference/sd/selftest.py" "$@"
rc=$?
# selftest.py prints the summary line itself; a crash before it gets one here.
if [ $rc -gt 1 ]; then echo "sd-reference: 0 passed, 1 failed"; fi
exit $rc
