package bridge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/bridge"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/renewal"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// fakeClock is a bridge.Clock whose timers fire only when the test says:
// a renewal schedule of hours runs in milliseconds.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now(), added: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	select {
	case c.added <- struct{}{}:
	default:
	}
	return ch
}

// fire waits until the bridge waits on the clock, moves the clock to the
// earliest deadline and fires it; it returns how far the clock moved.
func (c *fakeClock) fire(t *testing.T) time.Duration {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		if len(c.waiters) > 0 {
			slices.SortFunc(c.waiters, func(a, b waiter) int { return a.at.Compare(b.at) })
			w := c.waiters[0]
			c.waiters = c.waiters[1:]
			moved := max(w.at.Sub(c.now), 0)
			c.now = c.now.Add(moved)
			c.mu.Unlock()
			w.ch <- w.at
			return moved
		}
		c.mu.Unlock()
		select {
		case <-c.added:
		case <-deadline:
			t.Fatal("the bridge did not wait on its clock within 20s")
		}
	}
}

// fireSoon fires the earliest timer if it is due within limit (a retry,
// not the next renewal), reporting whether it did.
func (c *fakeClock) fireSoon(limit time.Duration) bool {
	c.mu.Lock()
	slices.SortFunc(c.waiters, func(a, b waiter) int { return a.at.Compare(b.at) })
	if len(c.waiters) == 0 || c.waiters[0].at.Sub(c.now) > limit {
		c.mu.Unlock()
		return false
	}
	w := c.waiters[0]
	c.waiters = c.waiters[1:]
	c.now = maxTime(c.now, w.at)
	c.mu.Unlock()
	w.ch <- w.at
	return true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// awaitFiring waits for ch, firing the bridge's timers meanwhile (the
// schedule wakes every minute), as a clock running fast would.
func awaitFiring(t *testing.T, c *fakeClock, ch <-chan struct{}, what string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-ch:
			return
		case <-deadline:
			t.Fatalf("no %q within 20s", what)
		default:
		}
		if !c.fireSoon(24 * time.Hour) {
			select {
			case <-ch:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
}

// await waits for a log message the bridge sends to events.
func await(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("no %q within 20s", what)
	}
}

// TestBridgeRenewsUnderLoad (issue 13 item 2, done means, with an injected
// clock): the bridge renews through the real gateway's nefia.mtls.renew
// over its own mTLS, four times, while the client calls a tool without a
// pause. No call fails; after each renewal the calls are made with the new
// certificate (a new session of the same client); the audit trail has one
// mtls.renew per renewal; the files hold the newest pair, 0600.
func TestBridgeRenewsUnderLoad(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	iss := gw.Issue("bot", pki.RoleAgent, time.Hour)
	dir := t.TempDir()
	files := renewal.Files{Cert: filepath.Join(dir, "bot.crt"), Key: filepath.Join(dir, "bot.key")}
	roots := pkitest.CAPool(t, gw.Store)
	var mu sync.Mutex // guards latencies and calledAt: renew runs on the bridge's goroutine
	var latencies []time.Duration
	var calledAt []time.Time // on the bridge's clock
	var clock *fakeClock
	renewBegan := make(chan struct{}, 16)
	renew := func(ctx context.Context, cur tls.Certificate) (tls.Certificate, error) {
		mu.Lock()
		calledAt = append(calledAt, clock.Now())
		mu.Unlock()
		renewBegan <- struct{}{}
		began := time.Now()
		res, err := renewal.Renew(ctx, renewal.Request{Addr: gw.Addr, Name: "bot", Files: files,
			TLS: &tls.Config{Certificates: []tls.Certificate{cur}, RootCAs: roots, MinVersion: tls.VersionTLS13}})
		mu.Lock()
		latencies = append(latencies, time.Since(began))
		mu.Unlock()
		return res.KeyPair, err
	}
	clock = newFakeClock()
	began := clock.Now()
	r := start(t, gw.Addr, gw.Store, pkitest.KeyPair(t, iss), func(o *bridge.Options) { o.Renew, o.Clock = renew, clock })
	switched := r.events.on("switched to a connection made with the renewed certificate")
	c := mcpClient(t, r)

	// The client calls status back to back, as fast as answers come.
	var calls, failed atomic.Int64
	var failure atomic.Value
	serials := make(chan string, 4096)
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := c.CallTool(ctx, callStatus())
			cancel()
			calls.Add(1)
			if err != nil || res.IsError {
				failed.Add(1)
				failure.Store(errors.Join(err, errors.New(resultText(res))))
				continue
			}
			caller, _ := res.StructuredContent.(map[string]any)["caller"].(map[string]any)
			s, _ := caller["serial"].(string)
			select {
			case serials <- s:
			default:
			}
		}
	}()

	const renewals = 4
	want := []string{iss.Serial}
	for i := range renewals {
		// Fire the schedule's timers only until renewal i+1 has begun: firing
		// on while the switch completes would start the next renewal early.
		awaitFiring(t, clock, renewBegan, "renewal")
		await(t, switched, "switch")
		if i == 0 {
			mu.Lock()
			first := calledAt[0].Sub(began)
			mu.Unlock()
			if first < 37*time.Minute || first > 44*time.Minute {
				t.Errorf("first renewal %v after start, want two thirds of the hour ± 5%%", first)
			}
		}
		leaf := readLeaf(t, files.Cert)
		want = append(want, pki.FormatSerial(leaf.SerialNumber))
		// A call made now must run on the new certificate.
		drainUntil(t, serials, want[len(want)-1])
	}
	close(stop)
	<-loopDone

	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed; one: %v", n, calls.Load(), failure.Load())
	}
	var renewed []string
	for _, rec := range gw.AuditRecords() {
		if rec.Event == audit.EventRenew && rec.Outcome == audit.OutcomeOK && rec.Agent != nil {
			renewed = append(renewed, rec.Agent.Serial)
		}
	}
	if !slices.Equal(renewed, want[:renewals]) {
		t.Errorf("mtls.renew records by serial %v, want each certificate renewing once: %v", renewed, want[:renewals])
	}
	for _, f := range []string{files.Cert, files.Key} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	if _, err := tls.LoadX509KeyPair(files.Cert, files.Key); err != nil {
		t.Errorf("the files are not a matching pair: %v", err)
	}
	mu.Lock()
	lat := slices.Sorted(slices.Values(latencies))
	mu.Unlock()
	t.Logf("%d calls, none failed, across %d renewals; renewal latency median %v (min %v, max %v)",
		calls.Load(), renewals, lat[len(lat)/2], lat[0], lat[len(lat)-1])
	c.Close()
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// drainUntil reads the serials of answered calls until one is want.
func drainUntil(t *testing.T, serials <-chan string, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case s := <-serials:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("no call answered for serial %s within 20s", want)
		}
	}
}

