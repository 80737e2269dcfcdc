package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nefia/nefia/bench/external"
	"github.com/nefia/nefia/bench/floor"
	"github.com/nefia/nefia/bench/load"
	"github.com/nefia/nefia/bench/proc"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// Phase names, as they appear in results.json.
const (
	phaseFull     = "handshake_full"
	phaseResumed  = "handshake_resumed"
	phaseRevScale = "revocation_check"
	phaseStatus   = "status_call"
	phaseIssue    = "issue_client"
	phaseProfile  = "profile"
)

// Tool names (tools.Name*; spelled out so a rename shows up here as a
// failing smoke run rather than a silent change of what is measured).
const (
	toolStatus = "nefia.mtls.status"
	toolIssue  = "nefia.mtls.issue_client"
	toolRevoke = "nefia.mtls.revoke"
)

// --- crypto floor ----------------------------------------------------------

func (s *suite) floorPhase(context.Context) error {
	f, err := floor.NewFixture()
	if err != nil {
		return err
	}
	for _, op := range f.Ops() {
		d, err := floor.Measure(op, s.o.floorTime)
		if err != nil {
			return err
		}
		s.res.Floor = append(s.res.Floor, floorOp{Name: op.Name, CPUus: us(d)})
		s.logf("floor %-30s %7.1f µs CPU", op.Name, us(d))
	}
	for _, op := range f.ExtraOps() {
		d, err := floor.Measure(op, s.o.floorTime)
		if err != nil {
			return err
		}
		s.res.FloorExtra = append(s.res.FloorExtra, floorOp{Name: op.Name, CPUus: us(d)})
		s.logf("beyond the floor %-21s %7.1f µs CPU", op.Name, us(d))
	}
	return nil
}

// revCheckMicro times the gateway's revocation check itself
// (pki.RevocationChecker.Check, one stat and one map lookup) against the
// store in stateDir, and how long loading the store takes.
func revCheckMicro(stateDir string, cert tls.Certificate, d time.Duration) revCheck {
	rc := revCheck{}
	checker := pki.NewRevocationChecker(filepath.Join(stateDir, pki.RevokedFile))
	start := time.Now()
	if err := checker.Refresh(); err != nil {
		rc.Err = err.Error()
		return rc
	}
	rc.LoadMs = ms(time.Since(start))
	rc.Revoked = checker.Len()
	leaf := cert.Leaf
	if leaf == nil {
		rc.Err = "no parsed leaf"
		return rc
	}
	per, err := floor.Measure(floor.Op{Name: "check", Run: func() error { return checker.Check(leaf) }}, d)
	if err != nil {
		rc.Err = err.Error()
		return rc
	}
	rc.CheckUs = us(per)
	return rc
}

// --- stunnel and nginx ------------------------------------------------------

// startExternal starts the plain backend and, in front of it, stunnel and
// nginx with nefia's certificates. Either missing is a failure of the run
// (bench/run.sh installs them), reported, and the other still runs.
func (s *suite) startExternal(ctx context.Context) ([]*target, error) {
	backend, err := startSelf(ctx, s.o.self, "backend", "serve-backend")
	if err != nil {
		return nil, err
	}
	p := external.Params{
		Backend: backend.addr,
		Cert:    s.fx.path(pki.ServerCertFile),
		Key:     s.fx.path(pki.ServerKeyFile),
		CA:      s.caFile,
	}
	var targets []*target
	var problems []string
	if t, err := s.startStunnel(ctx, p, backend); err != nil {
		problems = append(problems, "stunnel: "+err.Error())
	} else {
		targets = append(targets, t)
	}
	if t, err := s.startNginx(ctx, p, backend); err != nil {
		problems = append(problems, "nginx: "+err.Error())
	} else {
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		s.stopAll(backend)
	}
	if len(problems) > 0 {
		return targets, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return targets, nil
}

func (s *suite) startStunnel(ctx context.Context, p external.Params, backend *target) (*target, error) {
	bin, err := external.Stunnel()
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install stunnel4)", err)
	}
	s.res.Machine.Stunnel = versionLine(bin, "-version")
	p.Dir = filepath.Join(s.o.work, "stunnel")
	if p.Listen, err = freePort(); err != nil {
		return nil, err
	}
	conf, err := external.StunnelConfig(p)
	if err != nil {
		return nil, err
	}
	return s.startProxy(ctx, "stunnel", p, conf, backend, func(confPath string) *exec.Cmd {
		return exec.Command(bin, confPath)
	})
}

