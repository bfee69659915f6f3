# Sourced by the reference runners: sets PY to the first Python that imports torch ($PYTHON, python3, Debian's
# /usr/bin/python3), else prints why the runner is skipped, its "LABEL: 0 passed, 0 failed, 1 skipped" line, and
# exits 0 (skipped, not failed).   Usage: . torch_python.sh; torch_python_or_skip LABEL
torch_python_or_skip() {
  PY=""
  local candidate
  for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import torch' >/dev/null 2>&1; then PY="$candidate"; return 0; fi
  done
  echo "skipped: python3-torch not installed (apt-get install -y python3-torch)"
  echo "$1: 0 passed, 0 failed, 1 skipped"
  exit 0
}
