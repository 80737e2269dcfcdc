package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/textproto"
	"os"
	"strings"

	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/nefia/nefia/identity"
)

// Headers sent to HTTP upstreams with every forwarded call.
const (
	HeaderAgentName        = "Nefia-Agent-Name"
	HeaderAgentSerial      = "Nefia-Agent-Serial"
	HeaderAgentRole        = "Nefia-Agent-Role"
	HeaderAgentFingerprint = "Nefia-Agent-Fingerprint"
	HeaderAssertion        = "Nefia-Assertion"
)

// httpMaxIdleConns is how many idle connections to an HTTP upstream are
// kept for reuse: as many as calls the gateway forwards at once in the
// usual case (the bench's 50 sessions), few enough to be cheap to hold.
const httpMaxIdleConns = 64

type headersKey struct{}

// withHeaders puts the caller's identity headers in ctx, where the HTTP
// transport's header function finds them for this one request.
func withHeaders(ctx context.Context, a identity.Agent, token string) context.Context {
	h := map[string]string{
		HeaderAgentName: a.Name, HeaderAgentRole: string(a.Role),
		HeaderAgentSerial: a.Serial, HeaderAgentFingerprint: a.Fingerprint,
	}
	if token != "" {
		h[HeaderAssertion] = token
	}
	return context.WithValue(ctx, headersKey{}, h)
}

func headersFrom(ctx context.Context) map[string]string {
	h, _ := ctx.Value(headersKey{}).(map[string]string)
	return h
}

// dialHTTP builds the client of a url upstream; initialize (in connect)
// is the first request.
func (u *upstream) dialHTTP() (*conn, error) {
	static, err := readHeadersFile(u.cfg.HeadersFile)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := u.tlsConfig()
	if err != nil {
		return nil, err
	}
	// net/http's defaults (proxy from the environment, dial and TLS
	// timeouts), except two. The connections concurrent calls open stay
	// open for the next ones: the default keeps 2 idle per host, so each
	// burst of calls paid a new connection (and TLS handshake) per call
	// beyond 2. And HTTP/1.1 with keep-alive even when the upstream offers
	// HTTP/2, as nginx and Envoy speak to their upstreams: every Streamable
	// HTTP server speaks it, and a forwarded call over it costs less than
	// over HTTP/2's framing, flow control and stream hand-offs (issue 12,
	// 0.09 ms of the 0.64 ms nefia added at p50). A call, an SSE answer
	// or the GET stream holds a connection of its own while it lasts;
	// MaxConnsPerHost stays 0 (no cap), so concurrent calls never wait
	// for one another, and a cancelled call closes only its connection.
	ht := http.DefaultTransport.(*http.Transport).Clone()
	ht.TLSClientConfig = tlsCfg
	ht.Protocols = new(http.Protocols)
	ht.Protocols.SetHTTP1(true)
	ht.MaxIdleConns = httpMaxIdleConns
	ht.MaxIdleConnsPerHost = httpMaxIdleConns
	hc := &http.Client{Transport: &limitTransport{max: MaxMessageBytes, base: ht}}
	tr, err := transport.NewStreamableHTTP(u.cfg.URL,
		transport.WithHTTPBasicClient(hc),
		transport.WithHTTPHeaders(static),
		transport.WithHTTPHeaderFunc(headersFrom),
		// A GET stream for the server's notifications (list_changed).
		transport.WithContinuousListening(),
		transport.WithHTTPLogger(u.log),
	)
	if err != nil {
		return nil, fmt.Errorf("http upstream: %w", err)
	}
	cn := &conn{done: make(chan struct{}), c: newClient(tr), http: newHTTPCaller(u.cfg.URL, hc, static, tr.GetSessionId, u.log)}
	cn.stop = func() {
		cn.http.cancel()
		_ = cn.c.Close()
		hc.CloseIdleConnections()
	}
	if err := cn.c.Start(context.Background()); err != nil {
		cn.stop()
		return nil, fmt.Errorf("http upstream: %w", err)
	}
	return cn, nil
}

// tlsConfig is TLS 1.3 (nefia's floor everywhere) with the configured CA
// and client certificate, if any.
func (u *upstream) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if u.cfg.CAFile != "" {
		pem, err := os.ReadFile(u.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no certificates", u.cfg.CAFile)
		}
		cfg.RootCAs = pool
	}
	if u.cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(u.cfg.CertFile, u.cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// readHeadersFile reads "Name: value" lines (blank lines and # comments
// skipped). Errors name the file and line, never a value: the file holds
// secrets. Nefia-* names are refused, since nefia sets them per call and a
// static one would impersonate every caller.
func readHeadersFile(path string) (map[string]string, error) {
	h := map[string]string{}
	if path == "" {
		return h, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("headers_file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("headers_file %s:%d: want \"Name: value\"", path, n)
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if strings.HasPrefix(name, "Nefia-") {
			return nil, fmt.Errorf("headers_file %s:%d: %s is set by nefia per call", path, n, name)
		}
		h[name] = strings.TrimSpace(value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("headers_file %s: %w", path, err)
	}
	return h, nil
}
