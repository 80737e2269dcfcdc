# Convenience wrappers; every recipe is a plain command from the README.

# Run the gateway on the embedded defaults (stdio until `nefia mtls init`).
serve:
    go run ./cmd/nefia mcp serve

# The test suite, as CI runs it.
test:
    go test -race ./...

# What CI runs: formatting, vet, tests.
ci:
    bash .ci/run

# Gateway benchmarks (BENCHMARKS.md): nefia vs bare crypto/tls, stunnel and
# nginx, status calls, issuance, revocation, memory; about 10 minutes.
# Installs stunnel4 and nginx (stream module) with apt-get when missing.
bench *ARGS:
    bash bench/run.sh {{ARGS}}

# Seconds-long run of every gateway benchmark, as CI runs it (no stunnel/nginx).
bench-smoke:
    bash bench/run.sh --smoke

# Micro-benchmarks: revocation check, audit append, status calls over mTLS.
bench-micro:
    go test -run '^$' -bench . -benchmem ./pki/ ./audit/
    go test -run '^$' -bench StatusCall ./server/

build:
    go build -o nefia ./cmd/nefia

# Fuzz every target for a while each (default 20s; `just fuzz 2m` for longer).
# `go test -fuzz` takes one target per run; the seed corpora in each
# package's testdata/fuzz/ also run as ordinary tests under `just test`.
# Minimizing is capped at 10 runs per new input: the session target's
# coverage varies with goroutine scheduling, and the default (up to 60s per
# input) would spend a short run minimizing instead of fuzzing.
fuzz time="20s":
    go test -run '^$' -fuzz '^FuzzParseSerial$' -fuzztime {{time}} -fuzzminimizetime 10x ./pki/
    go test -run '^$' -fuzz '^FuzzRevocationStore$' -fuzztime {{time}} -fuzzminimizetime 10x ./pki/
    go test -run '^$' -fuzz '^FuzzIssueCSR$' -fuzztime {{time}} -fuzzminimizetime 10x ./pki/
    go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime {{time}} -fuzzminimizetime 10x ./config/
    go test -run '^$' -fuzz '^FuzzVerifyLine$' -fuzztime {{time}} -fuzzminimizetime 10x ./audit/
    go test -run '^$' -fuzz '^FuzzStreamSession$' -fuzztime {{time}} -fuzzminimizetime 10x ./server/
