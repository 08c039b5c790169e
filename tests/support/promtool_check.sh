#!/bin/sh
# Renders a sample registry with SAMPLE_BINARY into OUTPUT_FILE and lints it
# with `promtool check metrics`; fails on any problem, or without promtool.
#   promtool_check.sh SAMPLE_BINARY OUTPUT_FILE
set -u
sample=$1
out=$2
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool_check: FAIL: promtool not found; it comes with the Debian" \
       "package 'prometheus' (tools/bootstrap.sh installs it)" >&2
  exit 1
fi
# promtool must reject what is wrong, or a pass below would mean nothing.
if printf '# TYPE bad counter\nbad 1\n' | promtool check metrics >/dev/null 2>&1
then
  echo "promtool_check: FAIL: promtool accepted a counter without _total" >&2
  exit 1
fi
"$sample" "$out" || { echo "promtool_check: FAIL: $sample failed" >&2; exit 1; }
[ -s "$out" ] || { echo "promtool_check: FAIL: $out is empty" >&2; exit 1; }
if ! problems=$(promtool check metrics <"$out" 2>&1); then
  echo "promtool_check: FAIL: promtool check metrics reported:" >&2
  echo "$problems" >&2
  echo "--- $out:" >&2
  cat "$out" >&2
  exit 1
fi
echo "promtool_check: ok ($(grep -c '^# TYPE' "$out") families," \
     "$(grep -vc '^#' "$out") samples)"
