#!/usr/bin/env bash
# nefia benchmarks: builds nefia and nefia-bench, installs stunnel4 and nginx
# (stream module) from Debian packages when missing, and runs every
# measurement in alternating rounds. See BENCHMARKS.md.
#
#   bash bench/run.sh            # full run (about 10 minutes), results in bench/results/
#   bash bench/run.sh --smoke    # seconds: every nefia measurement once, no stunnel/nginx;
#                                # exits non-zero if any of them fails (CI)
#
# Any other arguments go to 'nefia-bench run' (e.g. --rounds 3 --duration 1s,
# --out DIR, --keep). Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
for a in "$@"; do
  [ "$a" = "--smoke" ] && smoke=true
done

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
bin="$(mktemp -d "${TMPDIR:-/tmp}/nefia-bench-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT

if ! $smoke; then
  need=()
  command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || need+=(stunnel4)
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing ${need[*]}"
      apt-get update -qq
      # Installing nginx must not start the distribution's own nginx on :80.
      DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "bench: ${need[*]} missing and cannot install them (not root, or no apt-get); comparisons will be reported as failures" >&2
    fi
  fi
fi

echo "== build"
go build -o "$bin/nefia" ./cmd/nefia
go build -o "$bin/nefia-bench" ./bench/cmd/nefia-bench

if $smoke; then
  echo "== crypto floor (go test -bench, smoke)"
  go test -run 'TestOps' -bench . -benchtime 20x ./bench/floor/
  "$bin/nefia-bench" run --nefia "$bin/nefia" --out "${TMPDIR:-/tmp}/nefia-bench-smoke" "$@"
else
  "$bin/nefia-bench" run --nefia "$bin/nefia" --out bench/results "$@"
fi
