package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nefia/nefia/bench/load"
)

// loadCmd drives one workload against a server someone else started (under
// strace, perf or a debugger), and prints what it measured. Server CPU is
// not reported: the server is not ours to read.
func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server address host:port (loopback)")
	ca := fs.String("ca", "", "CA certificate (PEM) the server's certificate chains to")
	certFile := fs.String("cert", "", "client certificate (PEM)")
	keyFile := fs.String("key", "", "client key (PEM)")
	workload := fs.String("workload", "handshake", "handshake, resumed, status or issue")
	conc := fs.Int("c", 1, "concurrent clients or sessions")
	dur := fs.Duration("duration", 2*time.Second, "measured time")
	warm := fs.Duration("warmup", 200*time.Millisecond, "unmeasured warm-up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *ca == "" || *certFile == "" || *keyFile == "" {
		return errors.New("load: --addr, --ca, --cert and --key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	cfg, err := load.ClientConfig(cert, *ca)
	if err != nil {
		return err
	}
	var nw load.NewWorker
	same := func(int) *tls.Config { return cfg }
	switch *workload {
	case "handshake", "resumed":
		nw = load.HandshakeWorkers(ctx, *addr, cfg, *workload == "resumed")
	case "status":
		nw = load.ToolWorkers(ctx, *addr, same, toolStatus, nil)
	case "issue":
		stamp := time.Now().UnixNano()
		nw = load.ToolWorkers(ctx, *addr, same, toolIssue, func(i int, n int64) []byte {
			return fmt.Appendf(nil, `{"name":"load-%d-%d-%d","duration":"1h","out_dir":"load%d"}`, stamp, i, n, i)
		})
	default:
		return fmt.Errorf("load: unknown --workload %q", *workload)
	}
	res, err := load.Run(ctx, *conc, load.Window{Warmup: *warm, Duration: *dur}, nw)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s c=%d: %d ops in %v (%.0f/s), p50 %v, p99 %v, %d errors, %d resumed\n",
		*workload, *conc, res.Ops, res.Elapsed.Round(time.Millisecond), res.Rate(), res.Percentile(0.5), res.Percentile(0.99), res.Errors, res.Resumed)
	if res.Errors > 0 {
		return fmt.Errorf("load: %d operations failed; first: %s", res.Errors, res.FirstError)
	}
	return nil
}
