package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/bench/baseline"
	"github.com/nefia/nefia/bench/load"
	"github.com/nefia/nefia/bench/proc"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// The upstream phase (issue 12): what putting an MCP server behind nefia
// costs a call. The same Go MCP server (mcp-go, one echo tool) is called
// directly over a mutual-TLS raw stream, and through the nefia binary,
// which runs it as a stdio upstream (mcp.upstreams) and serves it as
// echo.echo over its own raw stream: TLS, policy, audit, the identity
// assertion and the stdio hop are the difference.
//
// The HTTP variant does the same over Streamable HTTP: the load clients
// call the echo server's own mutual-TLS HTTP endpoint directly, or nefia's
// /mcp, which forwards to a second echo server reached as a url upstream
// over HTTPS (server-authenticated TLS 1.3, ca_file).
const (
	phaseUpstream     = "upstream_echo"
	phaseUpstreamHTTP = "upstream_echo_http"
	nameEchoDirect    = "echo direct"
	nameEchoNefia     = "echo via nefia"
	echoUpstream      = "echo" // its tools appear as echo.<tool>
)

// echoArgs is the call's arguments: a short text, echoed back.
var echoArgs = []byte(`{"text":"hello through the gateway"}`)

func (s *suite) upstreamPhase(ctx context.Context) error {
	if err := s.upstreamStream(ctx); err != nil {
		return err
	}
	return s.upstreamHTTP(ctx)
}

