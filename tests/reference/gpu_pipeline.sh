#!/usr/bin/env bash
# The CUDA machine's pipeline (scripts/gpu/run.sh) rehearsed on CPU, so it cannot rot between the rare sessions that
# get a GPU: the direct g++ build from PyTorch's own paths (the fallback where Torch's CMake config fails), the
# build reuse, the whole run with tiny settings, its outputs within the device tool's 8-file limit, and its refusals
# of bad arguments. Needs a Python with torch (as tests/reference/run.sh); skipped without one.
# Last line: "gpu-pipeline: N passed, N failed" (", 1 skipped" when skipped).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" PYTHONDONTWRITEBYTECODE=1

. "$ROOT/tests/reference/torch_python.sh"
torch_python_or_skip gpu-pipeline
export PYTHON="$PY"

PASSED=0
FAILED=0
check() {  # check NAME CONDITION-EXIT-STATUS DETAIL
  if [ "$2" -eq 0 ]; then PASSED=$((PASSED + 1)); echo "ok   $1"; else FAILED=$((FAILED + 1)); echo "FAIL $1: $3"; fi
}
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
BUILD="$ROOT/native/build-cuda"

# 1. The direct build links a worker that answers, with the project's version.
scripts/gpu/build.sh "$BUILD" --mode direct >"$TMP/build1.txt" 2>&1
rc=$?
want="$(sed -n 's/^project(shira_worker VERSION \([0-9.]*\).*/\1/p' native/CMakeLists.txt)"
got="$("$BUILD/shira-worker" info 2>/dev/null | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["result"]["version"])' 2>/dev/null)"
check "direct build: worker built and answers info (version $want)" $([ $rc -eq 0 ] && [ "$got" = "$want" ]; echo $?) \
  "rc $rc, version '$got'; $(tail -3 "$TMP/build1.txt" | tr '\n' ' ')"

# 2. Same sources, script and PyTorch: the worker is reused, not rebuilt.
scripts/gpu/build.sh "$BUILD" --mode direct >"$TMP/build2.txt" 2>&1
grep -q 'reused' "$TMP/build2.txt"
check "build reuse on unchanged sources" $? "$(tail -1 "$TMP/build2.txt")"

# 3. The whole run with tiny settings on that worker: parity all passed, every training implementation timed.
OUT="$TMP/out" SHIRA_BUILD_MODE=direct scripts/gpu/run.sh --device cpu --quick --build >"$TMP/run.txt" 2>&1
rc=$?
check "run.sh --device cpu --quick --build exits 0" $rc "rc $rc; $(tail -3 "$TMP/run.txt" | tr '\n' ' ')"
"$PY" - "$TMP/out" >"$TMP/verdict.txt" 2>&1 <<'EOF'
import json, os, sys
out = sys.argv[1]
summary = json.load(open(os.path.join(out, "summary.json")))
rows = [json.loads(l) for l in open(os.path.join(out, "train.jsonl")) if l.strip()]
timed = {(r["impl"], r["method"], r.get("mask")) for r in rows if r.get("step_ms")}
need = {("ours", "shira", m) for m in ("struct", "rand", "wm", "grad", "snip")} | {("ours", "lora", None), ("pytorch", "full", None)}
problems = []
if summary["parity_failed"] or summary["parity_passed"] < 20:
    problems.append(f"parity {summary['parity_passed']} passed, {summary['parity_failed']} failed")
if need - timed:
    problems.append(f"untimed: {sorted(need - timed, key=str)}")
if any(r.get("precision") != "fp32" for r in rows if r.get("step_ms")):
    problems.append("a CPU row is not fp32")
print("; ".join(problems) or "ok")
sys.exit(1 if problems else 0)
EOF
check "summary: parity passed, every implementation timed at fp32" $? "$(cat "$TMP/verdict.txt" | tail -2)"
n=$(find "$TMP/out" -type f | wc -l)
logs="$(tar tzf "$TMP/out/logs.tgz" 2>/dev/null | tr '\n' ' ')"
rc=0
for f in build.log parity.log train.log; do
  case " $logs" in *" $f "*) ;; *) rc=1 ;; esac
done
check "outputs fit the device tool (≤ 8 files, logs in logs.tgz)" $([ $rc -eq 0 ] && [ "$n" -le 8 ]; echo $?) \
  "$n files: $(ls "$TMP/out" | tr '\n' ' '); logs.tgz: $logs"

# 4. Bad arguments are refused with a message naming the allowed values.
scripts/gpu/build.sh "$TMP/b" --mode fast >"$TMP/bad1.txt" 2>&1
rc=$?
grep -q 'must be auto, cmake or direct' "$TMP/bad1.txt"
check "build.sh --mode fast is refused" $([ $? -eq 0 ] && [ $rc -eq 2 ]; echo $?) "rc $rc: $(cat "$TMP/bad1.txt")"
"$PY" scripts/gpu/bench_train.py --device cpu --out "$TMP/b" --precision bf16 >"$TMP/bad2.txt" 2>&1
rc=$?
grep -q 'bf16 needs --device cuda' "$TMP/bad2.txt"
check "bench_train.py --precision bf16 on CPU is refused" $([ $? -eq 0 ] && [ $rc -ne 0 ]; echo $?) "rc $rc: $(tail -1 "$TMP/bad2.txt")"

echo "gpu-pipeline: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
