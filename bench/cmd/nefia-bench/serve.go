package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/bench/baseline"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/tools"
	"github.com/nefia/nefia/upstream"
)

// The serve-* subcommands are the servers the runner starts as child
// processes, so that each one's CPU time can be read from /proc like the
// real nefia binary's. Each prints "listening ADDR" on stdout once it
// accepts connections and stops on SIGTERM.

func listen(addr string, stdout io.Writer) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	return ln, nil
}

// serverFlags are the flags of a serve-* subcommand that listens with
// nefia's server certificate: the same four, with the same defaults and
// help, in each of them.
type serverFlags struct{ addr, cert, key, ca *string }

// addServerFlags defines --listen, --cert, --key and --ca on fs.
func addServerFlags(fs *flag.FlagSet) serverFlags {
	return serverFlags{
		addr: fs.String("listen", "127.0.0.1:0", "address"),
		cert: fs.String("cert", "", "server certificate (PEM)"),
		key:  fs.String("key", "", "server key (PEM)"),
		ca:   fs.String("ca", "", "CA client certificates must chain to"),
	}
}

// serveBaseline runs the ceiling: bare crypto/tls with nefia's certificates.
func serveBaseline(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve-baseline", flag.ContinueOnError)
	tf := addServerFlags(fs)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := baseline.Config(*tf.cert, *tf.key, *tf.ca)
	if err != nil {
		return err
	}
	stop, err := startProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	ln, err := listen(*tf.addr, stdout)
	if err != nil {
		return err
	}
	return baseline.ServeTLS(ctx, ln, cfg)
}

// serveBackend runs the plain-TCP ping answerer stunnel and nginx front.
func serveBackend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve-backend", flag.ContinueOnError)
	addr := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := listen(*addr, stdout)
	if err != nil {
		return err
	}
	return baseline.ServePlain(ctx, ln)
}

// serveGateway runs nefia's gateway in this process, wired as
// 'nefia mcp serve' wires it (cmd/nefia/mcp.go serveMTLS: same options, JSON
// logs at info on stderr), except that the audit trail can be turned off
// (GatewayOptions.Audit nil, which the real binary never does) and a CPU
// profile can be written.
func serveGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve-gateway", flag.ContinueOnError)
	addr := fs.String("listen", "127.0.0.1:0", "address")
	stateDir := fs.String("state-dir", "", "nefia state directory (after 'nefia mtls init')")
	configPath := fs.String("config", "", "nefia.yaml")
	auditOn := fs.Bool("audit", true, "keep the audit trail (false: GatewayOptions.Audit = nil)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stateDir == "" || *configPath == "" {
		return errors.New("serve-gateway: --state-dir and --config are required")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	loaded, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	cfg := loaded.Config
	store := pki.NewStore(*stateDir)
	deps := tools.Deps{Store: store, ConfigPath: *configPath, Logger: log}
	var trail *audit.Logger
	if *auditOn {
		if trail, err = audit.Open(filepath.Join(*stateDir, "audit"), audit.Options{MaxSize: int64(cfg.Audit.MaxSizeMB) << 20, Logger: log}); err != nil {
			return err
		}
		defer trail.Close()
	}
	pol, ups, err := gatewayUpstreams(cfg, store, log)
	if err != nil {
		return err
	}
	defer ups.Close()
	gw, err := server.NewGateway(server.GatewayOptions{
		Policy:         pol,
		Register:       ups.Register,
		CACertFile:     store.Path(pki.CACertFile),
		CertFile:       store.Path(pki.ServerCertFile),
		KeyFile:        store.Path(pki.ServerKeyFile),
		Revocations:    pki.NewRevocationChecker(store.Path(pki.RevokedFile)),
		MaxConnections: cfg.MCP.MTLS.MaxConnections,
		// The load clients share one certificate (see newFixture).
		MaxConnectionsPerClient: cfg.MCP.MTLS.MaxConnectionsPerClient,
		OperatorReserve:         server.NoOperatorReserve,
		Tools:                   deps,
		Audit:                   trail,
		Logger:                  log,
	})
	if err != nil {
		return err
	}
	stop, err := startProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	ln, err := listen(*addr, stdout)
	if err != nil {
		return err
	}
	return gw.Serve(ctx, ln)
}

// gatewayUpstreams builds what cmd/nefia builds from mcp.policy and
// mcp.upstreams (loadPolicy, newUpstreams), so that the forwarded-call
// workload can be profiled in serve-gateway as well.
func gatewayUpstreams(cfg config.Config, store *pki.Store, log *slog.Logger) (*policy.Policy, *upstream.Manager, error) {
	rules := make([]policy.Rule, len(cfg.MCP.Policy))
	for i, r := range cfg.MCP.Policy {
		rules[i] = policy.Rule{Role: pki.Role(r.Match.Role), Name: r.Match.Name, Allow: r.Allow}
	}
	pol, err := policy.New(rules)
	if err != nil {
		return nil, nil, fmt.Errorf("mcp.policy: %w", err)
	}
	opts := upstream.Options{Upstreams: cfg.MCP.Upstreams, Logger: log, ClientVersion: server.Version}
	if len(cfg.MCP.Upstreams) > 0 {
		if opts.Signer, err = upstream.LoadSigner(store); err != nil {
			return nil, nil, err
		}
	}
	return pol, upstream.New(opts), nil
}

// startProfile starts a CPU profile written to path ("" does nothing) and
// returns the function that stops it.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
