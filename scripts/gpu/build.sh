#!/usr/bin/env bash
# Builds shira-worker against the libtorch inside a Python's PyTorch: the CUDA machine's way (no Debian packages and no
# network there). First CMake with Torch's own config; where that fails (on a pip wheel Torch's CMake config asks for
# CUDA toolkit pieces, nvtx3 or cuDNN, that a machine may lack) the sources are compiled directly with the include and
# library paths PyTorch reports (torch.utils.cpp_extension), which needs nothing but g++.
#
#   scripts/gpu/build.sh BUILD_DIR [--mode auto|cmake|direct]
#
# Env: PYTHON (default python3), JOBS (default nproc), SHIRA_CXX_STD (17 or 20; default: what the PyTorch needs),
# SHIRA_JSON_INCLUDE (a folder holding nlohmann/json.hpp; else
# native/third_party/ from scripts/gpu/prepare.sh, else the system's). Logs: BUILD_DIR/build-{cmake,direct}.log.
# Last line: "built BUILD_DIR/shira-worker (cmake|direct, torch X, cuda yes|no, c++NN)", else "build failed: …", exit 1.
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${1:?usage: $0 BUILD_DIR [--mode auto|cmake|direct]}"
shift
MODE=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE="$2"; shift 2 ;;
    *) echo "usage: $0 BUILD_DIR [--mode auto|cmake|direct]"; exit 2 ;;
  esac
done
case "$MODE" in auto | cmake | direct) ;; *) echo "build failed: --mode must be auto, cmake or direct (got '$MODE')"; exit 2 ;; esac
PY="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$BUILD"
BUILD="$(cd "$BUILD" && pwd)"

# What this PyTorch is and where its headers and libraries are, as shell assignments. cpp_extension's include_paths
# took `cuda: bool` up to 2.x and `device_type: str` after; CUDA headers are needed only for the allocator's peak
# statistics (core/memory.cpp), so a libtorch with CUDA but no toolkit headers still builds, without them.
QUERY="$("$PY" - <<'EOF'
import shlex, torch
from torch.utils import cpp_extension as ce

def inc(cuda):
    try:
        return ce.include_paths(device_type="cuda" if cuda else "cpu")
    except TypeError:
        return ce.include_paths(cuda=cuda)

cuda = torch.version.cuda is not None
headers, note = cuda, ""
try:
    includes = inc(cuda)
except Exception as e:  # no CUDA_HOME: still a CUDA worker, but without the allocator's peak statistics
    includes, headers = inc(False), False
    note = f"no CUDA headers ({type(e).__name__}: {e}): peak memory rows fall back to the process RSS"
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
out = {
    "TORCH_VERSION": torch.__version__,
    "TORCH_PREFIX": torch.utils.cmake_prefix_path,
    "TORCH_INCLUDES": " ".join(includes),
    "TORCH_LIBDIRS": " ".join(ce.library_paths()),
    "TORCH_ABI": str(int(torch._C._GLIBCXX_USE_CXX11_ABI)),
    "TORCH_CUDA": "yes" if cuda else "no",
    "CUDA_HEADERS": "yes" if headers else "no",
    "TORCH_GPU": "yes" if cuda and torch.cuda.is_available() else "no",
    "TORCH_NOTE": note,
    # PyTorch 2.13 made C++20 a requirement of its headers; earlier ones are C++17.
    "CXX_STD": "20" if (major, minor) >= (2, 13) else "17",
}
for k, v in out.items():
    print(f"{k}={shlex.quote(v)}")
EOF
)" || { echo "build failed: $PY cannot import torch"; exit 1; }
eval "$QUERY"
CXX_STD="${SHIRA_CXX_STD:-$CXX_STD}"
[ -n "$TORCH_NOTE" ] && echo "note: $TORCH_NOTE"

JSON_DIR=""
for d in "${SHIRA_JSON_INCLUDE:-}" "$ROOT/native/third_party" /usr/include /usr/local/include; do
  if [ -n "$d" ] && [ -f "$d/nlohmann/json.hpp" ]; then JSON_DIR="$d"; break; fi
done
if [ -z "$JSON_DIR" ]; then
  echo "build failed: nlohmann/json.hpp not found (SHIRA_JSON_INCLUDE, native/third_party, /usr/include);" \
       "run scripts/gpu/prepare.sh where the header is installed and carry native/third_party"
  exit 1
fi
VERSION="$(sed -n 's/^project(shira_worker VERSION \([0-9.]*\).*/\1/p' "$ROOT/native/CMakeLists.txt")"

# Where PyTorch sees a GPU the worker must too; a build that links libtorch without its CUDA half does not.
sees_gpu() {
  [ "$TORCH_GPU" = no ] || "$BUILD/shira-worker" info 2>/dev/null | grep -q '"cuda_available":true'
}

build_cmake() {
  command -v cmake >/dev/null || { echo "no cmake on PATH" >"$BUILD/build-cmake.log"; return 1; }
  local json_arg=()
  # A system nlohmann_json package is found by CMake itself; a bare header folder is handed over.
  [ "$JSON_DIR" = /usr/include ] || json_arg=(-DSHIRA_JSON_INCLUDE="$JSON_DIR")
  { timeout 120 cmake -S "$ROOT/native" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
      -DCMAKE_CXX_STANDARD="$CXX_STD" "${json_arg[@]}" &&
    timeout 300 cmake --build "$BUILD/cmake" -j "$JOBS" --target shira-worker &&
    cp "$BUILD/cmake/shira-worker" "$BUILD/shira-worker"; } >"$BUILD/build-cmake.log" 2>&1
}

