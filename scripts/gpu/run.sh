#!/usr/bin/env bash
# Issue 8 on a CUDA machine, one command (< 8 min on an H200): build the worker against the installed PyTorch's
# libtorch, the reference parity + PEFT round-trip checks on CUDA, the training benchmark (PEFT LoRA / PEFT SHiRA vs
# ours and full fine-tuning), whole-model switching at SD-1.5 scale, and a summary with the targets.
#
#   scripts/gpu/run.sh                     # CUDA: builds native/build-cuda, runs everything
#   scripts/gpu/run.sh --device cpu --quick   # the same pipeline on CPU with tiny settings (uses native/build)
#   scripts/gpu/run.sh --device cpu --quick --build   # … and builds native/build-cuda the CUDA machine's way first
#
# Output (JSON lines + logs + summary.md) goes to $OUT when set, else tests/artifacts/gpu-<UTC date>.
# Env: PYTHON (default python3), SHIRA_WORKER (skip the build, use this binary), JOBS (build jobs, default nproc),
# SHIRA_BUILD_MODE (auto|cmake|direct, scripts/gpu/build.sh's --mode).
# Needs: PyTorch (2.x with CUDA for --device cuda), PEFT >= 0.17 for the PEFT rows/checks (skipped without it),
# a C++17 compiler (C++20 for PyTorch >= 2.13), nlohmann-json headers (there: carried in native/third_party, see
# scripts/gpu/prepare.sh), and CMake with the CUDA toolkit for Torch's CMake config, else a direct g++ build.
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
DEVICE=cuda
QUICK=0
BUILD_HERE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --build) BUILD_HERE=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--quick] [--build]"; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1
OUT="${OUT:-$ROOT/tests/artifacts/gpu-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
T0=$(date +%s)
# The device tool brings back at most 8 files from $OUT: results stay loose (summary.md/json, parity.json,
# train.jsonl, switch.jsonl, env.json), the logs and build logs go into one logs.tgz, also when a stage fails.
bundle_logs() {
  cp "$ROOT"/native/build-cuda/build-*.log "$OUT/" 2>/dev/null
  (cd "$OUT" && ls *.log worker-info.json >/dev/null 2>&1 &&
    tar czf logs.tgz $(ls *.log worker-info.json 2>/dev/null) && rm -f *.log worker-info.json)
}
trap bundle_logs EXIT
stage() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s)"; }
STATUS=0

stage "environment"
"$PY" - "$OUT/env.json" "$DEVICE" <<'EOF' || { echo "PyTorch is not importable with $PY"; exit 1; }
import json, platform, subprocess, sys, datetime, torch
env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": sys.argv[2], "torch": torch.__version__,
       "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
       "cuda_available": torch.cuda.is_available()}
try:
    with open("/proc/cpuinfo") as f:
        env["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
except Exception:
    pass
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=f"{p.name} ({p.total_memory / 2**30:.0f} GiB)", cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        pass
try:
    import peft
    env["peft"] = peft.__version__
except Exception as e:
    env["peft_error"] = f"{type(e).__name__}: {e}"
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
if sys.argv[2].startswith("cuda") and not torch.cuda.is_available():
    sys.exit("CUDA requested but torch.cuda.is_available() is False")
EOF

stage "build"
if [ -n "${SHIRA_WORKER:-}" ]; then
  WORKER="$SHIRA_WORKER"
elif [ "$DEVICE" = cpu ] && [ $BUILD_HERE -eq 0 ]; then
  WORKER="$ROOT/native/build/shira-worker"
else
  # CMake with Torch's config, else a direct g++ build from PyTorch's own paths (scripts/gpu/build.sh says which).
  command -v nvcc >/dev/null || echo "note: no nvcc on PATH; Torch's CMake config may need the CUDA toolkit (CUDAToolkit_ROOT)"
  scripts/gpu/build.sh "$ROOT/native/build-cuda" --mode "${SHIRA_BUILD_MODE:-auto}" 2>&1 | tee "$OUT/build.log"
  WORKER="$ROOT/native/build-cuda/shira-worker"
  [ -x "$WORKER" ] || exit 1
fi
"$WORKER" --device "$DEVICE" info | tee "$OUT/worker-info.json"
if [ "$DEVICE" != cpu ] && ! grep -q '"cuda_available":true' "$OUT/worker-info.json"; then
  echo "the worker sees no CUDA device (libtorch_cuda not linked, or no GPU): stopping before the checks"
  exit 1
fi
"$PY" - "$OUT/env.json" "$OUT/worker-info.json" <<'EOF'
import json, sys
env, info = json.load(open(sys.argv[1])), json.loads(open(sys.argv[2]).read().splitlines()[-1])
env["worker_torch"] = info.get("result", {}).get("torch")
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

stage "parity + PEFT round trip"
timeout 240 "$PY" tests/reference/parity.py --device "$DEVICE" --worker "$WORKER" --json "$OUT/parity.json" 2>&1 | tee "$OUT/parity.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || STATUS=1

stage "switching (sd15)"
if [ $QUICK -eq 1 ]; then SW=(--quick --models builtin); else SW=(--models sd15); fi
timeout 200 "$PY" scripts/gpu/bench_switch.py --device "$DEVICE" --worker "$WORKER" --out "$OUT" "${SW[@]}" > "$OUT/switch.log" 2>&1 ||
  { STATUS=1; echo "switch bench failed: see $OUT/switch.log"; }
tail -3 "$OUT/switch.log" | cut -c1-300

stage "training benchmark"
if [ $QUICK -eq 1 ]; then TR=(--quick --batch 2 --warmup 1 --reps 2); else TR=(--batch 16 --warmup 5 --reps 30); fi
timeout 300 "$PY" scripts/gpu/bench_train.py --device "$DEVICE" --worker "$WORKER" --out "$OUT" "${TR[@]}" > "$OUT/train.log" 2>&1 ||
  { STATUS=1; echo "training bench failed: see $OUT/train.log"; }
tail -3 "$OUT/train.log" | cut -c1-300

stage "summary"
"$PY" scripts/gpu/summarize.py "$OUT"
echo
echo "output: $OUT ($(( $(date +%s) - T0 )) s)"
exit $STATUS
