package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"go.uber.org/goleak"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// httpHarness is a TLS listener on 127.0.0.1:0 that does what the gateway
// does with an HTTP connection: handshake (TLS 1.3, client certificate
// verified against the store's CA, revocation checked), SniffHTTP, then
// HTTPTransport.ServeConn. Every test here goes through that real path.
type httpHarness struct {
	t         *testing.T
	store     *pki.Store
	checker   *pki.RevocationChecker
	transport *server.HTTPTransport
	url       string
	addr      string
	clock     *pkitest.Clock

	mu       sync.Mutex
	served   []error  // ServeConn results
	refused  []string // reasons given to HTTPOptions.Refused
	finished chan struct{}
	stopOnce sync.Once
	stopFn   func()
}

// stop cancels every ServeConn, waits for them and checks that no goroutine
// was left behind. It runs when the test ends, or earlier when called.
func (h *httpHarness) stop() { h.stopOnce.Do(h.stopFn) }

// sessionsRef lets the tools reach the transport, which needs the MCP
// server the tools are registered on.
type sessionsRef struct{ h *server.HTTPTransport }

func (s *sessionsRef) CloseSerial(serial string) int { return s.h.CloseSerial(serial) }
func (s *sessionsRef) Count() int                    { return s.h.Count() }

func startHTTP(t *testing.T, adjust ...func(*server.HTTPOptions)) *httpHarness {
	t.Helper()
	running := goleak.IgnoreCurrent()
	store := pkitest.NewStore(t)
	h := &httpHarness{
		t: t, store: store,
		checker:  pki.NewRevocationChecker(store.Path(pki.RevokedFile)),
		clock:    pkitest.NewClock(time.Now()),
		finished: make(chan struct{}),
	}
	ref := &sessionsRef{}
	srv, err := server.NewMCPServer(tools.Deps{Store: store, ConfigPath: filepath.Join(store.Dir(), "nefia.yaml"), Sessions: ref}, testLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := server.HTTPOptions{
		Identify: func(cs *tls.ConnectionState) (identity.Agent, error) {
			leaf := cs.PeerCertificates[0]
			if err := h.checker.Check(leaf); err != nil {
				return identity.Agent{}, err
			}
			return identity.FromCertificate(leaf)
		},
		Refused: func(_ string, _ *identity.Agent, reason string, _ error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.refused = append(h.refused, reason)
		},
		Clock:  h.clock,
		Logger: testLog(),
	}
	for _, f := range adjust {
		f(&opts)
	}
	if h.transport, err = server.NewHTTPTransport(srv, opts); err != nil {
		t.Fatal(err)
	}
	ref.h = h.transport

	kp, err := tls.LoadX509KeyPair(store.Path(pki.ServerCertFile), store.Path(pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{kp},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pkitest.CAPool(t, store),
		NextProtos:   []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return h.checker.Check(cs.PeerCertificates[0])
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	h.url = "https://" + h.addr + server.MCPPath
	ctx, cancel := context.WithCancel(context.Background())
	var conns sync.WaitGroup
	go func() {
		defer close(h.finished)
		for {
			raw, err := ln.Accept()
			if err != nil {
				conns.Wait()
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				conn := tls.Server(raw, cfg)
				hsCtx, done := context.WithTimeout(ctx, 5*time.Second)
				err := conn.HandshakeContext(hsCtx)
				done()
				if err != nil {
					conn.Close()
					return
				}
				sniffCtx, done := context.WithTimeout(ctx, 5*time.Second)
				isHTTP, c, err := server.SniffHTTP(sniffCtx, conn)
				done()
				if err != nil || !isHTTP {
					c.Close()
					return
				}
				err = h.transport.ServeConn(ctx, c)
				h.mu.Lock()
				h.served = append(h.served, err)
				h.mu.Unlock()
			}()
		}
	}()
	h.stopFn = func() {
		cancel()
		ln.Close()
		select {
		case <-h.finished:
		case <-time.After(10 * time.Second):
			t.Error("ServeConn did not return within 10s of its context ending")
		}
		goleak.VerifyNone(t, running)
	}
	t.Cleanup(h.stop)
	return h
}

// refusals returns the reasons of the requests refused so far.
func (h *httpHarness) refusals() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.refused...)
}

func testLog() *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// issue returns a fresh certificate and its serial.
func (h *httpHarness) issue(name string, role pki.Role) (tls.Certificate, string) {
	h.t.Helper()
	iss := pkitest.Issue(h.t, h.store, name, role, time.Hour)
	return pkitest.KeyPair(h.t, iss), iss.Serial
}

// proto is how a test client speaks HTTP, and so which way the transport
// is reached: by ALPN, or by SniffHTTP reading the request's first byte.
type proto int

const (
	h1Sniffed proto = iota // HTTP/1.1, no ALPN (as curl --http1.1 without ALPN, undici)
	h1ALPN                 // HTTP/1.1 announced by ALPN
	h2ALPN                 // HTTP/2 by ALPN
)

func (p proto) String() string {
	return [...]string{"HTTP/1.1 sniffed", "HTTP/1.1 by ALPN", "HTTP/2"}[p]
}

// httpClient is an HTTP client presenting cert (none if nil) that holds at
// most one connection. Its idle connections are closed when the test ends.
func (h *httpHarness) httpClient(cert *tls.Certificate, p proto) *http.Client {
	cfg := &tls.Config{RootCAs: pkitest.CAPool(h.t, h.store), MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	if p == h1ALPN {
		cfg.NextProtos = []string{"http/1.1"}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: p == h2ALPN, MaxConnsPerHost: 1}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// mcpClient is an initialized mcp-go Streamable HTTP client. version ""
// lets the client negotiate (2026-07-28: no sessions); a legacy version
// pins the initialize handshake and its Mcp-Session-Id.
func (h *httpHarness) mcpClient(cert tls.Certificate, p proto, version string) *client.Client {
	h.t.Helper()
	tr, err := transport.NewStreamableHTTP(h.url, transport.WithHTTPBasicClient(h.httpClient(&cert, p)))
	if err != nil {
		h.t.Fatal(err)
	}
	var opts []client.ClientOption
	if version != "" {
		opts = append(opts, client.WithProtocolVersion(version))
	}
	c := client.NewClient(tr, opts...)
	h.t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	req.Params.ClientInfo = mcp.Implementation{Name: "http-test", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		h.t.Fatalf("initialize: %v", err)
	}
	return c
}

// post sends one JSON-RPC message as a Streamable HTTP POST.
func post(t *testing.T, c *http.Client, url, sid, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	return buffered(resp)
}

// buffered reads the whole body and closes it, so the connection is free
// for the next request (these clients hold one connection).
func buffered(resp *http.Response) *http.Response {
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// initialize opens a legacy session with a raw POST and returns its id.
func initialize(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp := post(t, c, url, "", initializeBody)
	body, _ := io.ReadAll(resp.Body)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d, session %q: %s", resp.StatusCode, sid, body)
	}
	return sid
}

// openStream opens the GET SSE stream of session sid.
func openStream(t *testing.T, c *http.Client, url, sid string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: %d", resp.StatusCode)
	}
	return resp
}

// ended waits for an SSE body to end (EOF or a reset connection).
func ended(body io.Reader) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, body)
		done <- err
	}()
	return done
}

