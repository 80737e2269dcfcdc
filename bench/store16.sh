#!/usr/bin/env bash
# Issue 16 (issuance, revocation at 100,000 serials): the same Go
# benchmarks (pki/store_bench_test.go, public API only) run against a base
# commit and the working tree, alternated A B A B, with the ratios of the
# medians printed at the end. The machine may be shared: only the ratios
# of alternated runs mean anything.
#
#   bash bench/store16.sh [BASE] [ROUNDS]     # default: 667ec35, 3 rounds
#   BENCH=BenchmarkRevokeCLIToRefusal bash bench/store16.sh   # one benchmark
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-667ec35}"
rounds="${2:-3}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/nefia-store16.XXXXXX")"
trap 'git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add --detach "$tmp/base" "$base" >/dev/null 2>&1
cp pki/store_bench_test.go "$tmp/base/pki/"
(cd "$tmp/base" && go test -c -o "$tmp/base.test" ./pki && go build -o "$tmp/base.nefia" ./cmd/nefia)
go test -c -o "$tmp/head.test" ./pki
go build -o "$tmp/head.nefia" ./cmd/nefia
bench="${BENCH:-BenchmarkIssueConcurrent|BenchmarkRevokeToRefusal|BenchmarkRevokeCLIToRefusal}"
for r in $(seq "$rounds"); do
  for side in base head; do
    echo "## round $r $side" >&2
    (cd "$tmp" && NEFIA_BIN="$tmp/$side.nefia" "./$side.test" -test.run '^$' -test.bench "$bench" -test.benchtime 3s 2>/dev/null) |
      awk -v side="$side" '/^Benchmark/ { for (i = 3; i < NF; i += 2) if ($(i+1) != "ns/op") print side, $1, $(i+1), $i }'
  done
done | tee "$tmp/all" >&2
echo
echo "| benchmark | metric | base (median) | head (median) | head/base |"
echo "|---|---|---|---|---|"
awk '{ k = $2 " " $3; v[$1, k] = v[$1, k] " " $4; keys[k] = 1 }
  function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((n + 1) / 2)] }
  END { for (k in keys) { split(k, p, " "); b = med(v["base", k]); h = med(v["head", k]); printf "| %s | %s | %s | %s | %.2fx |\n", p[1], p[2], b, h, (b > 0 ? h / b : 0) } }' "$tmp/all" | sort
