package upstream_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// TestHTTPUpstreamErrorStatusBodyBounded: an answer with an error status
// is read only up to the message size limit, whatever its Content-Type.
// limitTransport bounds a text/event-stream body per event, not as a
// whole, so an upstream answering 500 with an event stream of tiny events
// got statusAnswer's io.ReadAll to buffer all of it (up to call_timeout
// times the link's speed) just to quote its first 200 bytes.
func TestHTTPUpstreamErrorStatusBodyBounded(t *testing.T) {
	t.Parallel()
	const answer = 8 * upstream.MaxMessageBytes
	var sent atomic.Int64
	done := make(chan struct{}, 1)
	s := newScripted()
	s.call = func(w http.ResponseWriter, _ string) {
		defer func() {
			select {
			case done <- struct{}{}:
			default:
			}
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusInternalServerError)
		chunk := bytes.Repeat([]byte("data: x\n\n"), 64<<10/9)
		for written := 0; written < answer; written += len(chunk) {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	ts := httptest.NewUnstartedServer(s)
	ts.Listener = smallSendBuffer{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	f := startGateway(t, func(string) config.Upstream { return config.Upstream{Name: "up", URL: ts.URL + "/mcp"} })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	res := servertest.CallTool(t, bot, "up.do", nil)
	if !res.IsError || !strings.Contains(text(res), "status 500") {
		t.Errorf("up.do answered 500 = %.300q (isError %v), want a tool error naming the status", text(res), res.IsError)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's error body was neither read to its end nor dropped within 10s")
	}
	t.Logf("the upstream got %d bytes of a %d-byte error body out", sent.Load(), answer)
	if n := sent.Load(); n > 4*upstream.MaxMessageBytes {
		t.Errorf("the upstream got %d bytes of its error body out: the gateway read (and buffered) past the %d-byte limit", n, upstream.MaxMessageBytes)
	}
}