func (s *suite) startNginx(ctx context.Context, p external.Params, backend *target) (*target, error) {
	bin, module, err := external.Nginx()
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install nginx libnginx-mod-stream)", err)
	}
	s.res.Machine.Nginx = versionLine(bin, "-v")
	p.Dir = filepath.Join(s.o.work, "nginx")
	p.StreamModule = module
	if p.Listen, err = freePort(); err != nil {
		return nil, err
	}
	conf, err := external.NginxConfig(p)
	if err != nil {
		return nil, err
	}
	t, err := s.startProxy(ctx, "nginx", p, conf, backend, func(confPath string) *exec.Cmd {
		return exec.Command(bin, "-p", p.Dir, "-e", "stderr", "-c", confPath)
	})
	if err != nil {
		return nil, err
	}
	// nginx's workers do the work: count them with the master.
	deadline := time.Now().Add(5 * time.Second)
	for len(t.extra) == 0 && time.Now().Before(deadline) {
		t.extra = proc.Children(t.procs[1].cmd.Process.Pid)
		time.Sleep(10 * time.Millisecond)
	}
	if len(t.extra) == 0 {
		s.stopAll(t)
		return nil, fmt.Errorf("no nginx worker process found")
	}
	return t, nil
}

// startProxy writes conf, starts the proxy and waits until it answers a
// ping through to the backend. The target's processes are the backend and
// the proxy: both are the cost of serving through it.
func (s *suite) startProxy(ctx context.Context, name string, p external.Params, conf []byte, backend *target, cmdFor func(confPath string) *exec.Cmd) (*target, error) {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, err
	}
	confPath := filepath.Join(p.Dir, name+".conf")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, err
	}
	cmd := cmdFor(confPath)
	started := time.Now()
	c, _, err := startChild(ctx, name, cmd, false, nil)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, addr: p.Listen, procs: []*child{backend.procs[0], c}, started: started}
	if _, err := load.WaitReady(ctx, p.Listen, s.agentCfg, 10*time.Second); err != nil {
		c.stop()
		return nil, fmt.Errorf("%w; its log: %s", err, strings.Join(c.Problems(), " | "))
	}
	return t, nil
}

// versionLine returns the first line of bin's version output that names a
// version (stunnel prints a configuration notice first).
func versionLine(bin string, arg string) string {
	out, _ := exec.Command(bin, arg).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Initializing") {
			return l
		}
	}
	return ""
}

// --- profiles ------------------------------------------------------------------

