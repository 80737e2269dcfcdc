package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goccy/go-yaml"

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
	nameEchoBaseline  = "echo via nefia (baseline)"
	nameEchoProxy     = "echo via a bare Go reverse proxy"
)

// echoViaName is the target name of nefia serving the stdio echo upstream
// served as how (serve-echo --stdio-server).
func echoViaName(how string) string {
	if how == stdioStream {
		return nameEchoNefia
	}
	return nameEchoNefia + " (upstream on " + how + ")"
}

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
	direct, err := startSelf(ctx, s.o.self, nameEchoDirect, s.serverArgs(s.caFile, "serve-echo")...)
	if err != nil {
		return err
	}
	targets = append(targets, direct)
	tool := map[string]string{nameEchoDirect: "echo"}
	// One nefia per way of serving the upstream (--echo-stdio), then the
	// --baseline binary with the first: each runs its own upstream process.
	type via struct{ name, bin, how string }
	var vias []via
	for _, how := range s.o.echoStdios {
		vias = append(vias, via{echoViaName(how), s.o.nefia, how})
	}
	if s.o.baseline != "" {
		vias = append(vias, via{nameEchoBaseline, s.o.baseline, s.o.echoStdios[0]})
	}
	for i, v := range vias {
		state, err := s.fx.copyState(fmt.Sprintf("upstream-%d", i))
		if err != nil {
			return err
		}
		cfgPath := filepath.Join(s.o.work, fmt.Sprintf("nefia-upstream-%d.yaml", i))
		if err := writeUpstreamConfig(s.fx.configPath, cfgPath, stdioEcho(s.o.self, "--stdio-server", v.how)); err != nil {
			return err
		}
		t, err := startNefia(ctx, v.bin, v.name, state, cfgPath, "127.0.0.1:0")
		if err != nil {
			return err
		}
		targets = append(targets, t)
		// The upstream process is part of the cost of serving through nefia.
		deadline := time.Now().Add(10 * time.Second)
		for len(t.extra) == 0 && time.Now().Before(deadline) {
			t.extra = proc.Children(t.pid())
			time.Sleep(10 * time.Millisecond)
		}
		if len(t.extra) == 0 {
			return fmt.Errorf("%s: no upstream process under nefia", v.name)
		}
		tool[v.name] = echoUpstream + ".echo"
	}
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
	direct, err := startSelf(ctx, s.o.self, nameEchoDirect, s.serverArgs(s.caFile, "serve-echo", "--http")...)
	if err != nil {
		return err
	}
	targets = append(targets, direct)
	cfgPath := filepath.Join(s.o.work, "nefia-upstream-http.yaml")
	if up, err = s.startHTTPEcho(ctx, cfgPath); err != nil {
		return err
	}
	tool := map[string]string{nameEchoDirect: "echo"}
	// startVia starts a nefia binary with up as its upstream, whose process
	// is part of the cost of serving through nefia.
	startVia := func(bin, name, stateName string) error {
		state, err := s.fx.copyState(stateName)
		if err != nil {
			return err
		}
		t, err := startNefia(ctx, bin, name, state, cfgPath, "127.0.0.1:0")
		if err != nil {
			return err
		}
		targets = append(targets, t)
		t.extra = []int{up.pid()}
		tool[name] = echoUpstream + ".echo"
		return nil
	}
	if err := startVia(s.o.nefia, nameEchoNefia, "upstream-http"); err != nil {
		return err
	}
	// The floor of any net/http gateway: a bare reverse proxy to the same
	// upstream (serve-proxy), alternated with nefia like the rest.
	proxy, err := startSelf(ctx, s.o.self, nameEchoProxy, s.serverArgs(s.caFile,
		"serve-proxy", "--to", "https://"+up.addr+server.MCPPath, "--upstream-ca", s.caFile)...)
	if err != nil {
		return err
	}
	targets = append(targets, proxy)
	proxy.extra = []int{up.pid()}
	tool[nameEchoProxy] = "echo"
	if s.o.baseline != "" { // the same upstream, alternated, so never both at once
		if err := startVia(s.o.baseline, nameEchoBaseline, "upstream-http-baseline"); err != nil {
			return err
		}
	}
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
// (HTTPS, server-authenticated; extra: more serve-echo flags) and writes cfgPath, a nefia.yaml with it
// as the upstream.
func (s *suite) startHTTPEcho(ctx context.Context, cfgPath string, extra ...string) (*target, error) {
	up, err := startSelf(ctx, s.o.self, "echo upstream (HTTP)", s.serverArgs("", append([]string{"serve-echo", "--http"}, extra...)...)...)
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

// serverArgs is args (a serve-* subcommand and its flags) followed by the
// flags (addServerFlags) giving it nefia's server certificate, and ca as
// the CA client certificates must chain to unless empty.
func (s *suite) serverArgs(ca string, args ...string) []string {
	args = append(args, "--cert", s.fx.path(pki.ServerCertFile), "--key", s.fx.path(pki.ServerKeyFile))
	if ca != "" {
		args = append(args, "--ca", ca)
	}
	return args
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

// stdioEcho is the mcp.upstreams entry of the echo server on stdio,
// extra being more serve-echo flags (--stdio-server, --cpuprofile).
func stdioEcho(self string, extra ...string) map[string]any {
	return map[string]any{"name": echoUpstream, "command": append([]string{self, "serve-echo", "--stdio"}, extra...), "call_timeout": "30s"}
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

// reportUpstream renders the upstream phases: each target's figures, and
// per session count what nefia adds (p50 and p99, median over rounds of
// the per-round difference) and the throughput ratio via ÷ direct.
func reportUpstream(p func(string, ...any), r *results) {
	for _, ph := range []struct{ phase, title, what string }{
		{phaseUpstream, "raw stream",
			"%s = a Go MCP server (mcp-go, tool echo) on its own mutual-TLS raw stream; %s = the nefia binary running the same server as a stdio upstream (mcp.upstreams), called as echo.echo (policy, audit on, identity assertion). Server CPU includes the upstream process; the main process is nefia alone."},
		{phaseUpstreamHTTP, "Streamable HTTP",
			"%s = the same Go MCP server on its own mutual-TLS Streamable HTTP endpoint (mcp-go); %s = nefia's /mcp (mutual TLS) forwarding to a second such server as a url upstream over HTTPS, called as echo.echo (policy, audit on, identity assertion in _meta and headers); " + nameEchoProxy + " = net/http's ReverseProxy (mutual TLS) in front of that same upstream, speaking HTTP/1.1 with keep-alive to it as nefia does, the floor of any Go gateway (serve-proxy). Server CPU includes the upstream process; the main process is nefia (or the proxy) alone."},
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
		for _, via := range ts {
			if via == nameEchoDirect {
				continue
			}
			p("")
			for _, conc := range r.concs(ph.phase) {
				p("- %s, %d session(s): added latency (min / median / max over rounds) p50 %s ms, p99 %s ms; throughput ÷ direct %s", via, conc,
					r.difference(ph.phase, conc, via, nameEchoDirect, func(c cell) float64 { return c.P50us / 1000 }),
					r.difference(ph.phase, conc, via, nameEchoDirect, func(c cell) float64 { return c.P99us / 1000 }),
					r.ratio(ph.phase, conc, via, nameEchoDirect, rateOf).ratio())
			}
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