// upstreamStream measures over the raw stream, the upstream on stdio.
func (s *suite) upstreamStream(ctx context.Context) error {
	var targets []*target
	defer func() { s.stopAll(targets...) }()
	direct, err := startSelf(ctx, s.o.self, nameEchoDirect, "serve-echo",
		"--cert", s.fx.path(pki.ServerCertFile), "--key", s.fx.path(pki.ServerKeyFile), "--ca", s.caFile)
	if err != nil {
		return err
	}
	targets = append(targets, direct)
	state, err := s.fx.copyState("upstream")
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(s.o.work, "nefia-upstream.yaml")
	if err := writeUpstreamConfig(s.fx.configPath, cfgPath, stdioEcho(s.o.self)); err != nil {
		return err
	}
	via, err := startNefia(ctx, s.o.nefia, nameEchoNefia, state, cfgPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	targets = append(targets, via)
	// The upstream process is part of the cost of serving through nefia.
	deadline := time.Now().Add(10 * time.Second)
	for len(via.extra) == 0 && time.Now().Before(deadline) {
		via.extra = proc.Children(via.pid())
		time.Sleep(10 * time.Millisecond)
	}
	if len(via.extra) == 0 {
		return errors.New("no upstream process under nefia")
	}
	tool := map[string]string{nameEchoDirect: "echo", nameEchoNefia: echoUpstream + ".echo"}
	for _, t := range targets {
		if err := s.checkEcho(ctx, t, tool[t.name]); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	s.alternate(ctx, phaseUpstream, targets, s.o.statusSess, s.upstreamWindow(), func(t *target, conc int) load.NewWorker {
		return load.ToolWorkers(ctx, t.addr, func(int) *tls.Config { return s.agentCfg }, tool[t.name], func(int, int64) []byte { return echoArgs })
	})
	return nil
}

// upstreamHTTP measures over Streamable HTTP, the upstream on HTTPS.
func (s *suite) upstreamHTTP(ctx context.Context) error {
	var targets []*target
	var up *target // nefia's upstream: measured with nefia, stopped last
	defer func() { s.stopAll(append(targets, up)...) }()
	direct, err := startSelf(ctx, s.o.self, nameEchoDirect, "serve-echo", "--http",
		"--cert", s.fx.path(pki.ServerCertFile), "--key", s.fx.path(pki.ServerKeyFile), "--ca", s.caFile)
	if err != nil {
		return err
	}
	targets = append(targets, direct)
	cfgPath := filepath.Join(s.o.work, "nefia-upstream-http.yaml")
	if up, err = s.startHTTPEcho(ctx, cfgPath); err != nil {
		return err
	}
	state, err := s.fx.copyState("upstream-http")
	if err != nil {
		return err
	}
	via, err := startNefia(ctx, s.o.nefia, nameEchoNefia, state, cfgPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	targets = append(targets, via)
	via.extra = []int{up.pid()} // the upstream is part of the cost of serving through nefia
	tool := map[string]string{nameEchoDirect: "echo", nameEchoNefia: echoUpstream + ".echo"}
	url := func(t *target) string { return "https://" + t.addr + server.MCPPath }
	cfgs, err := s.httpClientConfigs()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := s.checkEchoHTTP(ctx, url(t), tool[t.name], cfgs[0]); err != nil {
			return fmt.Errorf("%s (HTTP): %w", t.name, err)
		}
	}
	s.alternate(ctx, phaseUpstreamHTTP, targets, s.o.statusSess, s.upstreamWindow(), func(t *target, conc int) load.NewWorker {
		return load.HTTPToolWorkers(ctx, url(t), func(i int) *tls.Config { return cfgs[i%len(cfgs)] }, tool[t.name], func(int, int64) []byte { return echoArgs })
	})
	return nil
}

// upstreamWindow is the measured time per cell: --duration, but at least
// a second in a smoke run. A forwarded call at 50 sessions takes tens of
// milliseconds when other work shares the cores, so the smoke run's 250 ms
// window could end before any call of a stalled round did (a CI failure
// that says nothing about nefia).
func (s *suite) upstreamWindow() time.Duration {
	if s.o.smoke {
		return max(s.o.duration, time.Second)
	}
	return s.o.duration
}

// startHTTPEcho starts the echo server nefia reaches as a url upstream
// (HTTPS, server-authenticated) and writes cfgPath, a nefia.yaml with it
// as the upstream.
func (s *suite) startHTTPEcho(ctx context.Context, cfgPath string) (*target, error) {
	up, err := startSelf(ctx, s.o.self, "echo upstream (HTTP)", "serve-echo", "--http",
		"--cert", s.fx.path(pki.ServerCertFile), "--key", s.fx.path(pki.ServerKeyFile))
	if err != nil {
		return nil, err
	}
	entry := map[string]any{"name": echoUpstream, "url": "https://" + up.addr + server.MCPPath, "ca_file": s.caFile, "call_timeout": "30s"}
	if err := writeUpstreamConfig(s.fx.configPath, cfgPath, entry); err != nil {
		s.stopAll(up)
		return nil, err
	}
	return up, nil
}

// httpClientConfigs are the HTTP load clients' TLS configurations, one
// per fixture.httpAgents certificate; worker i uses i mod their number.
func (s *suite) httpClientConfigs() ([]*tls.Config, error) {
	cfgs := make([]*tls.Config, len(s.fx.httpAgents))
	for i, c := range s.fx.httpAgents {
		var err error
		if cfgs[i], err = load.ClientConfig(c, s.caFile); err != nil {
			return nil, err
		}
	}
	return cfgs, nil
}

// checkEcho proves one call of the echo tool comes back with its text.
func (s *suite) checkEcho(ctx context.Context, t *target, tool string) error {
	return checkEchoOn(load.OpenSession(ctx, t.addr, s.agentCfg))(tool)
}

// checkEchoHTTP is checkEcho over Streamable HTTP.
func (s *suite) checkEchoHTTP(ctx context.Context, url, tool string, cfg *tls.Config) error {
	return checkEchoOn(load.OpenHTTPSession(ctx, url, cfg))(tool)
}

// checkEchoOn returns the check of one echo call on a session just
// opened (or the error opening it), closing it afterwards.
func checkEchoOn[S load.Caller](sess S, err error) func(tool string) error {
	return func(tool string) error {
		if err != nil {
			return err
		}
		defer sess.Close()
		line, err := sess.CallTool(tool, echoArgs)
		if err != nil {
			return err
		}
		return checkEchoLine(line)
	}
}

func checkEchoLine(line []byte) error {
	sc, err := load.Check(line)
	if err != nil {
		return err
	}
	if sc["text"] != "hello through the gateway" {
		return fmt.Errorf("echo answered %s", line)
	}
	return nil
}

// stdioEcho is the mcp.upstreams entry of the echo server on stdio.
func stdioEcho(self string) map[string]any {
	return map[string]any{"name": echoUpstream, "command": []string{self, "serve-echo", "--stdio"}, "call_timeout": "30s"}
}

// writeUpstreamConfig writes to dst the benchmark's nefia.yaml (src) with
// entry (an echo server named echoUpstream) as its one upstream and a
// policy letting the load clients' certificates (agents) call it.
func writeUpstreamConfig(src, dst string, entry map[string]any) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	m, _ := doc["mcp"].(map[string]any)
	if m == nil {
		m = map[string]any{}
		doc["mcp"] = m
	}
	m["upstreams"] = []any{entry}
	m["policy"] = []any{
		map[string]any{"match": map[string]any{"role": "agent"}, "allow": []string{echoUpstream + ".*"}},
		map[string]any{"match": map[string]any{"role": "operator"}, "allow": []string{"*"}},
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o600)
}

// newEchoServer is the Go upstream: one tool, echo, returning its text as
// structured content and as text.
func newEchoServer() *mcpserver.MCPServer {
	srv := mcpserver.NewMCPServer("bench-echo", "1")
	srv.AddTool(mcp.NewTool("echo", mcp.WithDescription("Echo the text."), mcp.WithString("text", mcp.Required())),
		func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			text := req.GetString("text", "")
			return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
		})
	return srv
}