func TestHTTPClientListsAndCallsTools(t *testing.T) {
	tests := []struct {
		role    pki.Role
		proto   proto
		version string // "" negotiates 2026-07-28
		tools   int
	}{
		{pki.RoleOperator, h1Sniffed, mcp.ProtocolVersion20251125, 6},
		{pki.RoleOperator, h1ALPN, mcp.ProtocolVersion20251125, 6},
		{pki.RoleOperator, h2ALPN, mcp.ProtocolVersion20251125, 6},
		{pki.RoleAgent, h1Sniffed, "", 2},
		{pki.RoleAgent, h2ALPN, "", 2},
	}
	for _, tt := range tests {
		version := tt.version
		if version == "" {
			version = "negotiated"
		}
		t.Run(fmt.Sprintf("%s over %s, %s", tt.role, tt.proto, version), func(t *testing.T) {
			h := startHTTP(t)
			cert, serial := h.issue("bot", tt.role)
			c := h.mcpClient(cert, tt.proto, tt.version)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil || len(list.Tools) != tt.tools {
				t.Fatalf("tools/list: %v, %+v", err, list)
			}
			st := servertest.CallOK(t, c, tools.NameStatus, nil)
			caller, _ := st["caller"].(map[string]any)
			if caller["transport"] != identity.TransportHTTP || caller["serial"] != serial || caller["role"] != string(tt.role) {
				t.Errorf("caller = %v, want the certificate's identity over %s", caller, identity.TransportHTTP)
			}
			// An HTTP/1.1 client may open a second connection (a stream and a
			// POST at once), so at least this one must be counted.
			if n, _ := st["connections"].(float64); n < 1 {
				t.Errorf("connections = %v, want at least 1", st["connections"])
			}
		})
	}
}

