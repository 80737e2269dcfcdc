// Command nefia is an MCP gateway that admits AI agents by mutual TLS and
// exposes its own certificate management as MCP tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	setGCPercent()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nefia: "+errorLine(err))
		os.Exit(exitCode(err))
	}
}