// serveEcho runs the echo server over stdio (--stdio: as nefia's upstream)
// or on a mutual-TLS listener (newline-delimited JSON-RPC per connection,
// the transport the load clients speak), to be called directly.
func serveEcho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve-echo", flag.ContinueOnError)
	stdio := fs.Bool("stdio", false, "serve one session on stdin/stdout")
	httpMode := fs.Bool("http", false, "serve Streamable HTTP at /mcp instead of the raw stream (client certificates required only with --ca)")
	addr := fs.String("listen", "127.0.0.1:0", "address")
	cert := fs.String("cert", "", "server certificate (PEM)")
	key := fs.String("key", "", "server key (PEM)")
	ca := fs.String("ca", "", "CA client certificates must chain to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv := newEchoServer()
	if *stdio {
		err := mcpserver.NewStdioServer(srv).Listen(ctx, os.Stdin, os.Stdout)
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	cfg, err := echoTLS(*cert, *key, *ca)
	if err != nil {
		return err
	}
	ln, err := listen(*addr, stdout)
	if err != nil {
		return err
	}
	if *httpMode {
		return serveEchoHTTP(ctx, ln, cfg, srv)
	}
	ln = tls.NewListener(ln, cfg)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = server.ServeStream(ctx, conn, srv, server.StreamOptions{})
		}()
	}
}

// echoTLS is the echo server's TLS: nefia's client-certificate check
// (baseline.Config) with a CA, server authentication only without (the
// HTTP upstream nefia reaches with ca_file).
func echoTLS(cert, key, ca string) (*tls.Config, error) {
	if ca != "" {
		return baseline.Config(cert, key, ca)
	}
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{kp}}, nil
}

// serveEchoHTTP serves srv over Streamable HTTP (mcp-go's server, HTTP/2
// or HTTP/1.1 over TLS) at /mcp on ln until ctx ends.
func serveEchoHTTP(ctx context.Context, ln net.Listener, cfg *tls.Config, srv *mcpserver.MCPServer) error {
	mux := http.NewServeMux()
	mux.Handle(server.MCPPath, mcpserver.NewStreamableHTTPServer(srv))
	hs := &http.Server{Handler: mux, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// reportUpstream renders the upstream phases: each target's figures, and
// per session count what nefia adds (p50 and p99, median over rounds of
// the per-round difference) and the throughput ratio via ÷ direct.
func reportUpstream(p func(string, ...any), r *results) {
	for _, ph := range []struct{ phase, title, what string }{
		{phaseUpstream, "raw stream",
			"%s = a Go MCP server (mcp-go, tool echo) on its own mutual-TLS raw stream; %s = the nefia binary running the same server as a stdio upstream (mcp.upstreams), called as echo.echo (policy, audit on, identity assertion). Server CPU includes the upstream process; the main process is nefia alone."},
		{phaseUpstreamHTTP, "Streamable HTTP",
			"%s = the same Go MCP server on its own mutual-TLS Streamable HTTP endpoint (mcp-go); %s = nefia's /mcp (mutual TLS) forwarding to a second such server as a url upstream over HTTPS, called as echo.echo (policy, audit on, identity assertion in _meta and headers). Server CPU includes the upstream process; the main process is nefia alone."},
	} {
		ts := r.targets(ph.phase)
		if len(ts) == 0 {
			continue
		}
		p("")
		p("## An upstream MCP server's echo tool, directly and through nefia (%s)", ph.title)
		p("")
		p(ph.what, nameEchoDirect, nameEchoNefia)
		p("")
		p("| sessions | server | calls/s | p50 ms | p99 ms | server CPU µs/call | of which the main process | errors |")
		p("|---:|---|---|---:|---:|---:|---:|---:|")
		for _, conc := range r.concs(ph.phase) {
			for _, t := range ts {
				g := r.group(ph.phase, t, conc)
				p("| %d | %s | %s | %.2f | %.2f | %.0f | %.0f | %d |", conc, t, spreadOf(g.rate), median(g.p50), median(g.p99), median(g.cpu), median(g.main), g.errors)
			}
		}
		p("")
		for _, conc := range r.concs(ph.phase) {
			p("- %d session(s): added latency (min / median / max over rounds) p50 %s ms, p99 %s ms; throughput via nefia ÷ direct %s", conc,
				r.difference(ph.phase, conc, nameEchoNefia, nameEchoDirect, func(c cell) float64 { return c.P50us / 1000 }),
				r.difference(ph.phase, conc, nameEchoNefia, nameEchoDirect, func(c cell) float64 { return c.P99us / 1000 }),
				r.ratio(ph.phase, conc, nameEchoNefia, nameEchoDirect, rateOf).ratio())
		}
	}
}

// difference is f(a) − f(b) per round, over rounds where both ran.
func (r *results) difference(phase string, conc int, a, b string, f func(cell) float64) spread {
	byRound := map[int]map[string]cell{}
	for _, c := range r.Cells {
		if c.Phase != phase || c.Conc != conc || c.Ops == 0 || (c.Target != a && c.Target != b) {
			continue
		}
		if byRound[c.Round] == nil {
			byRound[c.Round] = map[string]cell{}
		}
		byRound[c.Round][c.Target] = c
	}
	var xs []float64
	for _, m := range byRound {
		ca, okA := m[a]
		cb, okB := m[b]
		if okA && okB {
			xs = append(xs, f(ca)-f(cb))
		}
	}
	return spreadOf(xs)
}