func TestHTTPSessionReplayedByAnotherCertificate(t *testing.T) {
	h := startHTTP(t)
	alice, _ := h.issue("alice", pki.RoleOperator)
	mallory, _ := h.issue("mallory", pki.RoleOperator)
	ac, mc := h.httpClient(&alice, h1Sniffed), h.httpClient(&mallory, h2ALPN)
	sid := initialize(t, ac, h.url)

	listBody := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	tests := []struct {
		name   string
		do     func() *http.Response
		status int
	}{
		{"POST with alice's session", func() *http.Response { return post(t, mc, h.url, sid, listBody) }, http.StatusForbidden},
		{"GET stream of alice's session", func() *http.Response { return request(t, mc, http.MethodGet, h.url, sid) }, http.StatusForbidden},
		{"DELETE of alice's session", func() *http.Response { return request(t, mc, http.MethodDelete, h.url, sid) }, http.StatusForbidden},
		{"POST with a made-up session", func() *http.Response { return post(t, mc, h.url, "nefia-made-up", listBody) }, http.StatusNotFound},
		{"POST without a session", func() *http.Response { return post(t, mc, h.url, "", listBody) }, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.do()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if strings.Contains(string(body), "tools") {
				t.Errorf("refused response leaks content: %s", body)
			}
		})
	}
	want := []string{server.ReasonForeignSession, server.ReasonForeignSession, server.ReasonForeignSession}
	if got := h.refusals(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("refusals reported %q, want %q", got, want)
	}
	// Alice's session survived the attempts.
	resp := post(t, ac, h.url, sid, listBody)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tools.NameRevoke) {
		t.Errorf("alice after the replay: %d %s", resp.StatusCode, body)
	}
	// And her own DELETE ends it for good.
	if resp := request(t, ac, http.MethodDelete, h.url, sid); resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE by its owner: %d", resp.StatusCode)
	}
	if resp := post(t, ac, h.url, sid, listBody); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST after DELETE: %d, want 404", resp.StatusCode)
	}
}

func request(t *testing.T, c *http.Client, method, url, sid string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return buffered(resp)
}

// TestHTTPRevokedMidSession covers the three ways a certificate stops being
// good while its connection is open.
func TestHTTPRevokedMidSession(t *testing.T) {
	tests := []struct {
		name string
		// end makes the agent's certificate unacceptable; it returns whether
		// the transport itself is expected to close the open stream.
		end         func(t *testing.T, h *httpHarness, serial string) bool
		wantServeOK bool
	}{
		{"revoked by the CLI: next request on the same connection is 403", func(t *testing.T, h *httpHarness, serial string) bool {
			if _, err := h.store.Revoke(serial, "test"); err != nil {
				t.Fatal(err)
			}
			return false
		}, true},
		{"revoked through the tool: open stream closes", func(t *testing.T, h *httpHarness, serial string) bool {
			ops, _ := h.issue("ops", pki.RoleOperator)
			c := h.mcpClient(ops, h1Sniffed, mcp.ProtocolVersion20251125)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = tools.NameRevoke
			req.Params.Arguments = map[string]any{"serial": serial}
			res, err := c.CallTool(ctx, req)
			if err != nil || res.IsError {
				t.Fatalf("revoke: %v %+v", err, res)
			}
			return true
		}, false},
		{"expired: open stream closes at NotAfter", func(t *testing.T, h *httpHarness, serial string) bool {
			return true // the clock was set two seconds before NotAfter
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHTTP(t)
			iss := pkitest.Issue(t, h.store, "agent", pki.RoleAgent, time.Hour)
			cert := pkitest.KeyPair(t, iss)
			expiring := strings.HasPrefix(tt.name, "expired")
			if expiring {
				h.clock.Set(iss.NotAfter.Add(-2 * time.Second))
			}
			c := h.httpClient(&cert, h2ALPN) // the stream and the POSTs share one connection
			sid := initialize(t, c, h.url)
			stream := openStream(t, c, h.url, sid)
			done := ended(stream.Body)

			closes := tt.end(t, h, iss.Serial)
			if closes {
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the open GET stream is still open")
				}
				if expiring {
					h.clock.Set(iss.NotAfter)
				}
				// The connection is gone: a new one is refused in the handshake
				// (revoked) or by Identify (expired).
				req, _ := http.NewRequest(http.MethodPost, h.url, strings.NewReader(`{}`))
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusForbidden {
						t.Errorf("request after the end: %d, want refusal", resp.StatusCode)
					}
				}
				return
			}
			var reused bool
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, h.url,
				strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Mcp-Session-Id", sid)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !reused {
				t.Errorf("next request: %d (connection reused %v), want 403 on the same connection: %s", resp.StatusCode, reused, body)
			}
			if got := h.refusals(); len(got) != 1 || got[0] != server.ReasonRevoked {
				t.Errorf("refusals reported %q, want [%s]", got, server.ReasonRevoked)
			}
			// The gateway's revocation poll calls Recheck, which ends the
			// stream that sends no request to fail.
			if n := h.transport.Recheck(); n != 1 {
				t.Errorf("Recheck closed %d connections, want 1", n)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the open GET stream survived Recheck")
			}
		})
	}
}

