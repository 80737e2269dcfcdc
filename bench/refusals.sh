#!/usr/bin/env bash
# Reconnection refusals at 50 clients against max_connections 50 (issue 16
# item 4), two nefia binaries side by side in alternated rounds:
#
#   bash bench/refusals.sh OLD_NEFIA NEW_NEFIA [ROUNDS] [DURATION]
#
# e.g. git worktree add /tmp/main main && (cd /tmp/main && go build -o /tmp/nefia-main ./cmd/nefia)
#      go build -o /tmp/nefia-new ./cmd/nefia && bash bench/refusals.sh /tmp/nefia-main /tmp/nefia-new
#
# Every client presents one agent certificate, so the per-client limit is
# set to 50 and the operator reserve to 0: the session cap is the limit
# under test. Each load client does handshake + ping + close in a loop; a
# refused connection is an error. Prints errors per 1,000 handshakes.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-3} dur=${4:-4s}
work="$(mktemp -d "${TMPDIR:-/tmp}/nefia-refusals.XXXXXX")"
trap 'rm -rf "$work"' EXIT
go build -o "$work/nefia-bench" ./bench/cmd/nefia-bench
export NEFIA_STATE_DIR="$work/state" NEFIA_CONFIG="$work/nefia.yaml"
"$new" mtls init --hosts 127.0.0.1,localhost >/dev/null
"$new" mtls issue-client --name load --role agent --duration 24h --out-dir "$work/certs" >/dev/null
sed -i '/max_connections\|operator_reserve/d' "$work/nefia.yaml"
sed -i 's/^  mtls:$/  mtls:\n    max_connections: 50\n    max_connections_per_client: 50\n    operator_reserve: 0/' "$work/nefia.yaml"
for r in $(seq "$rounds"); do
  for bin in "$old" "$new"; do
    port=$((20000 + RANDOM % 20000))
    "$bin" mcp serve --listen "127.0.0.1:$port" --log-format json >"$work/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    out=$("$work/nefia-bench" load --addr "127.0.0.1:$port" --ca "$work/state/mtls_ca.crt" \
      --cert "$work/certs/load.crt" --key "$work/certs/load.key" --workload handshake -c 50 --duration "$dur" 2>&1 | head -1 || true)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    ops=$(sed -n 's/.*: \([0-9]*\) ops.*/\1/p' <<<"$out"); errs=$(sed -n 's/.*, \([0-9]*\) errors.*/\1/p' <<<"$out")
    echo "round $r $bin: ${ops:-?} ok, ${errs:-?} refused ($(awk -v o="${ops:-0}" -v e="${errs:-0}" 'BEGIN{ if (o+e>0) printf "%.1f", 1000*e/(o+e); else print "?" }') per 1,000)"
  done
done