// TestBridgeRenewalRetriesThenExpires: a renewal that keeps failing is
// retried with a bounded, doubling backoff, logged at warn each time, and
// when the certificate expires first Run ends with ErrExpired naming it.
func TestBridgeRenewalRetriesThenExpires(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	iss := gw.Issue("bot", pki.RoleAgent, time.Hour)
	var attempts atomic.Int64
	var tried []time.Time // on the bridge's clock
	var clock *fakeClock
	renew := func(context.Context, tls.Certificate) (tls.Certificate, error) {
		tried = append(tried, clock.Now())
		attempts.Add(1)
		return tls.Certificate{}, errors.New("gateway unreachable\n(second line)")
	}
	clock = newFakeClock()
	r := start(t, gw.Addr, gw.Store, pkitest.KeyPair(t, iss), func(o *bridge.Options) { o.Renew, o.Clock = renew, clock })
	retried := r.events.on("client certificate renewal failed; retrying")
	c := mcpClient(t, r)
	status(t, c)

	warnings := 0
	ended := make(chan struct{})
	var err error
	go func() {
		err = <-r.done
		close(ended)
	}()
	deadline := time.After(20 * time.Second)
	for running := true; running; {
		select {
		case <-ended:
			running = false
		case <-retried: // one per attempt; drained as they come, the buffer never fills
			warnings++
		case <-deadline:
			t.Fatal("Run did not end within 20s")
		default:
			if !clock.fireSoon(24 * time.Hour) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	for len(retried) > 0 {
		<-retried
		warnings++
	}
	if !errors.Is(err, bridge.ErrExpired) || !strings.Contains(err.Error(), `"bot"`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Run = %v, want one line wrapping ErrExpired naming the certificate", err)
	}
	n := attempts.Load()
	if n < 10 || warnings != int(n) {
		t.Errorf("%d attempts, %d retry warnings: want one warning per attempt, and at least 10 attempts", n, warnings)
	}
	var gaps []time.Duration
	for i := 1; i < len(tried); i++ {
		gaps = append(gaps, tried[i].Sub(tried[i-1]))
	}
	if gaps[0] != time.Second || gaps[1] != 2*time.Second {
		t.Errorf("backoff %v, want it to start at 1s, 2s", gaps[:2])
	}
	for i, g := range gaps {
		if g > 3*time.Minute || (i > 0 && g < gaps[i-1]) {
			t.Errorf("backoff %v: want it doubling up to the cap (a twentieth of the lifetime, 3m)", gaps)
			break
		}
	}
	if total := clock.Now().Sub(iss.NotAfter); total < 0 || total > time.Second {
		t.Errorf("Run ended %v after the expiry, want at it", total)
	}
	c.Close()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitWithin(t, 20*time.Second, cond)
}

// TestBridgeRenewalLetsInFlightRequestsFinish: a request in flight on the
// old connection when the renewal switches connections is answered there;
// the next request goes on the new connection, which presents the renewed
// certificate.
func TestBridgeRenewalLetsInFlightRequestsFinish(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	first := pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)
	next := pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour))
	release := make(chan struct{})
	slowArrived := make(chan struct{})
	secondCert := make(chan string, 1)
	addr := fakeGateway(t, store,
		func(c *tls.Conn, lines *bufio.Reader) { // the first connection: holds id 1
			answerProbe(c, lines)
			if line, _ := lines.ReadString('\n'); !strings.Contains(line, `"id":1`) {
				return
			}
			close(slowArrived)
			<-release
			_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":1,"result":{"slow":true}}`+"\n")
			_, _ = lines.ReadString('\n') // the bridge closed its write side: EOF
		},
		func(c *tls.Conn, lines *bufio.Reader) { // made with the renewed certificate
			answerProbe(c, lines)
			secondCert <- pki.FormatSerial(c.ConnectionState().PeerCertificates[0].SerialNumber)
			if line, _ := lines.ReadString('\n'); strings.Contains(line, `"id":2`) {
				_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":2,"result":{"fast":true}}`+"\n")
			}
			_, _ = lines.ReadString('\n')
		})
	called := make(chan struct{}, 1)
	renew := func(context.Context, tls.Certificate) (tls.Certificate, error) {
		called <- struct{}{}
		return next, nil
	}
	clock := newFakeClock()
	r := start(t, addr, store, pkitest.KeyPair(t, first), func(o *bridge.Options) { o.Renew, o.Clock = renew, clock })
	switched := r.events.on("switched to a connection made with the renewed certificate")
	out := bufio.NewReader(r.out)

	go io.WriteString(r.in, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`+"\n")
	<-slowArrived
	awaitFiring(t, clock, called, "renewal")
	await(t, switched, "switch")
	if got, want := <-secondCert, pki.FormatSerial(next.Leaf.SerialNumber); got != want {
		t.Errorf("the new connection presented %s, want the renewed %s", got, want)
	}
	go io.WriteString(r.in, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fast"}}`+"\n")
	if m := readLine(t, out); m["id"] != float64(2) || m["error"] != nil {
		t.Fatalf("first answer %v, want id 2 from the new connection", m)
	}
	close(release)
	if m := readLine(t, out); m["id"] != float64(1) || m["error"] != nil {
		t.Fatalf("second answer %v, want id 1 answered on the old connection", m)
	}
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func callStatus() mcp.CallToolRequest {
	req := mcp.CallToolRequest{}
	req.Params.Name = tools.NameStatus
	return req
}

