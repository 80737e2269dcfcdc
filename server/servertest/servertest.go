// Package servertest starts a real nefia gateway on 127.0.0.1:0 with a
// freshly generated CA and state directory, and hands out real TLS clients
// for named certificates, so every gateway test talks TLS for real.
package servertest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/tools"
)

// Gateway is a running gateway and the state directory behind it.
type Gateway struct {
	*server.Gateway
	Store *pki.Store
	// Addr is the listening address, host:port.
	Addr string
	// AuditDir holds the gateway's audit trail.
	AuditDir string

	trail       *audit.Logger
	auditBroken bool // BreakAudit was called: closing the trail must fail
	t           testing.TB
	stop        context.CancelFunc
	done        chan error
}

// Option adjusts the gateway's options before it starts.
type Option func(*server.GatewayOptions)

// Start runs a gateway until the test ends. Logs go to the test log when -v
// is set.
func Start(t testing.TB, opts ...Option) *Gateway {
	t.Helper()
	store := pkitest.NewStore(t)
	return StartWithStore(t, store, opts...)
}

// StartWithStore runs a gateway over an existing, initialized store.
func StartWithStore(t testing.TB, store *pki.Store, opts ...Option) *Gateway {
	t.Helper()
	trail, err := audit.Open(filepath.Join(store.Dir(), "audit"), audit.Options{})
	if err != nil {
		t.Fatalf("servertest: open audit trail: %v", err)
	}
	o := server.GatewayOptions{
		CACertFile:       store.Path(pki.CACertFile),
		CertFile:         store.Path(pki.ServerCertFile),
		KeyFile:          store.Path(pki.ServerKeyFile),
		Revocations:      pki.NewRevocationChecker(store.Path(pki.RevokedFile)),
		HandshakeTimeout: 2 * time.Second,
		RevocationPoll:   50 * time.Millisecond,
		ShutdownGrace:    time.Second,
		Logger:           testLogger(t),
		Audit:            trail,
		Tools: tools.Deps{
			Store:      store,
			ConfigPath: filepath.Join(store.Dir(), "nefia.yaml"),
		},
	}
	for _, opt := range opts {
		opt(&o)
	}
	gw, err := server.NewGateway(o)
	if err != nil {
		t.Fatalf("servertest: new gateway: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servertest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{Gateway: gw, Store: store, Addr: ln.Addr().String(), AuditDir: trail.Dir(), trail: trail, t: t, stop: cancel, done: make(chan error, 1)}
	go func() { g.done <- gw.Serve(ctx, ln) }()
	<-gw.Ready()
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("servertest: gateway stopped with %v", err)
		}
		if err := trail.Close(); err != nil && !(g.auditBroken && errors.Is(err, audit.ErrUnavailable)) {
			t.Errorf("servertest: close audit trail: %v", err)
		}
	})
	return g
}

// Stop shuts the gateway down and waits for it; it is safe to call twice.
func (g *Gateway) Stop() error {
	g.stop()
	select {
	case err, ok := <-g.done:
		if ok {
			close(g.done)
		}
		return err
	case <-time.After(30 * time.Second):
		return errors.New("servertest: gateway did not stop within 30s")
	}
}

// AuditRecords returns every record of the gateway's audit trail so far.
func (g *Gateway) AuditRecords() []audit.Record {
	g.t.Helper()
	if err := g.trail.Flush(); err != nil {
		g.t.Fatalf("servertest: flush audit trail: %v", err)
	}
	recs, err := audit.Tail(g.AuditDir, 1<<30)
	if err != nil {
		g.t.Fatalf("servertest: read audit trail: %v", err)
	}
	return recs
}

// BreakAudit makes the audit trail unwritable in a way root cannot bypass:
// its path is taken by a directory. Every later append fails.
func (g *Gateway) BreakAudit() {
	g.t.Helper()
	path := filepath.Join(g.AuditDir, audit.TrailFile)
	if err := os.Remove(path); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		g.t.Fatal(err)
	}
	g.auditBroken = true
}

// VerifyAudit checks the audit trail's chain and returns its record count.
func (g *Gateway) VerifyAudit() int {
	g.t.Helper()
	if err := g.trail.Flush(); err != nil {
		g.t.Fatalf("servertest: flush audit trail: %v", err)
	}
	key, err := audit.LoadKey(filepath.Join(g.AuditDir, audit.KeyFile))
	if err != nil {
		g.t.Fatal(err)
	}
	n, err := audit.VerifyDir(g.AuditDir, key)
	if err != nil {
		g.t.Fatalf("servertest: audit trail does not verify: %v", err)
	}
	return n
}

// Issue issues a client certificate from the gateway's CA.
func (g *Gateway) Issue(name string, role pki.Role, d time.Duration) *pki.Issued {
	g.t.Helper()
	return pkitest.Issue(g.t, g.Store, name, role, d)
}

// Cert issues a certificate and returns it as a TLS key pair.
func (g *Gateway) Cert(name string, role pki.Role) tls.Certificate {
	g.t.Helper()
	return pkitest.KeyPair(g.t, g.Issue(name, role, time.Hour))
}

// ClientConfig is a TLS 1.3 client configuration presenting cert and
// trusting the gateway's CA.
func (g *Gateway) ClientConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: pkitest.CAPool(g.t, g.Store), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Present the certificate whatever CAs the server asks for, so a
		// foreign certificate is really sent (crypto/tls would otherwise
		// send none) and refused by the gateway, not by the client.
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// Dial connects with cfg and completes the client side of the handshake.
// In TLS 1.3 the server judges the client certificate after the client's
// handshake is done, so a refusal shows up on the first read: use Probe.
func (g *Gateway) Dial(cfg *tls.Config) (*tls.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", g.Addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// Probe dials with cfg and reports whether the gateway admitted the
// connection: it sends a ping and waits for the answer. A refused client gets
// the server's alert (or a closed connection) instead.
func (g *Gateway) Probe(cfg *tls.Config) error {
	conn, err := g.Dial(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n")); err != nil {
		return err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if n == 0 {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Client returns an initialized mcp-go client over a raw TLS connection
// presenting cert; it is closed when the test ends.
func (g *Gateway) Client(cert tls.Certificate) *client.Client {
	g.t.Helper()
	conn, err := g.Dial(g.ClientConfig(&cert))
	if err != nil {
		g.t.Fatalf("servertest: dial: %v", err)
	}
	c := client.NewClient(transport.NewIO(closedIsEOF{conn}, conn, io.NopCloser(eofReader{})))
	g.t.Cleanup(func() { c.Close(); conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		g.t.Fatalf("servertest: start client: %v", err)
	}
	if _, err := c.Initialize(ctx, InitializeRequest()); err != nil {
		g.t.Fatalf("servertest: initialize: %v", err)
	}
	return c
}

// closedIsEOF reports a connection closed by our own Close as the end of the
// stream, so the mcp-go client does not log it as a read error.
type closedIsEOF struct{ net.Conn }

func (c closedIsEOF) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, net.ErrClosed) {
		err = io.EOF
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
