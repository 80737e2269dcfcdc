package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// TestHTTPBodyTimeout: a POST whose body stops coming is answered 400 once
// BodyTimeout has passed, over HTTP/1.1 (a read deadline on the connection)
// and HTTP/2 (a timer that ends the stream's body), and the connection
// serves the next request; a body that comes in time is served.
//
// Not parallel: startHTTP checks for leaked goroutines when the test ends.
func TestHTTPBodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startHTTP(t, func(o *server.HTTPOptions) { o.BodyTimeout = timeout })
	cert, _ := h.issue("bot", pki.RoleOperator)
	for _, p := range []proto{h1Sniffed, h2ALPN} {
		t.Run(map[proto]string{h1Sniffed: "HTTP/1.1", h2ALPN: "HTTP/2"}[p], func(t *testing.T) {
			c := h.httpClient(&cert, p)
			post := func(body io.Reader) (*http.Response, error) {
				req, _ := http.NewRequest(http.MethodPost, h.url, body)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				return c.Do(req)
			}
			// Half a message, then nothing until the test ends.
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write([]byte(initializeBody[:len(initializeBody)/2])) }()
			start := time.Now()
			resp, err := post(pr)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("trickled body: status %d, want %d", resp.StatusCode, http.StatusBadRequest)
			}
			if took < timeout || took > timeout+5*time.Second {
				t.Fatalf("trickled body answered after %v, want BodyTimeout (%v)", took, timeout)
			}
			// A body in time, after the timeout has passed for the first.
			resp, err = post(strings.NewReader(initializeBody))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("prompt body: status %d, want %d", resp.StatusCode, http.StatusOK)
			}
		})
	}
}
