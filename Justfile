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

# Revocation-check benchmark.
bench:
    go test -run '^$' -bench . -benchmem ./pki/

build:
    go build -o nefia ./cmd/nefia
