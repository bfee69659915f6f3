#!/usr/bin/env bash
# Here, before a `run` on the CUDA machine: that machine has PyTorch, CUDA and CMake but no nlohmann-json and no network,
# so the header travels with the working tree. Copies the installed nlohmann/ headers (Debian: nlohmann-json3-dev) into
# native/third_party/, which git ignores; name it in the run's carry:
#   run(command="scripts/gpu/run.sh", carry=["native/third_party"], timeout_s=540)
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="${1:-/usr/include}"
if [ ! -f "$SRC/nlohmann/json.hpp" ]; then
  echo "no $SRC/nlohmann/json.hpp: apt-get install -y nlohmann-json3-dev (or pass the folder holding nlohmann/)" >&2
  exit 1
fi
mkdir -p "$ROOT/native/third_party"
rm -rf "$ROOT/native/third_party/nlohmann"
cp -r "$SRC/nlohmann" "$ROOT/native/third_party/nlohmann"
echo "native/third_party/nlohmann ($(du -sh "$ROOT/native/third_party/nlohmann" | cut -f1)) ready to carry"
