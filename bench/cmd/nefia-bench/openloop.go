package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/nefia/nefia/bench/load"
)

// phaseOpen is the open-loop status phase in results.json.
const phaseOpen = "status_open"

// nameOpenFloor names the open loop's floor target: the direct echo
// server, measured beside nefia under the same load.
const nameOpenFloor = "echo server (floor)"

// openLoopPhase offers status calls at fixed rates (--rates, in total over
// --open-sessions sessions) to the nefia binary (and the --baseline binary,
// alternated), latency from each call's scheduled send time (load.RunOpen).
// No target is asserted here: the report and BENCHMARKS.md judge them.
func (s *suite) openLoopPhase(ctx context.Context) error {
	var targets []*target
	defer func() { s.stopAll(targets...) }()
	state, err := s.fx.copyState("open-nefia")
	if err != nil {
		return err
	}
	t, err := startNefia(ctx, s.o.nefia, "nefia (binary)", state, s.fx.configPath, "127.0.0.1:0")
	if err != nil {
		return err
	}
	targets = append(targets, t)
	if s.o.baseline != "" {
		b, err := s.startBaseline(ctx, "open-baseline")
		if err != nil {
			return err
		}
		targets = append(targets, b)
	}
	for _, t := range targets {
		if err := s.checkStatus(ctx, t); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	// The floor: the same load on the same cores against the direct echo
	// server (nefia's stream code over the same mutual TLS, a trivial tool,
	// no audit), so what the machine and the load generator cost the p99 is
	// measured beside what nefia does.
	floor, err := startSelf(ctx, s.o.self, nameOpenFloor, s.serverArgs(s.caFile, "serve-echo")...)
	if err != nil {
		return err
	}
	targets = append(targets, floor)
	for _, rate := range s.o.rates {
		for r := range s.o.rounds {
			for i := range targets {
				if ctx.Err() != nil {
					return nil
				}
				t := targets[(i+r)%len(targets)]
				tool, args := toolStatus, []byte(nil)
				if t == floor {
					tool, args = "echo", echoArgs
				}
				nw := load.ToolWorkers(ctx, t.addr, func(int) *tls.Config { return s.agentCfg }, tool, func(int, int64) []byte { return args })
				s.measureOpen(ctx, phaseOpen, t, s.o.openSessions, rate, r, s.o.duration, nw)
			}
		}
	}
	return nil
}

// measureOpen runs one open-loop cell of phase (phaseOpen, or a profile
// workload's) against t for dur and records it.
func (s *suite) measureOpen(ctx context.Context, phase string, t *target, sessions, rate, round int, dur time.Duration, nw load.NewWorker) {
	c, res := s.runCell(t, cell{Phase: phase, Target: t.name, Conc: sessions, Round: round, Offered: float64(rate)}, dur,
		func(win load.Window) (load.Result, error) { return load.RunOpen(ctx, sessions, float64(rate), win, nw) })
	c.Late = res.Late
	if c.Err != "" {
		s.fail("%s %s %d/s round %d: %s", phase, t.name, rate, round, c.Err)
	}
	s.logf("%-18s %-16s %6d/s offered r=%d %9.0f/s done p50 %7.2fms p99 %7.2fms late %d server %6.0fµs/op other load %.2f cores",
		phase, t.name, rate, round, c.Rate, c.P50us/1000, c.P99us/1000, c.Late, c.ServerCPUus, c.OtherCores)
	s.res.Cells = append(s.res.Cells, c)
}

// reportOpen renders the open-loop table: per offered rate and target,
// the achieved rate and latency from the scheduled send time.
func reportOpen(p func(string, ...any), r *results) {
	cs := r.cellsOf(phaseOpen)
	if len(cs) == 0 {
		return
	}
	var rates []float64
	for _, c := range cs {
		if !slices.Contains(rates, c.Offered) {
			rates = append(rates, c.Offered)
		}
	}
	p("")
	p("## nefia.mtls.status at a fixed offered rate (open loop)")
	p("")
	p("Calls are scheduled at the offered rate in total, evenly over the sessions (one outstanding call per session), whatever the server does; latency runs from each call's scheduled send time, so a server that falls behind shows its queue (no coordinated omission). Late = calls never sent because the server was too far behind at the cut-off (counted in the percentiles with the time they had waited). %s = the direct echo server (nefia's stream code over the same mutual TLS, a trivial echo tool, no audit trail) under the same load: the floor this machine and load generator set.", nameOpenFloor)
	p("")
	p("| offered calls/s | sessions | server | achieved calls/s (min / med / max) | p50 ms | p99 ms | p99 max ms | late | server CPU µs/call |")
	p("|---:|---:|---|---|---:|---:|---:|---:|---:|")
	for _, rate := range rates {
		for _, t := range r.targets(phaseOpen) {
			var g group
			var late int64
			sessions := 0
			for _, c := range cs {
				if c.Offered != rate || c.Target != t {
					continue
				}
				g.rate = append(g.rate, c.Rate)
				g.p50 = append(g.p50, c.P50us/1000)
				g.p99 = append(g.p99, c.P99us/1000)
				g.cpu = append(g.cpu, c.ServerCPUus)
				late += c.Late
				sessions = c.Conc
			}
			if len(g.rate) == 0 {
				continue
			}
			p("| %.0f | %d | %s | %s | %.2f | %.2f | %.2f | %d | %.0f |", rate, sessions, t, spreadOf(g.rate), median(g.p50), median(g.p99), slices.Max(g.p99), late, median(g.cpu))
		}
	}
}