func TestHTTPGivesNothingUseful(t *testing.T) {
	h := startHTTP(t)
	cert, _ := h.issue("bot", pki.RoleOperator)
	c := h.httpClient(&cert, h1Sniffed)
	base := "https://" + h.addr
	tests := []struct {
		name   string
		method string
		url    string
		status int
	}{
		{"root", http.MethodGet, base + "/", http.StatusNotFound},
		{"other path", http.MethodPost, base + "/api", http.StatusNotFound},
		{"below /mcp", http.MethodGet, base + "/mcp/x", http.StatusNotFound},
		{"well-known", http.MethodGet, base + "/.well-known/oauth-protected-resource", http.StatusNotFound},
		{"PUT /mcp", http.MethodPut, base + "/mcp", http.StatusMethodNotAllowed},
		{"OPTIONS /mcp", http.MethodOptions, base + "/mcp", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, tt.url, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || len(body) != 0 {
				t.Errorf("%d %q, want %d and no body", resp.StatusCode, body, tt.status)
			}
		})
	}

	refused := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"plain HTTP", func() (net.Conn, error) { return net.Dial("tcp", h.addr) }},
		{"TLS without a certificate", func() (net.Conn, error) {
			return tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pkitest.CAPool(t, h.store), NextProtos: []string{"http/1.1"}})
		}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tt.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(initializeBody), initializeBody)
			got, _ := io.ReadAll(bufio.NewReader(conn))
			if strings.Contains(string(got), "HTTP/") {
				t.Errorf("got an HTTP answer: %q", got)
			}
		})
	}
}

