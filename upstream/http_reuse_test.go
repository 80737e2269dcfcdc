package upstream_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// TestHTTPUpstreamReusesConnections: concurrent forwarded calls to an
// HTTP/1.1 upstream keep their connections open for the next calls. With
// net/http's default of 2 idle connections per host, all but 2 of a burst
// of 16 were closed after it, and every burst paid a new TCP (and TLS)
// connection per call beyond 2.
func TestHTTPUpstreamReusesConnections(t *testing.T) {
	t.Parallel()
	const burst = 16
	var conns atomic.Int64
	srv := newTestServer("", nil)
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	f := startGateway(t, func(string) config.Upstream { return config.Upstream{Name: "up", URL: ts.URL + "/mcp"} })
	bot := f.g.Client(pkitest.KeyPair(t, f.g.Issue("bot", pki.RoleAgent, time.Hour)))
	round := func() {
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				// sleep holds each call open, so the burst needs burst
				// connections at once.
				servertest.CallTool(t, bot, "up.sleep", map[string]any{"ms": 200})
			})
		}
		wg.Wait()
	}
	round()
	after1 := conns.Load()
	round()
	round()
	// A connection is back in the idle pool a moment after its call
	// returns, so a next call may still open one now and then; without
	// reuse it is most of 2×burst.
	if opened := conns.Load() - after1; opened > burst/2 {
		t.Errorf("two more bursts of %d concurrent calls opened %d new connections to the upstream (first burst: %d), want them reused", burst, opened, after1)
	}
}