// profilePhase profiles nefia's gateway (in a nefia-bench child: the
// same server.NewGateway wiring as 'nefia mcp serve') under each hot-path
// workload, and writes pprof's top lists beside the profiles.
func (s *suite) profilePhase(ctx context.Context) error {
	if !s.o.profile {
		return nil
	}
	dir := filepath.Join(s.o.out, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	opCfgs := make([]*tls.Config, len(s.fx.operators))
	for i, op := range s.fx.operators {
		var err error
		if opCfgs[i], err = load.ClientConfig(op, s.caFile); err != nil {
			return err
		}
	}
	dur := max(s.o.duration, 5*time.Second)
	upCfg := filepath.Join(s.o.work, "nefia-upstream-profile.yaml")
	if err := writeUpstreamConfig(s.fx.configPath, upCfg, stdioEcho(s.o.self, "--stdio-server", s.o.echoStdios[0],
		"--cpuprofile", filepath.Join(dir, "upstream_echo_s50.upstream.pprof"))); err != nil {
		return err
	}
	upHTTPCfg := filepath.Join(s.o.work, "nefia-upstream-http-profile.yaml")
	upHTTP, err := s.startHTTPEcho(ctx, upHTTPCfg, "--cpuprofile", filepath.Join(dir, "upstream_echo_http_s50.upstream.pprof"))
	if err != nil {
		return err
	}
	defer s.stopAll(upHTTP)
	httpCfgs, err := s.httpClientConfigs()
	if err != nil {
		return err
	}
	for _, w := range []struct {
		name     string
		conc     int
		baseline bool   // profile the crypto/tls ceiling instead of nefia
		config   string // nefia.yaml of the gateway, "" for the fixture's
		echo     string // profile the echo server called directly instead of nefia: "stream" or "http"
		rate     int    // offered calls/s in total (open loop, load.RunOpen); 0 for a closed loop
		nw       func(addr string) load.NewWorker
	}{
		{"handshake_full_c50", 50, false, "", "", 0, func(addr string) load.NewWorker { return load.HandshakeWorkers(ctx, addr, s.agentCfg, false) }},
		{"baseline_handshake_full_c50", 50, true, "", "", 0, func(addr string) load.NewWorker { return load.HandshakeWorkers(ctx, addr, s.agentCfg, false) }},
		{"handshake_resumed_c50", 50, false, "", "", 0, func(addr string) load.NewWorker { return load.HandshakeWorkers(ctx, addr, s.agentCfg, true) }},
		{"baseline_handshake_resumed_c50", 50, true, "", "", 0, func(addr string) load.NewWorker { return load.HandshakeWorkers(ctx, addr, s.agentCfg, true) }},
		{"status_s50", 50, false, "", "", 0, func(addr string) load.NewWorker {
			return load.ToolWorkers(ctx, addr, func(int) *tls.Config { return s.agentCfg }, toolStatus, nil)
		}},
		{"status_open10k_s50", 50, false, "", "", 10000, func(addr string) load.NewWorker {
			return load.ToolWorkers(ctx, addr, func(int) *tls.Config { return s.agentCfg }, toolStatus, nil)
		}},
		{"echo_direct_s50", 50, false, "", "stream", 0, func(addr string) load.NewWorker {
			return load.ToolWorkers(ctx, addr, func(int) *tls.Config { return s.agentCfg }, "echo", func(int, int64) []byte { return echoArgs })
		}},
		{"upstream_echo_s50", 50, false, upCfg, "", 0, func(addr string) load.NewWorker {
			return load.ToolWorkers(ctx, addr, func(int) *tls.Config { return s.agentCfg }, echoUpstream+".echo", func(int, int64) []byte { return echoArgs })
		}},
		{"echo_direct_http_s50", 50, false, "", "http", 0, func(addr string) load.NewWorker {
			return load.HTTPToolWorkers(ctx, "https://"+addr+server.MCPPath, func(i int) *tls.Config { return httpCfgs[i%len(httpCfgs)] }, "echo", func(int, int64) []byte { return echoArgs })
		}},
		{"upstream_echo_http_s50", 50, false, upHTTPCfg, "", 0, func(addr string) load.NewWorker {
			return load.HTTPToolWorkers(ctx, "https://"+addr+server.MCPPath, func(i int) *tls.Config { return httpCfgs[i%len(httpCfgs)] }, echoUpstream+".echo", func(int, int64) []byte { return echoArgs })
		}},
		{"upstream_echo_http_s1", 1, false, upHTTPCfg, "", 0, func(addr string) load.NewWorker {
			return load.HTTPToolWorkers(ctx, "https://"+addr+server.MCPPath, func(i int) *tls.Config { return httpCfgs[i%len(httpCfgs)] }, echoUpstream+".echo", func(int, int64) []byte { return echoArgs })
		}},
		{"issue_client_8ops", 8, false, "", "", 0, func(addr string) load.NewWorker {
			return load.ToolWorkers(ctx, addr, func(i int) *tls.Config { return opCfgs[i] }, toolIssue, func(i int, n int64) []byte {
				return fmt.Appendf(nil, `{"name":"prof-%d-%d","duration":"1h","out_dir":"op%d"}`, i, n, i)
			})
		}},
	} {
		if ctx.Err() != nil {
			return nil
		}
		if len(s.o.profiles) > 0 && !slices.Contains(s.o.profiles, w.name) {
			continue
		}
		cfgPath := s.fx.configPath
		if w.config != "" {
			cfgPath = w.config
		}
		state, err := s.fx.copyState("prof-" + w.name)
		if err != nil {
			return err
		}
		prof := filepath.Join(dir, w.name+".pprof")
		var t *target
		switch {
		case w.echo != "":
			args := s.serverArgs(s.caFile, "serve-echo", "--cpuprofile", prof)
			if w.echo == "http" {
				args = append(args, "--http")
			}
			t, err = startSelf(ctx, s.o.self, nameEchoDirect, args...)
		case w.baseline:
			t, err = startSelf(ctx, s.o.self, nameBaseline, s.serverArgs(s.caFile, "serve-baseline", "--cpuprofile", prof)...)
		default:
			t, err = startGateway(ctx, s.o.self, nameAuditOn, state, cfgPath, true, prof)
		}
		if err != nil {
			return err
		}
		if w.rate > 0 {
			s.measureOpen(ctx, phaseProfile+":"+w.name, t, w.conc, w.rate, 0, dur, w.nw(t.addr))
		} else {
			s.measure(ctx, phaseProfile+":"+w.name, t, w.conc, 0, dur, w.nw(t.addr))
		}
		s.stopAll(t)
		pp := profile{Name: w.name, Path: prof}
		for _, mode := range []string{"flat", "cum", "all"} {
			args := []string{"tool", "pprof", "-top", "-nodecount=45"}
			switch mode {
			case "cum":
				args = append(args, "-cum")
			case "all":
				args = []string{"tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0"}
			}
			out, err := exec.CommandContext(ctx, "go", append(args, s.o.self, prof)...).CombinedOutput()
			if err != nil {
				s.logf("go tool pprof %s: %v (profile kept at %s)", w.name, err, prof)
				break
			}
			if mode == "all" {
				pp.Breakdown = breakdown(string(out))
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, w.name+"."+mode+".txt"), out, 0o644); err != nil {
				return err
			}
		}
		s.res.Profiles = append(s.res.Profiles, pp)
		s.logf("profile %s: %s", w.name, formatBreakdown(pp.Breakdown))
	}
	return nil
}
