// Command nefia-bench measures the nefia gateway: handshakes against a bare
// crypto/tls server, stunnel and nginx; tool calls with the audit trail on
// and off; issuance; revocation; memory and start-up time. See BENCHMARKS.md
// for what it reports and bench/run.sh for how it is run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nefia-bench:", err)
		os.Exit(1)
	}
}
