#!/usr/bin/env bash
# Issue 16 item 1: the CPU an idle gateway uses. Each binary is started as
# 'nefia mcp serve' on a fresh state directory ('nefia mtls init'), left
# alone for SECONDS, and its clock ticks (utime+stime, 1/100 s) in that
# time are printed; binaries alternate A B A B over ROUNDS.
#
#   bash bench/idle16.sh ROUNDS SECONDS BIN...    # e.g. 3 10 /tmp/base/nefia /tmp/head/nefia
set -euo pipefail
rounds="$1" secs="$2"
shift 2
tmp="$(mktemp -d "${TMPDIR:-/tmp}/nefia-idle16.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    d="$tmp/$r-$(basename "$bin")"
    mkdir -p "$d"
    export NEFIA_STATE_DIR="$d/state" NEFIA_CONFIG="$d/nefia.yaml"
    "$bin" mtls init >/dev/null 2>&1
    "$bin" mcp serve --listen 127.0.0.1:0 >"$d/log" 2>&1 </dev/null &
    pid=$!
    sleep 1 # started and listening
    a=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep "$secs"
    b=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "round $r $bin: $((b - a)) ticks in ${secs}s"
  done
done
