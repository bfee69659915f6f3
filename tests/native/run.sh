#!/usr/bin/env bash
# Configures (once) and builds native/ into native/build, then runs the native tests through ctest.
# Last line is always "native: N passed, N failed". Env: SHIRA_BUILD_JOBS (default 2), OMP_NUM_THREADS (default 1),
# SHIRA_BUILD_DIR (default native/build; a separate one keeps a second build from racing `npm start`'s).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${SHIRA_BUILD_DIR:-$ROOT/native/build}"
JOBS="${SHIRA_BUILD_JOBS:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT/native" -B "$BUILD" || { echo "native: 0 passed, 1 failed"; exit 1; }
fi
if ! cmake --build "$BUILD" -j "$JOBS"; then
  echo "native: 0 passed, 1 failed"
  exit 1
fi
LOG="$BUILD/ctest.log"
(cd "$BUILD" && ctest --output-on-failure -V) 2>&1 | tee "$LOG"
passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$LOG")
failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*|Failed|Not Run|Timeout)' "$LOG")
total=$(grep -oE 'tests failed out of [0-9]+' "$LOG" | grep -oE '[0-9]+$' || echo 0)
if [ "$((passed + failed))" -eq 0 ] && [ "$total" -eq 0 ]; then failed=1; fi
echo "native: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