build_direct() {
  local defs=(-DSHIRA_WORKER_VERSION="\"$VERSION\"" -D_GLIBCXX_USE_CXX11_ABI="$TORCH_ABI" -DNDEBUG)
  local libs=()
  local dir
  [ "$CUDA_HEADERS" = yes ] && defs+=(-DSHIRA_HAS_CUDA=1)
  local incs=(-I"$ROOT/native/src")
  # The compiler's own folders stay out of -isystem: naming /usr/include again breaks libstdc++'s #include_next.
  for dir in "$JSON_DIR" $TORCH_INCLUDES; do
    case "$dir" in /usr/include | /usr/local/include) ;; *) incs+=(-isystem "$dir") ;; esac
  done
  for dir in $TORCH_LIBDIRS; do libs+=(-L"$dir" -Wl,-rpath,"$dir"); done
  # torch_cuda registers the CUDA backend from static initialisers; nothing references it by name, so
  # --as-needed would drop it and the worker would see no GPU.
  [ "$TORCH_CUDA" = yes ] && libs+=(-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed)
  # libtorch's own dependencies (CUDA runtime, cuDNN, …) are found at run time through its RUNPATH; the linker
  # need not resolve them now.
  libs+=(-ltorch -ltorch_cpu -lc10 -lpthread -Wl,--allow-shlib-undefined)
  # Every source under native/src (one folder per concern), each object named by its path so that two
  # folders may hold files of the same name; objects of an earlier source layout must not be linked in.
  rm -rf "$BUILD/obj"
  mkdir -p "$BUILD/obj"
  {
    echo "g++ -std=c++$CXX_STD -O2 ${defs[*]} ${incs[*]}"
    local pids=() src obj rc=0 running=0
    for src in $(cd "$ROOT/native/src" && find . -name '*.cpp' | sort); do
      obj="$BUILD/obj/$(echo "${src#./}" | tr / _ | sed 's/\.cpp$//').o"
      src="$ROOT/native/src/${src#./}"
      timeout 300 g++ -std=c++"$CXX_STD" -O2 -g0 -fdiagnostics-color=never "${defs[@]}" "${incs[@]}" -c "$src" -o "$obj" &
      pids+=($!)
      running=$((running + 1))
      if [ "$running" -ge "$JOBS" ]; then wait -n || rc=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || rc=1; running=$((running - 1)); done
    [ $rc -eq 0 ] || { echo "compile failed"; return 1; }
    g++ -o "$BUILD/shira-worker" "$BUILD"/obj/*.o "${libs[@]}"
  } >"$BUILD/build-direct.log" 2>&1
}

# A second run on a still-warm machine (its ignored build folders survive between calls) reuses a worker built
# from the same sources, build script and PyTorch; anything changed rebuilds.
STAMP="$( (cd "$ROOT/native/src" && find . -type f | sort && find . -type f | sort | xargs cat; cat "$ROOT/native/CMakeLists.txt" "$0"
  echo "$TORCH_VERSION $CXX_STD $MODE") | sha256sum | cut -c1-16)"
if [ -x "$BUILD/shira-worker" ] && [ "$(cat "$BUILD/stamp" 2>/dev/null)" = "$STAMP" ] && sees_gpu; then
  echo "built $BUILD/shira-worker (reused: same sources, torch $TORCH_VERSION, cuda $TORCH_CUDA, c++$CXX_STD)"
  exit 0
fi
HOW=""
rm -f "$BUILD/shira-worker" "$BUILD/stamp"
if [ "$MODE" != direct ]; then
  if build_cmake && sees_gpu; then HOW=cmake; elif [ -x "$BUILD/shira-worker" ]; then
    echo "the CMake-built worker sees no GPU where PyTorch does (torch_cuda not linked); building directly"
    rm -f "$BUILD/shira-worker"
  else
    echo "cmake build failed (last lines of $BUILD/build-cmake.log):"
    grep -m 8 -iE 'error|could not|failed' "$BUILD/build-cmake.log" | cut -c1-240
  fi
fi
if [ -z "$HOW" ] && [ "$MODE" != cmake ]; then
  if build_direct && sees_gpu; then HOW=direct; elif [ -x "$BUILD/shira-worker" ]; then
    echo "the directly built worker sees no GPU where PyTorch does"
  else
    echo "direct build failed (first errors of $BUILD/build-direct.log):"
    grep -m 12 -E 'error|undefined reference' "$BUILD/build-direct.log" | cut -c1-300
  fi
fi
if [ -z "$HOW" ]; then
  echo "build failed: see $BUILD/build-*.log"
  exit 1
fi
echo "$STAMP" >"$BUILD/stamp"
echo "built $BUILD/shira-worker ($HOW, torch $TORCH_VERSION, cuda $TORCH_CUDA, c++$CXX_STD)"
