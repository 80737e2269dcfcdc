package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
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
const (
	phaseUpstream  = "upstream_echo"
	nameEchoDirect = "echo direct"
	nameEchoNefia  = "echo via nefia"
	echoUpstream   = "echo" // its tools appear as echo.<tool>
)

// echoArgs is the call's arguments: a short text, echoed back.
var echoArgs = []byte(`{"text":"hello through the gateway"}`)

func (s *suite) upstreamPhase(ctx context.Context) error {
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
	if err := writeUpstreamConfig(s.fx.configPath, cfgPath, s.o.self); err != nil {
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
	s.alternate(ctx, phaseUpstream, targets, s.o.statusSess, s.o.duration, func(t *target, conc int) load.NewWorker {
		return load.ToolWorkers(ctx, t.addr, func(int) *tls.Config { return s.agentCfg }, tool[t.name], func(int, int64) []byte { return echoArgs })
	})
	return nil
}

// checkEcho proves one call of the echo tool comes back with its text.
func (s *suite) checkEcho(ctx context.Context, t *target, tool string) error {
	sess, err := load.OpenSession(ctx, t.addr, s.agentCfg)
	if err != nil {
		return err
	}
	defer sess.Close()
	line, err := sess.CallTool(tool, echoArgs)
	if err != nil {
		return err
	}
	sc, err := load.Check(line)
	if err != nil {
		return err
	}
	if sc["text"] != "hello through the gateway" {
		return fmt.Errorf("echo answered %s", line)
	}
	return nil
}

// writeUpstreamConfig writes to dst the benchmark's nefia.yaml (src) with
// the echo server as a stdio upstream and a policy letting the load
// clients' certificate (bench-agent) call it.
func writeUpstreamConfig(src, dst, self string) error {
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
	m["upstreams"] = []any{map[string]any{"name": echoUpstream, "command": []string{self, "serve-echo", "--stdio"}, "call_timeout": "30s"}}
	m["policy"] = []any{
		map[string]any{"match": map[string]any{"name": "bench-agent"}, "allow": []string{echoUpstream + ".*"}},
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
	cfg, err := baseline.Config(*cert, *key, *ca)
	if err != nil {
		return err
	}
	ln, err := listen(*addr, stdout)
	if err != nil {
		return err
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

// reportUpstream renders the upstream phase: each target's figures, and
// per session count what nefia adds (p50 and p99, median over rounds of
// the per-round difference) and the throughput ratio via ÷ direct.
func reportUpstream(p func(string, ...any), r *results) {
	ts := r.targets(phaseUpstream)
	if len(ts) == 0 {
		return
	}
	p("")
	p("## An upstream MCP server's echo tool, directly and through nefia (raw stream)")
	p("")
	p("%s = a Go MCP server (mcp-go, tool echo) on its own mutual-TLS raw stream; %s = the nefia binary running the same server as a stdio upstream (mcp.upstreams), called as echo.echo (policy, audit on, identity assertion signed per call). Server CPU includes the upstream process.", nameEchoDirect, nameEchoNefia)
	p("")
	p("| sessions | server | calls/s | p50 ms | p99 ms | server CPU µs/call | errors |")
	p("|---:|---|---|---:|---:|---:|---:|")
	for _, conc := range r.concs(phaseUpstream) {
		for _, t := range ts {
			g := r.group(phaseUpstream, t, conc)
			p("| %d | %s | %s | %.2f | %.2f | %.0f | %d |", conc, t, spreadOf(g.rate), median(g.p50), median(g.p99), median(g.cpu), g.errors)
		}
	}
	p("")
	for _, conc := range r.concs(phaseUpstream) {
		p("- %d session(s): added latency (min / median / max over rounds) p50 %s ms, p99 %s ms; throughput via nefia ÷ direct %s", conc,
			r.difference(phaseUpstream, conc, nameEchoNefia, nameEchoDirect, func(c cell) float64 { return c.P50us / 1000 }),
			r.difference(phaseUpstream, conc, nameEchoNefia, nameEchoDirect, func(c cell) float64 { return c.P99us / 1000 }),
			r.ratio(phaseUpstream, conc, nameEchoNefia, nameEchoDirect, rateOf).ratio())
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
