package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// TestHTTPGetStreamSendsHeadersAtOnce (issue 14 item 7): the GET /mcp SSE
// stream of a session carries no event until the server has something to
// say, so its client must get the response headers (200, text/event-stream)
// as soon as the stream is open, not with the first event. Driven through a
// whole running gateway over real TLS, once per way an HTTP client reaches
// it: HTTP/2 and HTTP/1.1 by ALPN, and HTTP/1.1 without ALPN (told apart by
// the request's first byte). The HTTP/1.1 cases read the raw response off
// the connection, so nothing in a client library can buffer it.
func TestHTTPGetStreamSendsHeadersAtOnce(t *testing.T) {
	t.Parallel()
	const deadline = 5 * time.Second
	g := servertest.Start(t)
	cert := g.Cert("ops", pki.RoleOperator)
	url := "https://" + g.Addr + "/mcp"

	tests := []struct {
		name  string
		proto proto
	}{
		{name: "HTTP/2", proto: h2ALPN},
		{name: "HTTP/1.1 by ALPN", proto: h1ALPN},
		{name: "HTTP/1.1 sniffed", proto: h1Sniffed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := g.ClientConfig(&cert)
			cfg.MinVersion = tls.VersionTLS13
			switch tt.proto {
			case h2ALPN:
				cfg.NextProtos = []string{"h2"}
			case h1ALPN:
				cfg.NextProtos = []string{"http/1.1"}
			}
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: tt.proto == h2ALPN}
			t.Cleanup(tr.CloseIdleConnections)
			sid := initialize(t, &http.Client{Transport: tr, Timeout: deadline}, url)

			if tt.proto == h2ALPN {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set("Mcp-Session-Id", sid)
				start := time.Now()
				// Do returns when the headers arrive; the body stays open.
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("GET stream: no headers within %v: %v", deadline, err)
				}
				defer resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Fatalf("spoke %s, want HTTP/2", resp.Proto)
				}
				checkStreamHeaders(t, resp.StatusCode, resp.Header.Get("Content-Type"), time.Since(start))
				return
			}

			conn, err := g.Dial(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.ConnectionState().NegotiatedProtocol; (tt.proto == h1ALPN) != (got == "http/1.1") {
				t.Fatalf("ALPN chose %q", got)
			}
			start := time.Now()
			if err := conn.SetDeadline(start.Add(deadline)); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /mcp HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nMcp-Session-Id: %s\r\n\r\n", g.Addr, sid)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("GET stream: no headers within %v: %v", deadline, err)
			}
			checkStreamHeaders(t, resp.StatusCode, resp.Header.Get("Content-Type"), time.Since(start))
		})
	}
}

func checkStreamHeaders(t *testing.T, status int, contentType string, took time.Duration) {
	t.Helper()
	t.Logf("headers after %v", took.Round(time.Millisecond))
	if status != http.StatusOK || !strings.HasPrefix(contentType, "text/event-stream") {
		t.Fatalf("GET stream: %d %q, want 200 text/event-stream", status, contentType)
	}
}
