package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nefia/nefia/bench/load"
	"github.com/nefia/nefia/bench/proc"
	"github.com/nefia/nefia/pki"
)

// phaseNames are the phases of a run, in the order they run.
var phaseNames = []string{"floor", "handshake", "revocation", "status", "openloop", "upstream", "issue", "revlatency", "memory", "profile"}

// suite is one run of every measurement.
type suite struct {
	o        options
	log      io.Writer
	fx       *fixture
	caFile   string
	agentCfg *tls.Config
	res      *results
}

func runSuite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "nefia-bench-"); err != nil {
			return err
		}
		if !o.keepWork {
			defer os.RemoveAll(o.work)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	s := &suite{o: o, log: stderr, res: newResults(o)}
	s.logf("work directory %s, results in %s", o.work, o.out)
	if s.fx, err = newFixture(ctx, o.nefia, o.work, 2*o.victims+2*o.bigVictims); err != nil {
		return fmt.Errorf("set up the CA and certificates: %w", err)
	}
	s.caFile = s.fx.path("mtls_ca.crt")
	if s.agentCfg, err = load.ClientConfig(s.fx.agent, s.caFile); err != nil {
		return err
	}

	run := map[string]func(context.Context) error{
		"floor":      s.floorPhase,
		"handshake":  s.handshakePhase,
		"revocation": s.revocationScalePhase,
		"status":     s.statusPhase,
		"openloop":   s.openLoopPhase,
		"upstream":   s.upstreamPhase,
		"issue":      s.issuePhase,
		"revlatency": s.revocationLatencyPhase,
		"memory":     s.memoryPhase,
		"profile":    s.profilePhase,
	}
	for _, name := range o.phases {
		if ctx.Err() != nil {
			break
		}
		s.logf("== %s", name)
		if err := run[name](ctx); err != nil {
			s.fail("%s: %v", name, err)
		}
	}
	s.res.finish()
	if err := s.res.write(o.out); err != nil {
		return err
	}
	report(stdout, s.res)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if n := len(s.res.Failures); n > 0 {
		return fmt.Errorf("%d failure(s):\n  %s", n, strings.Join(s.res.Failures, "\n  "))
	}
	return nil
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// fail records a failure: the run goes on, and exits non-zero at the end.
func (s *suite) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.logf("FAIL %s", msg)
	s.res.Failures = append(s.res.Failures, msg)
}

// measure runs one closed-loop cell against t and records it.
func (s *suite) measure(ctx context.Context, phase string, t *target, conc, round int, dur time.Duration, nw load.NewWorker) cell {
	c, _ := s.runCell(t, cell{Phase: phase, Target: t.name, Conc: conc, Round: round}, dur, func(win load.Window) (load.Result, error) {
		return load.Run(ctx, conc, win, nw)
	})
	if c.Err != "" {
		s.fail("%s %s c=%d round %d: %s", phase, t.name, conc, round, c.Err)
	}
	s.logf("%-18s %-14s c=%-3d r=%d %9.0f/s p50 %7.2fms p99 %7.2fms server %6.0fµs/op client %6.0fµs/op other load %.2f cores",
		phase, t.name, conc, round, c.Rate, c.P50us/1000, c.P99us/1000, c.ServerCPUus, c.ClientCPUus, c.OtherCores)
	s.res.Cells = append(s.res.Cells, c)
	return c
}

// alternate runs every target once per round for each concurrency, the
// order rotating from round to round (A B C, B C A, ...), so that a burst of
// load from elsewhere on the machine hits every target alike and the
// per-round ratios stay meaningful.
func (s *suite) alternate(ctx context.Context, phase string, targets []*target, concs []int, dur time.Duration, nw func(t *target, conc int) load.NewWorker) {
	for _, conc := range concs {
		for r := range s.o.rounds {
			for i := range targets {
				if ctx.Err() != nil {
					return
				}
				t := targets[(i+r)%len(targets)]
				s.measure(ctx, phase, t, conc, r, dur, nw(t, conc))
			}
		}
	}
}

// stopAll stops targets, recording failures, and reports their logged
// problems.
func (s *suite) stopAll(targets ...*target) {
	for _, t := range targets {
		if t == nil {
			continue
		}
		if err := t.stop(); err != nil {
			s.fail("stop: %v", err)
		}
		for _, c := range t.procs {
			if p := c.Problems(); len(p) > 0 {
				s.res.ServerLogs = append(s.res.ServerLogs, fmt.Sprintf("%s: %d warning/error line(s), first: %s", c.name, len(p), p[0]))
			}
		}
	}
}

