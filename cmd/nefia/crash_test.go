package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// This file holds TestCrashConsistency (issue 7, item 3) and what it shares
// with TestConcurrentWriters (writers_test.go): the environment of a nefia
// child process, a gateway run as a child process, an MCP client over mTLS,
// a ledger of what the writers attempted and what they acknowledged, and
// checkState, which holds the state directory to that ledger.

// TestCrashConsistency runs the built binary issuing and revoking
// certificates, as short CLI processes and as a running gateway driven over
// MCP, and kills it with SIGKILL at random moments. After every round of
// kills the state directory must be whole: every state file parses, every
// client certificate on disk sits beside its own key and is in the
// inventory, everything acknowledged (a CLI exit 0, a tool result) is in the
// inventory or the revocation store and on the audit trail, nothing that was
// never attempted is, and the audit chain verifies. The one break it may
// report is a torn last line, which the test also leaves now and then as a
// crash mid-write would; the next writer must cut it off and record
// audit.recovered.
//
// The random choices are seeded from the clock and the seed is logged;
// NEFIA_CRASH_SEED=N repeats them (process timing still varies).
func TestCrashConsistency(t *testing.T) {
	t.Parallel()
	const (
		wantKills        = 60 // SIGKILLs that landed before the process exited
		wantGatewayKills = 12 // of which, running gateways
		maxRounds        = 400
	)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("NEFIA_CRASH_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("NEFIA_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (NEFIA_CRASH_SEED=%d repeats its choices)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	led := newLedger()
	led.ackIssue(led.tryIssue("ops"), "setup", issueOut(t, c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", c.outDir(), "--json")))
	dirs := []string{c.outDir(), filepath.Join(c.stateDir, "clients")}

	cr := &crashRun{t: t, c: c, led: led, rng: rng}
	start := time.Now()
	cr.calibrate()
	var torn int // times the trail came to end in a torn line
	wasTorn := false
	for round := 0; cr.kills < wantKills || cr.gatewayKills < wantGatewayKills; round++ {
		if round == maxRounds {
			t.Fatalf("only %d kills (%d of a gateway) in %d rounds: the processes finish before any kill lands", cr.kills, cr.gatewayKills, round)
		}
		if round%3 == 2 {
			cr.gatewayRound()
		} else {
			cr.cliRound()
		}
		if t.Failed() {
			t.FailNow()
		}
		rep := checkState(t, c, led, dirs, true, fmt.Sprintf("round %d, after %d kills", round, cr.kills))
		if rep.tornAudit && !wasTorn {
			torn++ // a writer died mid-line
		}
		wasTorn = rep.tornAudit
		if !wasTorn && round%8 == 4 {
			tearTrail(t, c, rng)
			torn++
			wasTorn = true
		}
		cr.candidates = rep.unrevoked("ops")
	}

	// A writer that runs to the end opens the trail and cuts a torn tail;
	// after it the whole chain must verify, with no break at all.
	out, errOut, code := cr.runCLI("mtls", "issue-client", "--name", "crash-final", "--out-dir", c.outDir(), "--json")
	if code != 0 {
		t.Fatalf("issue after the crash loop: exit %d\n%s", code, errOut)
	}
	led.ackIssue(led.tryIssue("crash-final"), "cli", issueOut(t, out))
	rep := checkState(t, c, led, dirs, false, "final")
	if rep.recovered < torn {
		t.Errorf("the trail ended in a torn line %d times but records audit.recovered %d times", torn, rep.recovered)
	}
	t.Logf("%d SIGKILLs (%d CLI processes, %d gateways) in %v; %d CLI runs and %d tool calls acknowledged; "+
		"%d issued, %d revoked, %d audit records; torn audit tails %d, audit.recovered records %d; %d temp files left by killed writers",
		cr.kills, cr.kills-cr.gatewayKills, cr.gatewayKills, time.Since(start).Round(time.Millisecond), cr.cliAcks, cr.mcpAcks,
		len(rep.inventory), len(rep.revoked), rep.records, torn, rep.recovered, rep.tempFiles)
}

// tearTrail leaves the audit trail as a crash in the middle of writing a
// record would: part of a line and no newline. SIGKILL alone hardly ever does
// (a record is one small write(2), which a signal does not split), so the
// test makes the tear itself, at a moment of its choosing, for the next
// writer, killed at a random moment like every other, to cut off and record.
func tearTrail(t *testing.T, c *cli, rng *rand.Rand) {
	t.Helper()
	path := filepath.Join(c.stateDir, "audit", audit.TrailFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	last := lines[len(lines)-1]
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(last[:1+rng.IntN(len(last)-1)]); err != nil {
		t.Fatal(err)
	}
}

// crashRun is the state of TestCrashConsistency's kill loop.
type crashRun struct {
	t   *testing.T
	c   *cli
	led *ledger
	rng *rand.Rand

	span         time.Duration // how long an uninterrupted CLI process lives; kills are aimed inside it
	kills        int
	gatewayKills int
	cliAcks      int
	mcpAcks      int
	cliNames     []string // names issued by CLI, for forced re-issues
	mcpNames     []string // names issued over MCP
	candidates   []string // serials in the inventory and not revoked, as last checked
	next         int
}

func (cr *crashRun) newName(prefix string) string {
	cr.next++
	return fmt.Sprintf("%s-%d", prefix, cr.next)
}

// runCLI runs the binary to completion.
func (cr *crashRun) runCLI(args ...string) (string, string, int) {
	cmd := exec.Command(nefiaBin, args...)
	cmd.Env = childEnv(cr.c)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	} else if err != nil {
		cr.t.Fatalf("run nefia: %v", err)
	}
	return stdout.String(), stderr.String(), 0
}

// calibrate times an uninterrupted issuance, forced re-issuance and
// revocation, so that kills can be aimed across a whole process's life
// (timing only the processes that beat their kill would aim ever earlier).
func (cr *crashRun) calibrate() {
	t := cr.t
	name := cr.newName("crash-cli")
	for _, force := range []bool{false, true} {
		attempt := cr.led.tryIssue(name)
		began := time.Now()
		args := []string{"mtls", "issue-client", "--name", name, "--out-dir", cr.c.outDir(), "--json"}
		if force {
			args = append(args, "--force")
		}
		out, errOut, code := cr.runCLI(args...)
		if code != 0 {
			t.Fatalf("nefia %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		cr.span = max(cr.span, time.Since(began))
		cr.led.ackIssue(attempt, "cli", issueOut(t, out))
		cr.cliAcks++
	}
	cr.cliNames = append(cr.cliNames, name)
}

// cliOp is one CLI process of a round and what to do with its output if it
// finishes before its kill.
type cliOp struct {
	args []string
	ack  func(stdout string)
}

// cliRound runs an issuance, a forced re-issuance of an existing name and a
// revocation as three concurrent processes, each killed at its own random
// moment within about a process's lifetime (some finish first).
func (cr *crashRun) cliRound() {
	t, led := cr.t, cr.led
	var ops []cliOp
	name := cr.newName("crash-cli")
	attempt := led.tryIssue(name)
	ops = append(ops, cliOp{
		args: []string{"mtls", "issue-client", "--name", name, "--duration", "1h", "--out-dir", cr.c.outDir(), "--json"},
		ack: func(out string) {
			led.ackIssue(attempt, "cli", issueOut(t, out))
			cr.cliNames = append(cr.cliNames, name)
		},
	})
	if len(cr.cliNames) > 0 {
		again := cr.cliNames[cr.rng.IntN(len(cr.cliNames))]
		attempt := led.tryIssue(again)
		ops = append(ops, cliOp{
			args: []string{"mtls", "issue-client", "--name", again, "--role", "agent", "--out-dir", cr.c.outDir(), "--force", "--json"},
			ack:  func(out string) { led.ackIssue(attempt, "cli", issueOut(t, out)) },
		})
	}
	if len(cr.candidates) > 0 {
		serial := cr.candidates[cr.rng.IntN(len(cr.candidates))]
		led.tryRevoke(serial)
		ops = append(ops, cliOp{
			args: []string{"mtls", "revoke", "--serial", spellSerial(serial, cr.rng), "--reason", "crash test", "--json"},
			ack:  func(out string) { led.ackRevoke(revokeOut(t, out), "cli") },
		})
	}

	type result struct {
		stdout, stderr string
		state          *os.ProcessState
		killed         bool
	}
	results := make([]result, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		delay := time.Duration(cr.rng.Int64N(int64(cr.span)*3/2 + 1))
		wg.Go(func() {
			cmd := exec.Command(nefiaBin, op.args...)
			cmd.Env = childEnv(cr.c)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Errorf("start nefia: %v", err)
				return
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			timer := time.NewTimer(delay)
			defer timer.Stop()
			select {
			case <-exited:
			case <-timer.C:
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-exited
			}
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			results[i] = result{stdout: stdout.String(), stderr: stderr.String(), state: cmd.ProcessState,
				killed: ws.Signaled() && ws.Signal() == syscall.SIGKILL}
		})
	}
	wg.Wait()
	for i, r := range results {
		switch {
		case r.state == nil:
		case r.killed:
			cr.kills++
		case r.state.ExitCode() == 0:
			cr.cliAcks++
			ops[i].ack(r.stdout)
		default:
			t.Errorf("nefia %s: exit %d without being killed\n%s", strings.Join(ops[i].args, " "), r.state.ExitCode(), r.stderr)
		}
	}
}

// gatewayRound starts `nefia mcp serve`, issues and revokes over MCP from
// two concurrent callers, and kills the gateway at a random moment.
func (cr *crashRun) gatewayRound() {
	t, led := cr.t, cr.led
	g := startGateway(t, cr.c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialCtx, dialCancel := context.WithTimeout(ctx, 20*time.Second)
	mc, err := dialMCP(dialCtx, g.addr, cr.c.outDir(), "ops")
	dialCancel()
	if err != nil {
		t.Fatalf("connect to the gateway: %v\n%s", err, g.log)
	}
	defer mc.Close()

	var mu sync.Mutex // guards the crashRun fields the callers touch
	issuer := rand.New(rand.NewPCG(cr.rng.Uint64(), 1))
	revoker := rand.New(rand.NewPCG(cr.rng.Uint64(), 2))
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			mu.Lock()
			name, force := cr.newName("crash-mcp"), false
			if len(cr.mcpNames) > 0 && issuer.IntN(3) == 0 {
				name, force = cr.mcpNames[issuer.IntN(len(cr.mcpNames))], true
			}
			mu.Unlock()
			attempt := led.tryIssue(name)
			res, err := callTool(ctx, mc, "nefia.mtls.issue_client", map[string]any{"name": name, "duration": "1h", "force": force})
			if err != nil {
				return // the gateway is gone: unacknowledged
			}
			led.ackIssue(attempt, "mcp", decodeInto[issueResult](t, res))
			mu.Lock()
			cr.mcpAcks++
			if !force {
				cr.mcpNames = append(cr.mcpNames, name)
			}
			mu.Unlock()
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			mu.Lock()
			if len(cr.candidates) == 0 {
				mu.Unlock()
				return
			}
			serial := cr.candidates[revoker.IntN(len(cr.candidates))]
			mu.Unlock()
			led.tryRevoke(serial)
			res, err := callTool(ctx, mc, "nefia.mtls.revoke", map[string]any{"serial": spellSerial(serial, revoker), "reason": "crash test"})
			if err != nil {
				return
			}
			led.ackRevoke(decodeInto[revokeResult](t, res), "mcp")
			mu.Lock()
			cr.mcpAcks++
			mu.Unlock()
		}
	})

	timer := time.NewTimer(time.Duration(cr.rng.Int64N(int64(400 * time.Millisecond))))
	select {
	case <-timer.C:
		if g.kill() {
			cr.gatewayKills++
			cr.kills++
		}
	case <-g.done:
		timer.Stop()
		t.Errorf("gateway exited on its own: %v\n%s", g.err, g.log)
	}
	cancel() // unblocks the call in flight, whose answer never came
	mc.Close()
	wg.Wait()
}

// spellSerial writes a serial the way an operator might: canonical, upper
// case, or openssl's colon-separated octets. Every form must name the same
// certificate.
func spellSerial(serial string, rng *rand.Rand) string {
	switch rng.IntN(3) {
	case 1:
		return strings.ToUpper(serial)
	case 2:
		s := serial
		if len(s)%2 == 1 {
			s = "0" + s
		}
		var parts []string
		for i := 0; i < len(s); i += 2 {
			parts = append(parts, s[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	return serial
}

// childEnv is the environment of a nefia child process working on c's state
// dir and config. A -race build's runtime otherwise sleeps for a second at
// exit (GORACE atexit_sleep_ms, default 1000), which would dominate tests
// that run hundreds of short processes.
func childEnv(c *cli) []string {
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config, "GORACE="+gorace)
}

// gatewayProc is `nefia mcp serve` running as a child process.
type gatewayProc struct {
	cmd  *exec.Cmd
	addr string
	log  *logWatcher
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // Wait's result, once done is closed
}

// startGateway starts the gateway on 127.0.0.1:0 and waits until it reports
// its address. The test's cleanup kills it if it is still running.
func startGateway(t *testing.T, c *cli) *gatewayProc {
	t.Helper()
	w := &logWatcher{ready: make(chan string, 1)}
	cmd := exec.Command(nefiaBin, "mcp", "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = childEnv(c)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{cmd: cmd, log: w, done: make(chan struct{})}
	go func() { g.err = cmd.Wait(); close(g.done) }()
	t.Cleanup(func() { g.kill() })
	select {
	case g.addr = <-w.ready:
		return g
	case <-g.done:
		t.Fatalf("gateway exited before listening: %v\n%s", g.err, w)
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not report its address in 30s\n%s", w)
	}
	return nil
}

// kill sends SIGKILL and waits for the process; it reports whether the
// signal is what ended it.
func (g *gatewayProc) kill() bool {
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.done
	ws, _ := g.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// logWatcher is a gateway's stderr: it keeps the log for failure messages and
// reports the listening address from the JSON log line that carries it.
type logWatcher struct {
	ready chan string
	mu    sync.Mutex
	buf   bytes.Buffer
	seen  int // bytes of buf already scanned for complete lines
}

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		rest := w.buf.Bytes()[w.seen:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.seen += i + 1
		var rec struct{ Msg, Addr string }
		if json.Unmarshal(rest[:i], &rec) == nil && rec.Msg == "gateway listening" {
			select {
			case w.ready <- rec.Addr:
			default:
			}
		}
	}
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// dialMCP connects to a gateway with the certificate NAME.crt/NAME.key and
// ca.crt from certDir and completes the MCP initialize handshake.
func dialMCP(ctx context.Context, addr, certDir, name string) (*client.Client, error) {
	kp, err := tls.LoadX509KeyPair(filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(certDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	d := tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	mc := client.NewClient(transport.NewIO(conn, conn, io.NopCloser(strings.NewReader(""))))
	if err := mc.Start(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		mc.Close()
		return nil, err
	}
	return mc, nil
}

// callTool calls a tool and returns its structured result; a tool error is
// an error too.
func callTool(ctx context.Context, mc *client.Client, name string, args map[string]any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := mc.CallTool(ctx, req)
	if err != nil {
		return nil, err
	}
	if res.IsError {
		return nil, fmt.Errorf("%s: tool error: %v", name, res.Content)
	}
	return res.StructuredContent, nil
}

// issueResult is what both `issue-client --json` and the issue_client tool
// return, as far as the ledger needs it.
type issueResult struct {
	Serial      string          `json:"serial"`
	Name        string          `json:"name"`
	Fingerprint string          `json:"fingerprint"`
	Files       pki.BundlePaths `json:"files"`
}

// revokeResult is what both `revoke --json` and the revoke tool return.
type revokeResult struct {
	Serial         string `json:"serial"`
	AlreadyRevoked bool   `json:"already_revoked"`
}

func decodeInto[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	data, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(data, &out)
	}
	if err != nil {
		t.Errorf("decode %T from %v: %v", out, v, err)
	}
	return out
}

func issueOut(t *testing.T, stdout string) issueResult {
	t.Helper()
	var r issueResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Serial == "" {
		t.Errorf("issue-client --json printed %q (%v)", stdout, err)
	}
	return r
}

func revokeOut(t *testing.T, stdout string) revokeResult {
	t.Helper()
	var r revokeResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Serial == "" {
		t.Errorf("revoke --json printed %q (%v)", stdout, err)
	}
	return r
}

// ledger records what writers attempted and what they acknowledged. An
// acknowledged operation must be in the state directory and on the trail; an
// attempted one may or may not be; one never attempted must not be. It is
// safe for concurrent use.
type ledger struct {
	mu       sync.Mutex
	seq      int
	attempts map[string]int       // name -> latest issuance attempt (names are unique across bundle dirs)
	names    map[string]bool      // every name an issuance was attempted for
	issued   map[string]issueAck  // serial -> acknowledged issuance
	revokes  map[string]bool      // every serial a revocation was attempted for
	revoked  map[string]revokeAck // serial -> acknowledged revocation
}

type issueAck struct {
	issueResult
	writer  string
	attempt int
}

type revokeAck struct {
	writer  string
	already bool
}

func newLedger() *ledger {
	return &ledger{attempts: map[string]int{}, names: map[string]bool{}, issued: map[string]issueAck{},
		revokes: map[string]bool{}, revoked: map[string]revokeAck{}}
}

// tryIssue notes that an issuance of name is about to be attempted and
// returns its attempt number. A name is only ever issued into one bundle
// directory.
func (l *ledger) tryIssue(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.attempts[name] = l.seq
	l.names[name] = true
	return l.seq
}

func (l *ledger) ackIssue(attempt int, writer string, r issueResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.issued[r.Serial] = issueAck{issueResult: r, writer: writer, attempt: attempt}
}

func (l *ledger) tryRevoke(serial string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revokes[serial] = true
}

func (l *ledger) ackRevoke(r revokeResult, writer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.revoked[r.Serial]; ok && !prev.already {
		return // keep the acknowledgment that did the revoking
	}
	l.revoked[r.Serial] = revokeAck{writer: writer, already: r.AlreadyRevoked}
}

// stateReport is what checkState found.
type stateReport struct {
	inventory []pki.ListedCert
	revoked   map[string]bool
	records   int // complete audit records
	recovered int // audit.recovered records
	tornAudit bool
	tempFiles int // atomic-write temp files left by killed writers
	// issuedBy and revokedBy map serials to the transport of their "ok"
	// audit record.
	issuedBy, revokedBy map[string]string
}

// unrevoked returns the serials of the inventory not yet revoked, except
// those of the names given.
func (r stateReport) unrevoked(except ...string) []string {
	var out []string
	for _, c := range r.inventory {
		if !r.revoked[c.Serial] && !slices.Contains(except, c.Name) {
			out = append(out, c.Serial)
		}
	}
	return out
}

// trailRecord is the part of an audit record checkState reads.
type trailRecord struct {
	Event     string         `json:"event"`
	Outcome   string         `json:"outcome"`
	Transport string         `json:"transport"`
	Args      map[string]any `json:"args"`
	Result    map[string]any `json:"result"`
}

// checkState holds c's state directory and the bundle directories to led.
// With allowTorn, an audit trail whose last line is torn (no newline) is
// reported rather than failed: a killed writer may leave one, and the next
// writer cuts it off. Any other break fails the test.
func checkState(t *testing.T, c *cli, led *ledger, bundleDirs []string, allowTorn bool, when string) stateReport {
	t.Helper()
	led.mu.Lock()
	defer led.mu.Unlock()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s", when, fmt.Sprintf(format, args...))
	}
	var rep stateReport

	// Every state file parses.
	loaded, err := config.Load(c.config)
	if err != nil || !loaded.Exists || !loaded.MCP.MTLS.Enabled {
		fail("nefia.yaml: %+v, %v", loaded, err)
	}
	store := pki.NewStore(c.stateDir)
	caCert, _, err := store.LoadCA()
	if err != nil {
		fail("CA: %v", err)
	}
	if rep.inventory, err = store.List(); err != nil {
		fail("inventory: %v", err)
	}
	revs, err := store.Revocations()
	if err != nil {
		fail("revocation store: %v", err)
	}

	// The inventory holds every acknowledged issuance and nothing never
	// attempted; the revocation store likewise.
	inv := map[string]pki.ListedCert{}
	for _, e := range rep.inventory {
		if _, dup := inv[e.Serial]; dup {
			fail("serial %s is in the inventory twice", e.Serial)
		}
		if !led.names[e.Name] {
			fail("inventory holds %q (%s), which nobody asked for", e.Name, e.Serial)
		}
		inv[e.Serial] = e
	}
	for serial, ack := range led.issued {
		e, ok := inv[serial]
		if !ok {
			fail("acknowledged issuance %s (%s, by %s) is not in the inventory", serial, ack.Name, ack.writer)
		}
		if e.Name != ack.Name || e.Fingerprint != ack.Fingerprint {
			fail("inventory entry %s is %s/%s, acknowledged as %s/%s", serial, e.Name, e.Fingerprint, ack.Name, ack.Fingerprint)
		}
	}
	rep.revoked = map[string]bool{}
	for _, r := range revs {
		if rep.revoked[r.Serial] {
			fail("serial %s is in the revocation store twice", r.Serial)
		}
		rep.revoked[r.Serial] = true
		if _, ok := inv[r.Serial]; !ok {
			fail("revoked serial %s is not in the inventory", r.Serial)
		}
		if !led.revokes[r.Serial] {
			fail("serial %s is revoked, but nobody asked for it", r.Serial)
		}
	}
	for serial, ack := range led.revoked {
		if !rep.revoked[serial] {
			fail("acknowledged revocation of %s (by %s) is not in the revocation store", serial, ack.writer)
		}
	}

	// Every client certificate on disk sits beside its own key, chains to
	// the CA and is in the inventory; the bundle of an acknowledged issuance
	// that no later attempt may have replaced is that certificate.
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	caPEM, _ := os.ReadFile(store.Path(pki.CACertFile))
	onDisk := map[string]string{} // name -> fingerprint of NAME.crt
	for _, dir := range bundleDirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			fail("%v", err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if strings.Contains(e.Name(), ".tmp-") {
				rep.tempFiles++
				continue
			}
			if !strings.HasSuffix(e.Name(), ".crt") {
				continue
			}
			certPEM, err := os.ReadFile(path)
			if err != nil {
				fail("%v", err)
			}
			if e.Name() == "ca.crt" {
				if !bytes.Equal(certPEM, caPEM) {
					fail("%s is not the CA certificate", path)
				}
				continue
			}
			keyPEM, err := os.ReadFile(strings.TrimSuffix(path, ".crt") + ".key")
			if err != nil {
				fail("certificate %s has no key: %v", path, err)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				fail("certificate %s does not match its key: %v", path, err)
			}
			cert, err := pki.ParseCertificatePEM(certPEM)
			if err != nil {
				fail("%s: %v", path, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				fail("%s does not verify against the CA: %v", path, err)
			}
			entry, ok := inv[pki.FormatSerial(cert.SerialNumber)]
			if !ok || entry.Fingerprint != pki.Fingerprint(cert) || entry.Name != cert.Subject.CommonName {
				fail("%s (serial %s) is not in the inventory as issued", path, pki.FormatSerial(cert.SerialNumber))
			}
			onDisk[entry.Name] = entry.Fingerprint
		}
	}
	for serial, ack := range led.issued {
		if led.attempts[ack.Name] != ack.attempt {
			continue // a later attempt may have replaced the bundle
		}
		if onDisk[ack.Name] != ack.Fingerprint {
			fail("the bundle of acknowledged issuance %s (%s) is missing or holds another certificate (%q)", serial, ack.Files.Cert, onDisk[ack.Name])
		}
	}
	for _, dir := range []string{c.stateDir, filepath.Join(c.stateDir, "audit")} {
		tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		rep.tempFiles += len(tmps)
	}

	// The audit chain verifies; only a torn last line may break it.
	auditDir := filepath.Join(c.stateDir, "audit")
	key, err := audit.LoadKey(filepath.Join(auditDir, audit.KeyFile))
	if err != nil {
		fail("audit key: %v", err)
	}
	// A running gateway may append (a batched tool_call record, flushed
	// within audit.DefaultSyncInterval) between reading the trail and
	// verifying it; holding the trail's lock, which every append takes,
	// makes both see the same records (issue 10 item 16: "verify counted
	// N, the trail has N-1 lines" was this race, not a lost record).
	unlock, err := atomicfile.Lock(filepath.Join(auditDir, ".audit.lock"))
	if err != nil {
		fail("lock the audit trail: %v", err)
	}
	trail, err := os.ReadFile(filepath.Join(auditDir, audit.TrailFile))
	if err != nil {
		unlock()
		fail("%v", err)
	}
	lines := bytes.Split(trail, []byte("\n"))
	complete := lines[:len(lines)-1] // what follows the last newline is torn (or empty)
	n, err := audit.VerifyDir(auditDir, key)
	unlock()
	if err != nil {
		var ve *audit.VerifyError
		torn := len(lines[len(lines)-1]) > 0
		if !errors.As(err, &ve) || !torn || ve.File != filepath.Join(auditDir, audit.TrailFile) || ve.Line != len(lines) {
			fail("audit chain: %v", err)
		}
		if !allowTorn {
			fail("audit trail still ends in a torn line: %v", err)
		}
		rep.tornAudit = true
		t.Logf("%s: torn last audit line detected and reported: %v", when, err)
	}
	if n != len(complete) {
		fail("audit verify counted %d records, the trail has %d complete lines", n, len(complete))
	}
	rep.records = n

	// Acknowledged operations are on the trail, and nothing changed without
	// its "started" record first (no audit, no action).
	started := map[string]bool{} // "issue:NAME", "revoke:SERIAL"
	rep.issuedBy, rep.revokedBy = map[string]string{}, map[string]string{}
	okIssue, okRevoke := rep.issuedBy, rep.revokedBy
	for _, line := range complete {
		var r trailRecord
		if err := json.Unmarshal(line, &r); err != nil {
			fail("audit line %q: %v", line, err)
		}
		switch {
		case r.Event == audit.EventRecovered:
			rep.recovered++
		case r.Event == audit.EventIssueClient && r.Outcome == audit.OutcomeStarted:
			started["issue:"+fmt.Sprint(r.Args["name"])] = true
		case r.Event == audit.EventRevoke && r.Outcome == audit.OutcomeStarted:
			if s, err := pki.ParseSerial(fmt.Sprint(r.Args["serial"])); err == nil {
				started["revoke:"+s] = true
			}
		case r.Event == audit.EventIssueClient && r.Outcome == audit.OutcomeOK:
			okIssue[fmt.Sprint(r.Result["serial"])] = r.Transport
		case r.Event == audit.EventRevoke && r.Outcome == audit.OutcomeOK:
			okRevoke[fmt.Sprint(r.Result["serial"])] = r.Transport
		}
	}
	for _, e := range rep.inventory {
		if !started["issue:"+e.Name] {
			fail("%s (%s) was issued without a started record on the audit trail", e.Serial, e.Name)
		}
	}
	for serial := range rep.revoked {
		if !started["revoke:"+serial] {
			fail("%s was revoked without a started record on the audit trail", serial)
		}
	}
	for serial, ack := range led.issued {
		if _, ok := okIssue[serial]; !ok {
			fail("acknowledged issuance %s (by %s) has no ok record on the audit trail", serial, ack.writer)
		}
	}
	for serial, ack := range led.revoked {
		if _, ok := okRevoke[serial]; !ok {
			fail("acknowledged revocation %s (by %s) has no ok record on the audit trail", serial, ack.writer)
		}
	}
	return rep
}
