#!/usr/bin/env bash
# clang-format over every C++ file the repository tracks (or would track).
#   tools/format.sh --check   report files that differ, exit 1 if any
#   tools/format.sh --fix     rewrite them in place
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:---check}
mapfile -t files < <(git ls-files --cached --others --exclude-standard \
                       -- '*.cpp' '*.hpp' 2>/dev/null \
                     || find config persistence runtime actors cluster tools tests bench \
                          -name '*.cpp' -o -name '*.hpp')
[ ${#files[@]} -eq 0 ] && { echo "format: no files"; exit 0; }
case "$mode" in
  --fix) clang-format -i "${files[@]}" ;;
  --check)
    bad=()
    for f in "${files[@]}"; do
      [ -f "$f" ] || continue
      clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
    done
    if [ ${#bad[@]} -gt 0 ]; then
      echo "format: these files need 'make format':"
      printf '  %s\n' "${bad[@]}"
      exit 1
    fi
    echo "format: ok (${#files[@]} files)"
    ;;
  *) echo "usage: $0 --check|--fix" >&2; exit 2 ;;
esac