func TestHTTPOversizedBody(t *testing.T) {
	const limit = 1024
	h := startHTTP(t, func(o *server.HTTPOptions) { o.MaxMessageBytes = limit })
	cert, _ := h.issue("bot", pki.RoleOperator)
	c := h.httpClient(&cert, h1Sniffed)
	big := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"pad":"` + strings.Repeat("x", limit) + `"}}`
	tests := []struct {
		name   string
		body   io.Reader
		status int
	}{
		{"declared length over the limit", strings.NewReader(big), http.StatusRequestEntityTooLarge},
		{"chunked body over the limit", io.MultiReader(strings.NewReader(big)), http.StatusRequestEntityTooLarge},
		{"body at the limit", strings.NewReader(initializeBody + strings.Repeat(" ", limit-len(initializeBody))), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, h.url, tt.body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
	if got := h.refusals(); len(got) != 2 || got[0] != server.ReasonTooLarge || got[1] != server.ReasonTooLarge {
		t.Errorf("refusals reported %q, want two %q", got, server.ReasonTooLarge)
	}
}

func TestHTTPSessionsPerCertificateAreCapped(t *testing.T) {
	h := startHTTP(t, func(o *server.HTTPOptions) { o.MaxSessionsPerCert = 2 })
	cert, _ := h.issue("bot", pki.RoleOperator)
	other, _ := h.issue("other", pki.RoleOperator)
	c, oc := h.httpClient(&cert, h1Sniffed), h.httpClient(&other, h1ALPN)
	otherSID := initialize(t, oc, h.url)
	first := initialize(t, c, h.url)
	second := initialize(t, c, h.url)
	third := initialize(t, c, h.url)
	ping := `{"jsonrpc":"2.0","id":9,"method":"ping"}`
	for _, tt := range []struct {
		name   string
		client *http.Client
		sid    string
		status int
	}{
		{"least recently used is forgotten", c, first, http.StatusNotFound},
		{"second", c, second, http.StatusOK},
		{"third", c, third, http.StatusOK},
		{"another certificate's session is untouched", oc, otherSID, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if resp := post(t, tt.client, h.url, tt.sid, ping); resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

func TestHTTPIdleSessionsEnd(t *testing.T) {
	h := startHTTP(t, func(o *server.HTTPOptions) { o.SessionIdleTTL = time.Minute })
	cert, _ := h.issue("bot", pki.RoleOperator)
	c := h.httpClient(&cert, h1Sniffed)
	idle := initialize(t, c, h.url)
	busy := initialize(t, c, h.url)
	ping := `{"jsonrpc":"2.0","id":9,"method":"ping"}`
	h.clock.Advance(50 * time.Second)
	if resp := post(t, c, h.url, busy, ping); resp.StatusCode != http.StatusOK {
		t.Fatalf("busy session: %d", resp.StatusCode)
	}
	h.clock.Advance(20 * time.Second) // idle: 70s unused; busy: 20s
	for _, tt := range []struct {
		name   string
		sid    string
		status int
	}{{"idle past the TTL", idle, http.StatusNotFound}, {"used within the TTL", busy, http.StatusOK}} {
		t.Run(tt.name, func(t *testing.T) {
			if resp := post(t, c, h.url, tt.sid, ping); resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

func TestServeConnReturnsWhenContextEnds(t *testing.T) {
	for _, p := range []proto{h1Sniffed, h2ALPN} {
		t.Run(p.String(), func(t *testing.T) {
			h := startHTTP(t)
			cert, _ := h.issue("bot", pki.RoleOperator)
			c := h.httpClient(&cert, p)
			sid := initialize(t, c, h.url)
			done := ended(openStream(t, c, h.url, sid).Body)
			select {
			case <-done:
				t.Fatal("stream ended before the context did")
			default:
			}
			// Stopping the harness cancels ServeConn's context, waits for it
			// to return and checks that no goroutine was left behind.
			h.stop()
			<-done
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.served) != 1 || !errors.Is(h.served[0], context.Canceled) {
				t.Errorf("ServeConn returned %v, want one context.Canceled", h.served)
			}
		})
	}
}

func TestSniffHTTP(t *testing.T) {
	tests := []struct {
		name     string
		alpn     []string
		send     string
		wantHTTP bool
	}{
		{"ALPN h2", []string{"h2"}, "", true},
		{"ALPN http/1.1", []string{"http/1.1"}, "", true},
		{"no ALPN, HTTP request", nil, "POST /mcp HTTP/1.1\r\n", true},
		{"no ALPN, JSON-RPC line", nil, `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n", false},
		{"no ALPN, JSON-RPC after blank space", nil, "\n{}\n", false},
	}
	store := pkitest.NewStore(t)
	kp, err := tls.LoadX509KeyPair(store.Path(pki.ServerCertFile), store.Path(pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, cc := tcpPair(t)
			srv := tls.Server(cs, &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"h2", "http/1.1"}})
			cli := tls.Client(cc, &tls.Config{RootCAs: pkitest.CAPool(t, store), ServerName: "localhost", NextProtos: tt.alpn})
			defer srv.Close()
			defer cli.Close()
			go func() {
				if cli.Handshake() == nil && tt.send != "" {
					_, _ = io.WriteString(cli, tt.send)
				}
			}()
			if err := srv.Handshake(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			isHTTP, conn, err := server.SniffHTTP(ctx, srv)
			if err != nil || isHTTP != tt.wantHTTP {
				t.Fatalf("SniffHTTP = %v, %v; want %v", isHTTP, err, tt.wantHTTP)
			}
			if tt.send == "" {
				return
			}
			got := make([]byte, len(tt.send))
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != tt.send {
				t.Errorf("the returned connection reads %q (%v), want %q: the sniffed byte must be read again", got, err, tt.send)
			}
			if _, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); !ok {
				t.Error("the returned connection lost its TLS state")
			}
		})
	}
}

func TestSniffHTTPEndsWithItsContext(t *testing.T) {
	store := pkitest.NewStore(t)
	kp, err := tls.LoadX509KeyPair(store.Path(pki.ServerCertFile), store.Path(pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cs, cc := tcpPair(t)
	srv := tls.Server(cs, &tls.Config{Certificates: []tls.Certificate{kp}})
	cli := tls.Client(cc, &tls.Config{RootCAs: pkitest.CAPool(t, store), ServerName: "localhost"})
	defer srv.Close()
	defer cli.Close()
	go cli.Handshake() // and then say nothing
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), 100*time.Millisecond, errors.New("silent client"))
	defer cancel()
	if _, _, err := server.SniffHTTP(ctx, srv); err == nil || !strings.Contains(err.Error(), "silent client") {
		t.Errorf("SniffHTTP = %v, want the context's cause", err)
	}
}

// tcpPair returns both ends of a loopback TCP connection. (net.Pipe has no
// buffer, which deadlocks TLS 1.3: the server writes session tickets while
// the client is writing too.)
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return server, client
}
