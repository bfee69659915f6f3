#!/usr/bin/env bash
# The native sources' format (native/.clang-format) on every C++ file under native/src and tests/native.
#
#   scripts/format-native.sh           check: lists the files clang-format would change (npm test runs this)
#   scripts/format-native.sh --fix     rewrites them in place (npm run format:native)
#
# The files were formatted with clang-format 14 (Debian 12's); other major versions break some lines differently,
# so the check skips, saying so, unless clang-format 14 is found (as clang-format-14, or as clang-format; or
# $CLANG_FORMAT). Last line: "format: N passed, N failed" (", 1 skipped" when skipped): one check over all files.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODE=check
case "${1:-}" in
  "") ;;
  --fix) MODE=fix ;;
  *) echo "usage: $0 [--fix]"; exit 2 ;;
esac
WANT=14

skip() {
  echo "format: skipped ($1)"
  echo "format: 0 passed, 0 failed, 1 skipped"
  exit 0
}
CF=""
for c in "${CLANG_FORMAT:-}" clang-format-$WANT clang-format; do
  if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then CF="$c"; break; fi
done
[ -n "$CF" ] || skip "clang-format not found: apt-get install clang-format"
major="$("$CF" --version | sed -n 's/.*clang-format version \([0-9]*\).*/\1/p')"
[ "$major" = "$WANT" ] || skip "$CF is version ${major:-unknown}; the sources follow clang-format $WANT"

cd "$ROOT"
mapfile -t files < <(find native/src tests/native -type f \( -name '*.cpp' -o -name '*.h' \) | sort)
if [ "$MODE" = fix ]; then
  "$CF" -i --style="file:$ROOT/native/.clang-format" "${files[@]}"
  echo "format: ${#files[@]} files formatted with $CF (version $major)"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! "$CF" --style="file:$ROOT/native/.clang-format" --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad=$((bad + 1))
    echo "not formatted: $f"
  fi
done
if [ "$bad" -eq 0 ]; then
  echo "all ${#files[@]} files formatted ($CF, version $major)"
  echo "format: 1 passed, 0 failed"
  exit 0
fi
echo "$bad of ${#files[@]} files not formatted: run scripts/format-native.sh --fix (npm run format:native)"
echo "format: 0 passed, 1 failed"
exit 1
