package bridge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"go.uber.org/goleak"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/bridge"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// msgIdleClosed is what the bridge logs when the gateway closed a
// connection with nothing in flight.
const msgIdleClosed = "connection to the gateway closed with nothing in flight; reconnecting at the client's next message"

// running is a bridge started by start: its client-side pipes and result.
type running struct {
	in     *io.PipeWriter // the client's requests
	out    *io.PipeReader // the bridge's output to the client
	done   chan error
	events *events
}

// start runs bridge.Run against addr with cert, trusting the store's CA.
func start(t *testing.T, addr string, store *pki.Store, cert tls.Certificate, adjust ...func(*bridge.Options)) *running {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ev := newEvents()
	opts := bridge.Options{
		Addr:            addr,
		TLS:             &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pkitest.CAPool(t, store)},
		DialTimeout:     5 * time.Second,
		ReconnectWindow: 5 * time.Second,
		DrainTimeout:    5 * time.Second,
		Logger:          slog.New(ev),
	}
	for _, f := range adjust {
		f(&opts)
	}
	r := &running{in: inW, out: outR, done: make(chan error, 1), events: ev}
	go func() {
		err := bridge.Run(context.Background(), inR, outW, opts)
		outW.CloseWithError(io.EOF)
		inR.Close()
		r.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		outR.Close()
	})
	return r
}

// wait returns Run's result.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("bridge.Run did not return within 20s")
		return nil
	}
}

// events is a slog.Handler that announces log messages on a channel, so a
// test can wait for "reconnected" instead of sleeping.
type events struct {
	mu   sync.Mutex
	subs map[string]chan struct{}
}

func newEvents() *events { return &events{subs: map[string]chan struct{}{}} }

func (e *events) on(msg string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.subs[msg] == nil {
		e.subs[msg] = make(chan struct{}, 16)
	}
	return e.subs[msg]
}

func (e *events) Enabled(context.Context, slog.Level) bool { return true }
func (e *events) Handle(_ context.Context, r slog.Record) error {
	ch := e.on(r.Message)
	select {
	case ch <- struct{}{}:
	default:
	}
	return nil
}
func (e *events) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e *events) WithGroup(string) slog.Handler      { return e }

// mcpClient is an initialized mcp-go client speaking through the bridge.
func mcpClient(t *testing.T, r *running) *client.Client {
	t.Helper()
	c := client.NewClient(transport.NewIO(r.out, r.in, io.NopCloser(strings.NewReader(""))))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	req.Params.ClientInfo = mcp.Implementation{Name: "bridge-test", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		t.Fatalf("initialize through the bridge: %v", err)
	}
	return c
}

func status(t *testing.T, c *client.Client) map[string]any {
	t.Helper()
	caller, _ := servertest.CallOK(t, c, tools.NameStatus, nil)["caller"].(map[string]any)
	return caller
}

func noLeaks(t *testing.T) {
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) })
}

func TestBridgeCarriesAnMCPSessionAndReconnectsWhenIdle(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	iss := gw.Issue("ops", pki.RoleOperator, time.Hour)
	r := start(t, gw.Addr, gw.Store, pkitest.KeyPair(t, iss))
	c := mcpClient(t, r)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil || len(list.Tools) != 8 { // nefia.mtls.* and nefia.gateway.*
		t.Fatalf("tools/list: %v %+v", err, list)
	}
	before := status(t, c)
	if before["transport"] != "mtls-stream" || before["serial"] != iss.Serial {
		t.Fatalf("caller = %v", before)
	}

	// The gateway drops the connection while nothing is in flight: the
	// bridge reconnects at the next message and replays initialize, the
	// client notices nothing.
	closed := r.events.on(msgIdleClosed)
	reconnected := r.events.on("reconnected to the gateway")
	if n := gw.CloseSerial(iss.Serial); n != 1 {
		t.Fatalf("CloseSerial = %d", n)
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the bridge did not notice the connection closed")
	}
	after := status(t, c)
	select {
	case <-reconnected:
	default:
		t.Fatal("status answered without a reconnect")
	}
	if after["session_id"] == before["session_id"] || after["serial"] != iss.Serial {
		t.Errorf("after reconnecting: caller %v, before %v: want a new session of the same certificate", after, before)
	}

	// The client closes its end: the bridge ends cleanly.
	c.Close()
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v, want nil after the client closed its input", err)
	}
}