func resultText(res *mcp.CallToolResult) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	return kp.Leaf
}

// TestBridgeRenewalRetriesTheSwitch: when the gateway refuses the
// connection made with the renewed certificate (say, the renewal's own
// connection still fills the client's quota), the bridge carries on with
// the old connection and tries again after a backoff.
func TestBridgeRenewalRetriesTheSwitch(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	first := pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)
	next := pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour))
	serve := func(c *tls.Conn, lines *bufio.Reader) {
		answerProbe(c, lines)
		for {
			line, err := lines.ReadString('\n')
			if err != nil {
				return
			}
			if strings.Contains(line, `"id":`) {
				_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":1,"result":{}}`+"\n")
			}
		}
	}
	refuse := func(c *tls.Conn, _ *bufio.Reader) { _ = c.Handshake() } // admitted by TLS, closed before the probe's answer
	addr := fakeGateway(t, store, serve, refuse, serve)
	called := make(chan struct{}, 1)
	renew := func(context.Context, tls.Certificate) (tls.Certificate, error) {
		called <- struct{}{}
		return next, nil
	}
	clock := newFakeClock()
	r := start(t, addr, store, pkitest.KeyPair(t, first), func(o *bridge.Options) { o.Renew, o.Clock = renew, clock })
	switched := r.events.on("switched to a connection made with the renewed certificate")
	retried := r.events.on("could not connect with the renewed certificate; the current connection carries on, retrying")
	out := bufio.NewReader(r.out)

	awaitFiring(t, clock, called, "renewal") // the first switch is refused
	await(t, retried, "switch retry warning")
	if moved := clock.fire(t); moved != time.Second {
		t.Errorf("switch retried after %v, want 1s", moved)
	}
	await(t, switched, "switch")
	go io.WriteString(r.in, `{"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n")
	if m := readLine(t, out); m["id"] != float64(1) || m["error"] != nil {
		t.Fatalf("answer %v, want id 1 from the new connection", m)
	}
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// suspend models a laptop asleep for d: the wall clock moves on, the
// timers (monotonic) do not, so each fires d later than it would have.
func (c *fakeClock) suspend(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for i := range c.waiters {
		c.waiters[i].at = c.waiters[i].at.Add(d)
	}
}

// TestBridgeRenewsOnTimeAfterASuspend: a machine that slept through the
// renewal time renews within a minute of waking, not a sleep's length
// later (which could be after the expiry).
func TestBridgeRenewsOnTimeAfterASuspend(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	first := pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)
	next := pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour))
	addr := fakeGateway(t, store, func(c *tls.Conn, lines *bufio.Reader) {
		answerProbe(c, lines)
		_, _ = lines.ReadString('\n')
	})
	var calledAt atomic.Value
	called := make(chan struct{}, 1)
	var clock *fakeClock
	renew := func(context.Context, tls.Certificate) (tls.Certificate, error) {
		calledAt.Store(clock.Now())
		called <- struct{}{}
		return next, nil
	}
	clock = newFakeClock()
	began := clock.Now()
	r := start(t, addr, store, pkitest.KeyPair(t, first), func(o *bridge.Options) { o.Renew, o.Clock = renew, clock })

	clock.fire(t) // a minute of the schedule passes awake
	clock.suspend(50 * time.Minute)
	awaitFiring(t, clock, called, "renewal")
	if at := calledAt.Load().(time.Time).Sub(began); at > 52*time.Minute {
		t.Errorf("renewed %v after start, having woken at 51m: want within a minute of waking", at)
	}
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}
