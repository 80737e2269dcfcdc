package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const usageText = `nefia-bench measures the nefia gateway (see BENCHMARKS.md).

Usage:
  nefia-bench run --nefia PATH [--smoke] [--out DIR] [--phases P,...] [--profiles W,...] [flags]
  nefia-bench load --addr A --ca F --cert F --key F [--workload handshake|resumed|status|issue] [-c N]
  nefia-bench report DIR        # re-render DIR/results.md from DIR/results.json
  nefia-bench serve-baseline --cert F --key F --ca F [--listen ADDR]
  nefia-bench serve-backend [--listen ADDR]
  nefia-bench serve-gateway --state-dir D --config F [--audit=false] [--cpuprofile F]
  nefia-bench serve-echo (--stdio [--stdio-server stream|mcp-go] | --cert F --key F [--ca F] [--http] [--listen ADDR]) [--cpuprofile F]
  nefia-bench serve-proxy --to URL --upstream-ca F --cert F --key F --ca F [--listen ADDR]
                                # net/http's ReverseProxy: HTTP/1.1 keep-alive to --to, as nefia

'run' starts every server itself (the real nefia binary, nefia's gateway
in-process in a nefia-bench child, the bare crypto/tls ceiling, and stunnel
and nginx when installed), runs the workloads in alternating rounds, writes
results.md and results.json to --out, and exits non-zero if any operation
failed. bench/run.sh builds the binaries and installs stunnel and nginx.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errors.New("no subcommand")
	}
	switch args[0] {
	case "run":
		return runSuite(ctx, args[1:], stdout, stderr)
	case "load":
		return loadCmd(ctx, args[1:], stdout, stderr)
	case "report":
		return rerender(args[1:], stdout)
	case "serve-baseline":
		return serveBaseline(ctx, args[1:], stdout)
	case "serve-backend":
		return serveBackend(ctx, args[1:], stdout)
	case "serve-gateway":
		return serveGateway(ctx, args[1:], stdout, stderr)
	case "serve-echo":
		return serveEcho(ctx, args[1:], stdout)
	case "serve-proxy":
		return serveProxy(ctx, args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return fmt.Errorf("unknown subcommand %q", args[0])
}

// options are run's flags.
type options struct {
	nefia        string
	baseline     string // a second nefia binary measured alongside (--baseline)
	self         string
	out          string
	work         string
	smoke        bool
	rounds       int
	duration     time.Duration
	warmup       time.Duration
	concs        []int
	external     bool
	profile      bool
	revSizes     []int
	victims      int
	bigVictims   int
	startups     int
	issueDur     time.Duration
	floorTime    time.Duration
	keepWork     bool
	statusSess   []int
	rates        []int // open loop: offered status calls/s
	openSessions int
	phases       []string
	profiles     []string
	echoStdios   []string // serve-echo --stdio-server of the stdio echo upstream, one nefia each in the upstream phase
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var concs, revSizes, sess, phases, profiles, rates, echoStdios string
	fs.StringVar(&o.nefia, "nefia", "", "the nefia binary to measure (go build -o nefia ./cmd/nefia)")
	fs.StringVar(&o.baseline, "baseline", "", "a second nefia binary (say, built from main) measured alongside --nefia in the handshake and status phases, alternated, for before/after ratios")
	fs.StringVar(&o.out, "out", "bench/results", "directory for results.md, results.json and profiles")
	fs.StringVar(&o.work, "work", "", "work directory for state and configs (default: a new temporary directory)")
	fs.BoolVar(&o.smoke, "smoke", false, "a short run that exercises every measurement once (seconds): for CI")
	fs.IntVar(&o.rounds, "rounds", 5, "alternating rounds per comparison")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "measured time per cell")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up per cell")
	fs.StringVar(&concs, "concurrency", "1,8,50", "concurrent handshake clients")
	fs.StringVar(&sess, "sessions", "1,50", "established sessions for status calls")
	fs.StringVar(&rates, "rates", "6000,10000", "openloop phase: offered status calls/s, in total over --open-sessions")
	fs.IntVar(&o.openSessions, "open-sessions", 50, "openloop phase: sessions the offered calls are spread over")
	fs.BoolVar(&o.external, "external", true, "compare with stunnel and nginx when installed")
	fs.BoolVar(&o.profile, "profile", true, "write CPU profiles of the hot paths (needs 'go' on PATH for the top lists)")
	fs.StringVar(&revSizes, "revoked", "0,1000,100000", "revoked-serial counts for the revocation check cost")
	fs.IntVar(&o.victims, "victims", 10, "revocation-to-disconnect samples per path (CLI, MCP)")
	fs.IntVar(&o.bigVictims, "victims-big", 3, "revocation-to-disconnect samples per path with the largest --revoked store")
	fs.IntVar(&o.startups, "startups", 10, "process starts timed")
	fs.DurationVar(&o.issueDur, "issue-duration", 3*time.Second, "measured time per issuance round")
	fs.DurationVar(&o.floorTime, "floor-time", 300*time.Millisecond, "CPU time per crypto floor operation")
	fs.BoolVar(&o.keepWork, "keep", false, "keep the work directory")
	fs.StringVar(&phases, "phases", strings.Join(phaseNames, ","), "phases to run, comma-separated")
	fs.StringVar(&echoStdios, "echo-stdio", stdioStream, "how the stdio echo upstream serves ("+stdioStream+" or "+stdioMCPGo+"), comma-separated: the upstream phase measures one nefia per value, the profile phase uses the first")
	fs.StringVar(&profiles, "profiles", "", "profile phase: only these workloads, comma-separated (default all)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, p := range strings.Split(profiles, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.profiles = append(o.profiles, p)
		}
	}
	for _, h := range strings.Split(echoStdios, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if h != stdioStream && h != stdioMCPGo || slices.Contains(o.echoStdios, h) {
			return o, fmt.Errorf("--echo-stdio: want %s and/or %s once each, not %q", stdioStream, stdioMCPGo, echoStdios)
		}
		o.echoStdios = append(o.echoStdios, h)
	}
	if len(o.echoStdios) == 0 {
		return o, fmt.Errorf("--echo-stdio: want %s or %s", stdioStream, stdioMCPGo)
	}
	if o.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { o.rounds = 1 })
		def("duration", func() { o.duration = 250 * time.Millisecond })
		def("warmup", func() { o.warmup = 100 * time.Millisecond })
		def("external", func() { o.external = false })
		def("profile", func() { o.profile = false })
		def("victims", func() { o.victims = 2 })
		def("victims-big", func() { o.bigVictims = 1 })
		// 100,000 serials take seconds to write, load and rewrite on a busy
		// machine; a smoke run only proves the path works.
		def("revoked", func() { revSizes = "0,1000,10000" })
		def("startups", func() { o.startups = 2 })
		// A rate any machine keeps up with: the smoke run proves the open
		// loop works, it asserts no latency.
		def("rates", func() { rates = "500" })
		def("open-sessions", func() { o.openSessions = 10 })
		def("issue-duration", func() { o.issueDur = 500 * time.Millisecond })
		def("floor-time", func() { o.floorTime = 20 * time.Millisecond })
	}
	var err error
	if o.concs, err = ints(concs); err != nil {
		return o, fmt.Errorf("--concurrency: %w", err)
	}
	if o.statusSess, err = ints(sess); err != nil {
		return o, fmt.Errorf("--sessions: %w", err)
	}
	if o.rates, err = ints(rates); err != nil {
		return o, fmt.Errorf("--rates: %w", err)
	}
	if o.revSizes, err = ints(revSizes); err != nil {
		return o, fmt.Errorf("--revoked: %w", err)
	}
	for _, p := range strings.Split(phases, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(phaseNames, p) {
			return o, fmt.Errorf("--phases: unknown phase %q (have %s)", p, strings.Join(phaseNames, ", "))
		}
		o.phases = append(o.phases, p)
	}
	if o.nefia == "" {
		return o, errors.New("--nefia is required: build it with 'go build -o nefia ./cmd/nefia'")
	}
	if o.nefia, err = filepath.Abs(o.nefia); err != nil {
		return o, err
	}
	if _, err := os.Stat(o.nefia); err != nil {
		return o, fmt.Errorf("--nefia: %w", err)
	}
	if o.rounds < 1 || o.duration <= 0 || o.victims < 1 || o.startups < 1 || o.openSessions < 1 || slices.Contains(o.rates, 0) {
		return o, errors.New("--rounds, --duration, --victims, --startups, --open-sessions and --rates must be positive")
	}
	if o.self, err = os.Executable(); err != nil {
		return o, err
	}
	return o, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a count", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}