func TestBridgeRefusals(t *testing.T) {
	gw := servertest.Start(t)
	revoked := gw.Issue("gone", pki.RoleAgent, time.Hour)
	if _, err := gw.Store.Revoke(revoked.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	good := gw.Cert("good", pki.RoleAgent)
	foreign := pkitest.NewForeignCA(t)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	tests := []struct {
		name    string
		addr    string
		cert    tls.Certificate
		roots   func(*bridge.Options)
		want    error
		message string
	}{
		{"revoked", gw.Addr, pkitest.KeyPair(t, revoked), nil, bridge.ErrRefused, "bad certificate (the certificate \"gone\", serial " + revoked.Serial + ", is revoked"},
		{"another CA's certificate", gw.Addr, foreign.Sign(t, pkitest.Leaf{CN: "intruder", OU: "operator"}), nil, bridge.ErrRefused, "was not issued by this gateway's CA"},
		{"unreachable", closed, good, nil, bridge.ErrUnreachable, "connection refused"},
		{"gateway not signed by our CA", gw.Addr, good, func(o *bridge.Options) {
			o.TLS.RootCAs = x509Pool(foreign)
		}, bridge.ErrUntrusted, "is it the CA of this gateway?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			var adjust []func(*bridge.Options)
			if tt.roots != nil {
				adjust = append(adjust, tt.roots)
			}
			r := start(t, tt.addr, gw.Store, tt.cert, adjust...)
			err := r.wait(t)
			t.Log(err)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Run = %v, want %v mentioning %q", err, tt.want, tt.message)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

// fakeGateway is a TLS server admitting the store's client certificates
// whose connections are handled by the test, one handler per connection in
// order.
func fakeGateway(t *testing.T, store *pki.Store, handlers ...func(c *tls.Conn, lines *bufio.Reader)) string {
	t.Helper()
	kp := serverPair(t, store)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{kp}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pkitest.CAPool(t, store),
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, h := range handlers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				h(c.(*tls.Conn), bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func serverPair(t *testing.T, store *pki.Store) tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(store.Path(pki.ServerCertFile), store.Path(pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// answerProbe reads the bridge's probe and answers it.
func answerProbe(c *tls.Conn, lines *bufio.Reader) {
	line, err := lines.ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), `"nefia-connect-probe"`) {
		return
	}
	_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":"nefia-connect-probe","result":{}}`+"\n")
}

// readLine reads one line the bridge gave the client.
func readLine(t *testing.T, out *bufio.Reader) map[string]any {
	t.Helper()
	line, err := out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading the bridge's output: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("the bridge wrote a line that is not JSON: %q", line)
	}
	return m
}

func TestBridgeConnectionLostWithARequestInFlight(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	got := make(chan string, 1)
	addr := fakeGateway(t, store, func(c *tls.Conn, lines *bufio.Reader) {
		answerProbe(c, lines)
		line, _ := lines.ReadString('\n')
		got <- line
		// Drop the connection without answering.
	})
	r := start(t, addr, store, pkitest.KeyPair(t, pkitest.Issue(t, store, "ops", pki.RoleOperator, time.Hour)))
	out := bufio.NewReader(r.out)
	go io.WriteString(r.in, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"nefia.mtls.revoke"}}`+"\n")
	<-got
	if m := readLine(t, out); m["id"] != float64(7) || m["error"] == nil {
		t.Errorf("the in-flight request got %v, want a JSON-RPC error for id 7", m)
	}
	if err := r.wait(t); !errors.Is(err, bridge.ErrConnectionLost) || !strings.Contains(err.Error(), "1 request(s) unanswered") {
		t.Errorf("Run = %v, want ErrConnectionLost", err)
	}
}

func TestBridgeCancelledRequestIsNotInFlight(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	cancelled := make(chan struct{})
	addr := fakeGateway(t, store,
		func(c *tls.Conn, lines *bufio.Reader) {
			answerProbe(c, lines)
			lines.ReadString('\n') // the request, never answered
			lines.ReadString('\n') // its cancellation
			close(cancelled)
		},
		func(c *tls.Conn, lines *bufio.Reader) {
			answerProbe(c, lines)
			line, _ := lines.ReadString('\n')
			_, _ = io.WriteString(c, `{"jsonrpc":"2.0","id":"b","result":{"echo":`+line[:len(line)-1]+`}}`+"\n")
			io.Copy(io.Discard, lines) // until the bridge closes its side
		},
	)
	r := start(t, addr, store, pkitest.KeyPair(t, pkitest.Issue(t, store, "ops", pki.RoleOperator, time.Hour)))
	closed := r.events.on(msgIdleClosed)
	out := bufio.NewReader(r.out)
	io.WriteString(r.in, `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}}`+"\n")
	io.WriteString(r.in, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}`+"\n")
	<-cancelled
	select {
	case <-closed:
	case err := <-r.done:
		t.Fatalf("Run = %v, want to reconnect later: a cancelled request is owed no answer", err)
	}
	io.WriteString(r.in, `{"jsonrpc":"2.0","id":"b","method":"ping"}`+"\n")
	if m := readLine(t, out); m["id"] != "b" {
		t.Errorf("after reconnecting got %v", m)
	}
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestBridgeWritesOnlyJSONRPCAndDrainsAfterInputEnds(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	addr := fakeGateway(t, store, func(c *tls.Conn, lines *bufio.Reader) {
		answerProbe(c, lines)
		lines.ReadString('\n')
		// The client has closed its input by now (the bridge half-closed
		// the connection); the answer still reaches it.
		if _, err := lines.ReadString('\n'); !errors.Is(err, io.EOF) {
			return
		}
		io.WriteString(c, "this is not JSON-RPC\n")
		io.WriteString(c, `{"jsonrpc":"2.0","id":1,"result":{}}`+"\n")
	})
	r := start(t, addr, store, pkitest.KeyPair(t, pkitest.Issue(t, store, "ops", pki.RoleOperator, time.Hour)))
	io.WriteString(r.in, `{"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n")
	r.in.Close()
	all, _ := io.ReadAll(r.out)
	if string(all) != `{"jsonrpc":"2.0","id":1,"result":{}}`+"\n" {
		t.Errorf("the client got %q, want only the answer", all)
	}
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestBridgeReportsAnExpiredCertificate(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	caCert, caKey := pkitest.LoadCA(t, gw.Store)
	expired := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "old", OU: "agent", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	r := start(t, gw.Addr, gw.Store, expired)
	if err := r.wait(t); !errors.Is(err, bridge.ErrRefused) || !strings.Contains(err.Error(), `the certificate "old" expired on`) {
		t.Errorf("Run = %v, want ErrRefused naming the expiry", err)
	}
}

func x509Pool(ca *pkitest.ForeignCA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TestBridgeSurvivesTheIdleTimeout (issue 10 item 3): the gateway closes a
// raw session idle for mcp.mtls.idle_timeout, freeing its slot. The bridge
// does not take the slot back at once: it reconnects at the client's next
// message, which is answered as if nothing happened.
func TestBridgeSurvivesTheIdleTimeout(t *testing.T) {
	noLeaks(t)
	const idle = 300 * time.Millisecond
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.IdleTimeout = idle })
	iss := gw.Issue("ops", pki.RoleOperator, time.Hour)
	r := start(t, gw.Addr, gw.Store, pkitest.KeyPair(t, iss))
	reconnected := r.events.on("reconnected to the gateway")
	c := mcpClient(t, r)
	before := status(t, c)

	waitWithin(t, 20*time.Second, func() bool {
		for _, rec := range gw.AuditRecords() {
			if rec.Event == audit.EventConnectionClose && rec.Reason == server.ReasonIdle {
				return true
			}
		}
		return false
	})
	// The slot is free while the client says nothing (no eager reconnect
	// holds it again), for several idle periods.
	waitWithin(t, 20*time.Second, func() bool { return gw.Count() == 0 })
	select {
	case <-reconnected:
		t.Fatal("the bridge reconnected before the client said anything")
	case <-time.After(3 * idle):
	}
	if n := gw.Count(); n != 0 {
		t.Fatalf("gateway holds %d connection(s) for an idle bridge", n)
	}

	after := status(t, c)
	if after["session_id"] == before["session_id"] || after["serial"] != iss.Serial {
		t.Errorf("after the idle close: caller %v, before %v: want a new session of the same certificate", after, before)
	}
	c.Close()
	r.in.Close()
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v, want nil after the client closed its input", err)
	}
}

// waitWithin polls cond until it holds or limit passes.
func waitWithin(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
