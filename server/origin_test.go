package server_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// TestHTTPOrigin (issue 10, item 15): the MCP specification says servers
// MUST validate the Origin header of Streamable HTTP requests and answer an
// invalid one 403, so that a web page in a browser holding a client
// certificate cannot drive the gateway with it. Accepted: no Origin (not a
// browser), the gateway's own origin (https and the Host the request was
// sent to), and the allowed origins. Refused: everything else, before the
// request reaches mcp-go.
func TestHTTPOrigin(t *testing.T) {
	h := startHTTP(t, func(o *server.HTTPOptions) {
		o.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000", "HTTPS://Editor.Example:8443"}
	})
	cert, _ := h.issue("bot", pki.RoleOperator)
	own := "https://" + h.addr
	tests := []struct {
		name    string
		origins []string // Origin headers sent
		method  string   // POST (initialize) unless set
		allowed bool
	}{
		{name: "no Origin", allowed: true},
		{name: "own origin", origins: []string{own}, allowed: true},
		{name: "own origin, other case", origins: []string{strings.ToUpper(own)}, allowed: true},
		{name: "own host, http", origins: []string{"http://" + h.addr}},
		{name: "own host, other port", origins: []string{"https://127.0.0.1:1"}},
		{name: "own port, host by another name", origins: []string{"https://localhost:" + h.addr[strings.LastIndex(h.addr, ":")+1:]}},
		{name: "other host", origins: []string{"https://evil.example"}},
		{name: "allowed", origins: []string{"https://app.example.com"}, allowed: true},
		{name: "allowed, default port written", origins: []string{"https://app.example.com:443"}, allowed: true},
		{name: "allowed, http", origins: []string{"http://localhost:3000"}, allowed: true},
		{name: "allowed, listed in capitals", origins: []string{"https://editor.example:8443"}, allowed: true},
		{name: "allowed host, other scheme", origins: []string{"http://app.example.com"}},
		{name: "allowed host, other port", origins: []string{"https://app.example.com:8443"}},
		{name: "subdomain of allowed", origins: []string{"https://x.app.example.com"}},
		{name: "null", origins: []string{"null"}},
		{name: "empty", origins: []string{""}},
		{name: "not an origin", origins: []string{"app.example.com"}},
		{name: "with credentials", origins: []string{"https://user@app.example.com"}},
		{name: "other scheme", origins: []string{"chrome-extension://abcdef"}},
		{name: "two headers", origins: []string{"https://app.example.com", "https://evil.example"}},
		{name: "GET, other host", method: http.MethodGet, origins: []string{"https://evil.example"}},
		{name: "DELETE, other host", method: http.MethodDelete, origins: []string{"https://evil.example"}},
	}
	for _, p := range []proto{h1Sniffed, h2ALPN} {
		c := h.httpClient(&cert, p)
		t.Run(p.String(), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					before := len(h.refusals())
					method := cmpOr(tt.method, http.MethodPost)
					var body io.Reader
					if method == http.MethodPost {
						body = strings.NewReader(initializeBody)
					}
					req, err := http.NewRequest(method, h.url, body)
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", "application/json, text/event-stream")
					if tt.origins != nil {
						req.Header["Origin"] = tt.origins
					}
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					text, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.ProtoMajor != map[proto]int{h1Sniffed: 1, h2ALPN: 2}[p] {
						t.Fatalf("spoke %s", resp.Proto)
					}
					refused := h.refusals()[before:]
					if tt.allowed {
						if resp.StatusCode == http.StatusForbidden || len(refused) > 0 {
							t.Errorf("refused: %d %s, refusals %q", resp.StatusCode, text, refused)
						}
						if method == http.MethodPost && resp.StatusCode != http.StatusOK {
							t.Errorf("initialize answered %d: %s", resp.StatusCode, text)
						}
						return
					}
					if resp.StatusCode != http.StatusForbidden || !slices.Equal(refused, []string{server.ReasonOrigin}) {
						t.Errorf("answered %d %q, refusals %q; want 403 and %q", resp.StatusCode, text, refused, server.ReasonOrigin)
					}
					if strings.Contains(string(text), "jsonrpc") {
						t.Errorf("a refused request reached mcp-go: %s", text)
					}
				})
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestHTTPAllowedOriginsOption: an entry that is not an origin is refused
// when the transport is built, not ignored.
func TestHTTPAllowedOriginsOption(t *testing.T) {
	t.Parallel()
	store := pkitest.NewStore(t)
	srv, err := server.NewMCPServer(tools.Deps{Store: store, ConfigPath: filepath.Join(store.Dir(), "nefia.yaml")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	identify := func(*tls.ConnectionState) (identity.Agent, error) { return identity.Agent{}, nil }
	tests := []struct {
		name   string
		origin string
		ok     bool
	}{
		{name: "https", origin: "https://app.example.com", ok: true},
		{name: "http with port", origin: "http://localhost:3000", ok: true},
		{name: "IPv6", origin: "https://[::1]:8443", ok: true},
		{name: "null", origin: "null"},
		{name: "no scheme", origin: "app.example.com"},
		{name: "path", origin: "https://app.example.com/x"},
		{name: "query", origin: "https://app.example.com?x"},
		{name: "other scheme", origin: "ftp://app.example.com"},
		{name: "empty port", origin: "https://app.example.com:"},
		{name: "wildcard", origin: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := server.NewHTTPTransport(srv, server.HTTPOptions{Identify: identify, AllowedOrigins: []string{tt.origin}})
			if (err == nil) != tt.ok {
				t.Errorf("NewHTTPTransport(AllowedOrigins %q): %v, want ok %v", tt.origin, err, tt.ok)
			}
		})
	}
}

// TestGatewayAllowedOrigins: the gateway hands GatewayOptions.AllowedOrigins
// (mcp.mtls.allowed_origins) to its HTTP transport.
func TestGatewayAllowedOrigins(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.AllowedOrigins = []string{"https://app.example.com"} })
	cert := gw.Cert("bot", pki.RoleAgent)
	tr := &http.Transport{TLSClientConfig: gw.ClientConfig(&cert)}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for _, tt := range []struct {
		origin string
		status int
	}{
		{"https://app.example.com", http.StatusOK},
		{"https://evil.example", http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodPost, "https://"+gw.Addr+server.MCPPath, strings.NewReader(initializeBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Origin", tt.origin)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("Origin %s: %d, want %d", tt.origin, resp.StatusCode, tt.status)
		}
	}
}
