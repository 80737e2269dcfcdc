package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/spf13/cobra"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/metrics"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/store/etcdstore"
	"github.com/nefia/nefia/tools"
)

func newMCPCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve MCP, or bridge a stdio client to a gateway",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newServeCmd(e, g), newConnectCmd(e, g))
	return cmd
}

func newServeCmd(e *env, g *globals) *cobra.Command {
	var (
		listen     string
		forceStdio bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the nefia MCP tools (stdio, or mutual TLS once enabled)",
		Long: `Serve the nefia MCP tools.

With mcp.mtls.enabled false (the default) MCP runs over stdin/stdout for a
local client that spawns nefia; stdout carries JSON-RPC only, logs go to
stderr. After 'nefia mtls init' it listens on mcp.mtls.listen_addr
(127.0.0.1:19821) for TLS 1.3 connections that present a client certificate
issued by nefia's CA, and serves newline-delimited JSON-RPC on each.

--stdio serves stdin/stdout even when mTLS is enabled: the local operator's
own MCP client on the gateway host, which may run beside the gateway.`,
		Example: `  nefia mcp serve
  nefia mcp serve --listen 127.0.0.1:0
  nefia mcp serve --stdio`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if forceStdio && listen != "" {
				return usage(errors.New("--stdio and --listen: give one (--listen is the mTLS listener's address)"))
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			loaded, err := config.Load(s.configPath)
			if err != nil {
				return err
			}
			cfg := loaded.Config
			if listen != "" {
				cfg.MCP.MTLS.ListenAddr = listen
				if err := cfg.Validate(); err != nil {
					return usage(fmt.Errorf("--listen: %w", err))
				}
			}
			deps := tools.Deps{Store: s.store, ConfigPath: s.configPath, ClientsDir: cfg.MCP.ClientsDir, Logger: s.log}
			trail, err := audit.Open(s.auditDir(), audit.Options{MaxSize: int64(cfg.Audit.MaxSizeMB) << 20, MaxFiles: cfg.Audit.MaxFiles, GatewayID: cfg.MCP.GatewayIDOrHost(), Logger: s.log})
			if err != nil {
				return fmt.Errorf("open the audit trail (nefia does not serve without one): %w", err)
			}
			defer trail.Close() // flushes batched records on a clean shutdown
			pol, err := loadPolicy(cfg)
			if err != nil {
				return err
			}
			s.log.Info("authorization policy", "source", pol.Source(), "rules", len(pol.Rules()))
			ups, err := newUpstreams(s, cfg)
			if err != nil {
				return err
			}
			defer ups.Close() // stops stdio upstreams when serving ends
			// Issue 12 item 7: SIGHUP and edits of nefia.yaml.
			rl := newReloader(s, loaded.Config, ups)
			if forceStdio || !cfg.MCP.MTLS.Enabled {
				why := "run 'nefia mtls init' to enable mTLS; --stdio serves stdio even then"
				if cfg.MCP.MTLS.Enabled {
					why = "--stdio: mTLS is enabled, its listener is not started"
				}
				return serveStdio(cmd.Context(), s, deps, pol, trail, e.stdin, e.stdout, ups.Register, rl, why)
			}
			return serveMTLS(cmd.Context(), s, deps, pol, trail, cfg, ups.Register, rl)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "override mcp.mtls.listen_addr (host:port)")
	cmd.Flags().BoolVar(&forceStdio, "stdio", false, "serve stdin/stdout for the local operator even when mTLS is enabled")
	return cmd
}

// serveStdio serves one MCP session over stdin/stdout for the local
// operator; it ends when stdin closes or on SIGINT/SIGTERM. why says in
// its log line why stdio is served (mTLS off, or --stdio).
func serveStdio(ctx context.Context, s *session, deps tools.Deps, pol *policy.Policy, trail *audit.Logger, in io.Reader, out io.Writer, register func(*mcpserver.MCPServer) error, rl *reloader, why string) error {
	authz := server.NewAuthorizer(pol)
	srv, err := server.NewMCPServerWithPolicy(deps, authz, s.log, trail, nil)
	if err != nil {
		return err
	}
	if err := register(srv); err != nil { // upstream MCP servers' tools
		return err
	}
	defer rl.start(ctx, authz.SetPolicy)()
	s.log.Info("serving MCP on stdio for the local operator ("+why+")", "state_dir", s.stateDir)
	agent := identity.LocalOperator(identity.TransportStdio)
	err = server.ServeStream(ctx, stdio{in, out}, srv, server.StreamOptions{
		ContextFunc: func(ctx context.Context) context.Context {
			return authz.Enforcing(identity.WithAgent(ctx, agent), s.log)
		},
		Logger: s.log,
	})
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// stdio joins stdin and stdout into the stream a session serves. Close is a
// no-op: the process owns its standard streams and exits right after.
type stdio struct {
	io.Reader
	io.Writer
}

func (stdio) Close() error { return nil }

// operatorReserve maps mcp.mtls.operator_reserve to the gateway's option,
// where zero means the default: a configured 0 keeps no reserve.
func operatorReserve(n int) int {
	if n == 0 {
		return server.NoOperatorReserve
	}
	return n
}

func serveMTLS(ctx context.Context, s *session, deps tools.Deps, pol *policy.Policy, trail *audit.Logger, cfg config.Config, register func(*mcpserver.MCPServer) error, rl *reloader) error {
	m := cfg.MCP.MTLS
	orDefault := func(path, name string) string {
		if path == "" {
			return s.store.Path(name)
		}
		return path
	}
	caFile, certFile := orDefault(m.CACertFile, pki.CACertFile), orDefault(m.CertFile, pki.ServerCertFile)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var revs revocationView = pki.NewRevocationChecker(s.store.Path(pki.RevokedFile))
	var etcdView *etcdstore.Watcher
	if es, ok := s.store.Records().(*etcdstore.Store); ok { // issue 15
		w, stop := startWatcher(ctx, s, es, m.Store.MaxStaleness)
		defer stop()
		revs, etcdView = w, w
	}
	var gw *server.Gateway
	var mx *metrics.Metrics
	var obs observe.Observer
	if addr := cfg.MCP.Metrics.ListenAddr; addr != "" {
		mx = gatewayMetrics(s, trail, revs, caFile, certFile, func(name string) bool { return gw.MCPServer().GetTool(name) != nil })
		obs = mx
	}
	gw, err := server.NewGateway(server.GatewayOptions{
		CACertFile:     caFile,
		CertFile:       certFile,
		KeyFile:        orDefault(m.KeyFile, pki.ServerKeyFile),
		Revocations:    revs,
		Observer:       obs,
		MaxConnections: m.MaxConnections,
		AllowedOrigins: m.AllowedOrigins,
		// mcp.mtls.* limits (issue 10); config has applied their defaults.
		MaxConnectionsPerClient: m.MaxConnectionsPerClient,
		OperatorReserve:         operatorReserve(m.OperatorReserve),
		IdleTimeout:             m.IdleTimeout,
		Tools:                   deps,
		Audit:                   trail,
		Policy:                  pol,
		Logger:                  s.log,
		Register:                register,
		ControlSocket:           filepath.Join(s.stateDir, server.ControlSocketFile),
	})
	if errors.Is(err, os.ErrNotExist) {
		return usage(fmt.Errorf("%w; run 'nefia mtls init' first (state dir %s)", err, filepath.Clean(s.stateDir)))
	}
	if err != nil {
		return err
	}
	if etcdView == nil {
		defer startCRLRefresh(ctx, s.store, s.log, crlRefreshInterval)() // issue 13 item 6
	} else {
		// A gateway holding the CA key signs the CRL from etcd after each
		// revocation (at most once a second); one without it says so once.
		_, stop := etcdstore.KeepCRL(ctx, etcdView, s.store, etcdstore.CRLTimings{Debounce: time.Second, Check: crlRefreshInterval}, s.log)
		defer stop()
	}
	expiryTick := time.NewTicker(expiryCheckInterval)
	defer expiryTick.Stop()
	watch := expiryWatch{store: s.store, caFile: caFile, certFile: certFile, clientWindow: m.ExpiryWarning, log: s.log}
	defer watch.start(ctx, expiryTick.C)() // issue 13 item 4: at start and daily
	defer rl.start(ctx, gw.SetPolicy)()
	if mx != nil {
		go serveMetrics(ctx, cancel, s, cfg.MCP.Metrics.ListenAddr, mx)
	}
	err = gw.ListenAndServe(ctx, m.ListenAddr)
	s.log.Info("gateway stopped")
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause // the metrics listener could not start
	}
	return err
}