// --- handshakes ---------------------------------------------------------

func (s *suite) handshakePhase(ctx context.Context) error {
	state, err := s.fx.copyState("hs-nefia")
	if err != nil {
		return err
	}
	nefia, err := startNefia(ctx, s.o.nefia, "nefia", state, s.fx.configPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	targets := []*target{nefia}
	defer func() { s.stopAll(targets...) }()
	if s.o.baseline != "" {
		t, err := s.startBaseline(ctx, "hs-baseline")
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	base, err := startSelf(ctx, s.o.self, "crypto/tls", "serve-baseline",
		"--cert", s.fx.path("mtls_server.crt"), "--key", s.fx.path("mtls_server.key"), "--ca", s.caFile)
	if err != nil {
		return err
	}
	targets = append(targets, base)
	if s.o.external {
		ext, err := s.startExternal(ctx)
		if err != nil {
			s.fail("external comparisons: %v", err)
		}
		targets = append(targets, ext...)
	}
	for _, t := range targets {
		if _, err := load.WaitReady(ctx, t.addr, s.agentCfg, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for _, mode := range []struct {
		phase  string
		resume bool
	}{{phaseFull, false}, {phaseResumed, true}} {
		s.alternate(ctx, mode.phase, targets, s.o.concs, s.o.duration, func(t *target, conc int) load.NewWorker {
			return load.HandshakeWorkers(ctx, t.addr, s.agentCfg, mode.resume)
		})
	}
	// A resumed run that did not resume measured full handshakes.
	for _, c := range s.res.Cells {
		if c.Phase == phaseResumed && c.Ops > 0 && float64(c.Resumed) < 0.9*float64(c.Ops) {
			s.fail("%s %s c=%d round %d: only %d of %d handshakes resumed", c.Phase, c.Target, c.Conc, c.Round, c.Resumed, c.Ops)
		}
	}
	return nil
}

// --- revocation check cost ----------------------------------------------

func (s *suite) revocationScalePhase(ctx context.Context) error {
	var targets []*target
	defer func() { s.stopAll(targets...) }()
	for _, n := range s.o.revSizes {
		state, err := s.fx.copyState(fmt.Sprintf("rev-%d", n))
		if err != nil {
			return err
		}
		if err := fillRevoked(state, n); err != nil {
			return err
		}
		s.res.RevCheck = append(s.res.RevCheck, revCheckMicro(state, s.fx.agent, s.o.floorTime))
		t, err := startNefia(ctx, s.o.nefia, fmt.Sprintf("revoked=%d", n), state, s.fx.configPath, "127.0.0.1:0")
		if err != nil {
			return err
		}
		targets = append(targets, t)
		if _, err := load.WaitReady(ctx, t.addr, s.agentCfg, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	concs := []int{50}
	if !s.o.smoke {
		concs = []int{8, 50}
	}
	s.alternate(ctx, phaseRevScale, targets, concs, s.o.duration, func(t *target, conc int) load.NewWorker {
		return load.HandshakeWorkers(ctx, t.addr, s.agentCfg, false)
	})
	return nil
}

// --- status calls ---------------------------------------------------------

func (s *suite) statusPhase(ctx context.Context) error {
	var targets []*target
	defer func() { s.stopAll(targets...) }()
	for _, g := range []struct {
		name    string
		real    bool
		auditOn bool
	}{{"gw audit=on", false, true}, {"gw audit=off", false, false}, {"nefia (binary)", true, true}} {
		state, err := s.fx.copyState("status-" + strings.NewReplacer(" ", "-", "=", "-", "(", "", ")", "").Replace(g.name))
		if err != nil {
			return err
		}
		var t *target
		if g.real {
			t, err = startNefia(ctx, s.o.nefia, g.name, state, s.fx.configPath, "127.0.0.1:0")
		} else {
			t, err = startGateway(ctx, s.o.self, g.name, state, s.fx.configPath, g.auditOn, "")
		}
		if err != nil {
			return err
		}
		targets = append(targets, t)
		if err := s.checkStatus(ctx, t); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	if s.o.baseline != "" {
		t, err := s.startBaseline(ctx, "status-baseline")
		if err != nil {
			return err
		}
		targets = append(targets, t)
		if err := s.checkStatus(ctx, t); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	s.alternate(ctx, phaseStatus, targets, s.o.statusSess, s.o.duration, func(t *target, conc int) load.NewWorker {
		return load.ToolWorkers(ctx, t.addr, func(int) *tls.Config { return s.agentCfg }, toolStatus, nil)
	})
	return nil
}

// baselineName is the target name of the --baseline binary in results.
const baselineName = "nefia (baseline)"

// startBaseline starts the --baseline binary on a copy of the state, as
// startNefia starts the binary under test.
func (s *suite) startBaseline(ctx context.Context, dir string) (*target, error) {
	state, err := s.fx.copyState(dir)
	if err != nil {
		return nil, err
	}
	return startNefia(ctx, s.o.baseline, baselineName, state, s.fx.configPath, "127.0.0.1:0")
}

// checkStatus proves one status call returns a well-formed, successful
// result that counts the caller's own connection.
func (s *suite) checkStatus(ctx context.Context, t *target) error {
	sess, err := load.OpenSession(ctx, t.addr, s.agentCfg)
	if err != nil {
		return err
	}
	defer sess.Close()
	line, err := sess.CallTool(toolStatus, nil)
	if err != nil {
		return err
	}
	sc, err := load.Check(line)
	if err != nil {
		return err
	}
	if n, _ := sc["connections"].(float64); n < 1 {
		return fmt.Errorf("status reports %v connections, want at least this one: %s", sc["connections"], line)
	}
	return nil
}

// --- issuance ---------------------------------------------------------------

func (s *suite) issuePhase(ctx context.Context) error {
	rounds := min(s.o.rounds, 3)
	for r := range rounds {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.issueRound(ctx, r); err != nil {
			s.fail("issuance round %d: %v", r, err)
		}
	}
	return nil
}

// issueRound issues certificates with 8 operators for a while on a fresh
// copy of the state (the inventory is rewritten on every issue, so its size
// matters), then verifies the audit trail the run produced.
func (s *suite) issueRound(ctx context.Context, r int) error {
	state, err := s.fx.copyState(fmt.Sprintf("issue-%d", r))
	if err != nil {
		return err
	}
	t, err := startNefia(ctx, s.o.nefia, "nefia (binary)", state, s.fx.configPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfgs := make([]*tls.Config, len(s.fx.operators))
	for i, op := range s.fx.operators {
		if cfgs[i], err = load.ClientConfig(op, s.caFile); err != nil {
			s.stopAll(t)
			return err
		}
	}
	c := s.measure(ctx, phaseIssue, t, len(cfgs), r, s.o.issueDur,
		load.ToolWorkers(ctx, t.addr, func(i int) *tls.Config { return cfgs[i] }, toolIssue, func(i int, n int64) []byte {
			return fmt.Appendf(nil, `{"name":"iss-%d-%d-%d","duration":"1h","out_dir":"op%d"}`, r, i, n, i)
		}))
	s.stopAll(t)
	if c.Err != "" {
		return nil // already recorded
	}
	if out, err := runNefia(ctx, s.o.nefia, state, s.fx.configPath, "audit", "verify"); err != nil {
		return fmt.Errorf("audit trail after issuance: %w", err)
	} else {
		s.logf("audit verify: %s", strings.TrimSpace(out))
	}
	return nil
}

// --- revocation to disconnect ---------------------------------------------

func (s *suite) revocationLatencyPhase(ctx context.Context) error {
	victims := s.fx.victims
	if err := s.revocationLatency(ctx, "revlat", 0, victims[:2*s.o.victims]); err != nil {
		return err
	}
	// The same with a large revocation store: every revocation rewrites it
	// and the gateway reloads it.
	if big := slices.Max(s.o.revSizes); big > 0 && s.o.bigVictims > 0 {
		return s.revocationLatency(ctx, "revlat-big", big, victims[2*s.o.victims:])
	}
	return nil
}

// revocationLatency revokes the first half of victims with the CLI and the
// second half with the MCP tool, on a gateway whose store already holds
// filler revoked serials.
func (s *suite) revocationLatency(ctx context.Context, name string, filler int, victims []victim) error {
	state, err := s.fx.copyState(name)
	if err != nil {
		return err
	}
	if filler > 0 {
		if err := fillRevoked(state, filler); err != nil {
			return err
		}
		// The first revocation into a version-1 store (what fillRevoked
		// writes) converts it to the store and log of issue 16, a
		// one-off rewrite of the whole store: done here, untimed but
		// logged, so the samples measure revocations as they are once a
		// store has been upgraded.
		serial, err := pki.NewSerial()
		if err != nil {
			return err
		}
		start := time.Now()
		if out, err := runNefia(ctx, s.o.nefia, state, s.fx.configPath, "mtls", "revoke", "--serial", pki.FormatSerial(serial), "--reason", "bench upgrade"); err != nil {
			return fmt.Errorf("upgrading the filler store: %w: %s", err, out)
		}
		s.logf("first revocation into the %d-serial version-1 store (its one-off upgrade): %.1fms", filler, ms(time.Since(start)))
	}
	t, err := startNefia(ctx, s.o.nefia, "nefia (binary)", state, s.fx.configPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer s.stopAll(t)
	opCfg, err := load.ClientConfig(s.fx.operators[0], s.caFile)
	if err != nil {
		return err
	}
	op, err := load.OpenSession(ctx, t.addr, opCfg)
	if err != nil {
		return err
	}
	defer op.Close()
	for i, v := range victims {
		if ctx.Err() != nil {
			return nil
		}
		path := "cli"
		if i >= len(victims)/2 {
			path = "mcp"
		}
		smp, err := s.revokeOne(ctx, t, op, v, path)
		smp.Revoked = filler
		if err != nil {
			s.fail("revocation to disconnect (%s, %d revoked, %s): %v", path, filler, v.serial, err)
			continue
		}
		s.res.RevLatency = append(s.res.RevLatency, smp)
		s.logf("revoke via %s (%d revoked): disconnect %.1fms after the revocation started, %.1fms after it returned", path, filler, smp.FromStartMs, smp.FromDoneMs)
	}
	return nil
}

// revokeOne opens a session with v's certificate, revokes v through path
// (the CLI in another process, or the MCP tool on op), and times the
// session's end. A random pause first spreads the samples over the
// gateway's revocation poll period.
func (s *suite) revokeOne(ctx context.Context, t *target, op *load.Session, v victim, path string) (revSample, error) {
	cfg, err := load.ClientConfig(v.cert, s.caFile)
	if err != nil {
		return revSample{}, err
	}
	sess, err := load.OpenSession(ctx, t.addr, cfg)
	if err != nil {
		return revSample{}, err
	}
	defer sess.Close()
	type closed struct {
		at  time.Time
		err error
	}
	done := make(chan closed, 1)
	go func() {
		at, err := sess.WaitClosed(10 * time.Second)
		done <- closed{at, err}
	}()
	time.Sleep(time.Duration(time.Now().UnixNano()%200) * time.Millisecond)
	start := time.Now()
	switch path {
	case "cli":
		if _, err := runNefia(ctx, s.o.nefia, t.stateDir(), s.fx.configPath, "mtls", "revoke", "--serial", v.serial, "--reason", "bench"); err != nil {
			return revSample{}, err
		}
	case "mcp":
		line, err := op.CallTool(toolRevoke, fmt.Appendf(nil, `{"serial":%q,"reason":"bench"}`, v.serial))
		if err != nil {
			return revSample{}, err
		}
		sc, err := load.Check(line)
		if err != nil {
			return revSample{}, err
		}
		// 0 is right too: the gateway's revocation poll may see the store
		// change and close the session while the call is still recording
		// its outcome. Either way the session must end (checked below).
		if n, _ := sc["sessions_closed"].(float64); n > 1 {
			return revSample{}, fmt.Errorf("revoke closed %v sessions, want at most 1", sc["sessions_closed"])
		}
	}
	returned := time.Now()
	var c closed
	select {
	case c = <-done:
	case <-ctx.Done():
		return revSample{}, ctx.Err()
	}
	if c.err != nil {
		return revSample{}, c.err
	}
	// The revoked certificate must not get back in.
	if _, err := load.HandshakePing(ctx, t.addr, cfg); err == nil {
		return revSample{}, errors.New("the revoked certificate completed a new handshake and ping")
	}
	return revSample{Path: path, FromStartMs: ms(c.at.Sub(start)), FromDoneMs: ms(c.at.Sub(returned))}, nil
}

// --- memory and start-up ------------------------------------------------

func (s *suite) memoryPhase(ctx context.Context) error {
	state, err := s.fx.copyState("memory")
	if err != nil {
		return err
	}
	memRounds := min(s.o.startups, 3)
	for i := range s.o.startups {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.startOnce(ctx, state, i < memRounds); err != nil {
			s.fail("start-up %d: %v", i, err)
		}
	}
	return nil
}

// startOnce starts the real binary on a known port, times it to its first
// accepted TCP connection and its first answered ping, and, with mem,
// measures its RSS idle and with 50 idle sessions.
func (s *suite) startOnce(ctx context.Context, state string, mem bool) error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	cmd := nefiaServeCmd(s.o.nefia, state, s.fx.configPath, addr)
	started := time.Now()
	c, _, err := startChild(ctx, "nefia (binary)", cmd, false, nil)
	if err != nil {
		return err
	}
	t := &target{name: "nefia (binary)", addr: addr, procs: []*child{c}, started: started}
	defer s.stopAll(t)
	if err := waitTCP(ctx, addr, 10*time.Second); err != nil {
		return err
	}
	accept := time.Since(started)
	if _, err := load.WaitReady(ctx, addr, s.agentCfg, 10*time.Second); err != nil {
		return err
	}
	ready := time.Since(started)
	smp := startSample{AcceptMs: ms(accept), ReadyMs: ms(ready)}
	s.logf("start-up: accepting after %.1fms, first ping answered after %.1fms", smp.AcceptMs, smp.ReadyMs)
	s.res.Startup = append(s.res.Startup, smp)
	if !mem {
		return nil
	}
	time.Sleep(300 * time.Millisecond)
	rss0, err := proc.RSS(t.pid())
	if err != nil {
		return err
	}
	const n = 50
	var sessions []*load.Session
	defer func() {
		for _, ss := range sessions {
			ss.Close()
		}
	}()
	for range n {
		ss, err := load.OpenSession(ctx, addr, s.agentCfg)
		if err != nil {
			return fmt.Errorf("open idle session %d: %w", len(sessions), err)
		}
		sessions = append(sessions, ss)
	}
	time.Sleep(500 * time.Millisecond)
	rss50, err := proc.RSS(t.pid())
	if err != nil {
		return err
	}
	m := memSample{RSS0: rss0, RSS50: rss50, PerSessionKiB: float64(rss50-rss0) / n / 1024}
	s.logf("RSS: %d KiB idle, %d KiB with %d idle sessions: %.1f KiB per session", rss0>>10, rss50>>10, n, m.PerSessionKiB)
	s.res.Memory = append(s.res.Memory, m)
	return nil
}

// stateDir is the state directory a nefia target was started on.
func (t *target) stateDir() string {
	for _, e := range t.procs[0].cmd.Env {
		if v, ok := strings.CutPrefix(e, "NEFIA_STATE_DIR="); ok {
			return v
		}
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runCell runs one cell's load (run, over a window of dur) against t and
// fills c with what it measured: rates and latencies, the server's,
// nefia's main process's and this process's CPU per operation, the load of
// other processes, and the cell's error if any.
func (s *suite) runCell(t *target, c cell, dur time.Duration, run func(load.Window) (load.Result, error)) (cell, load.Result) {
	var cpu0, cpu1, main0, main1, self0, self1 time.Duration
	var m0, m1 proc.Machine
	var sampleErr error
	sample := func(cpu, main, self *time.Duration, m *proc.Machine) {
		var err error
		if *cpu, err = t.cpu(); err != nil {
			sampleErr = err
		}
		if len(t.procs) > 0 {
			*main, _ = proc.CPU(t.pid())
		}
		*self, _ = proc.CPU(os.Getpid())
		*m, _ = proc.SampleMachine()
	}
	win := load.Window{
		Warmup:   s.o.warmup,
		Duration: dur,
		OnStart:  func() { sample(&cpu0, &main0, &self0, &m0) },
		OnEnd:    func() { sample(&cpu1, &main1, &self1, &m1) },
	}
	res, err := run(win)
	c.fill(res)
	if res.Ops > 0 {
		c.ServerCPUus = us(cpu1-cpu0) / float64(res.Ops)
		c.MainCPUus = us(main1-main0) / float64(res.Ops)
		c.ClientCPUus = us(self1-self0) / float64(res.Ops)
	}
	if res.Elapsed > 0 {
		busy := m1.Sub(m0).Busy - (cpu1 - cpu0) - (self1 - self0)
		c.OtherCores = max(0, busy.Seconds()/res.Elapsed.Seconds())
	}
	switch {
	case err != nil:
		c.Err = err.Error()
	case sampleErr != nil:
		c.Err = sampleErr.Error()
	case res.Errors > 0:
		c.Err = fmt.Sprintf("%d of %d operations failed; first: %s", res.Errors, res.Errors+res.Ops, res.FirstError)
	case res.Ops == 0:
		c.Err = "no operation completed"
	}
	return c, res
}
