package server_test

import (
	"crypto/tls"
	"net/http"
	"sync"
	"testing"
	"unsafe"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// TestHTTPIdentifyOnPresizedStack (issue 12 item 2): a POST's per-request
// identity check (Gateway.identify: chain, revocation, role) runs on a
// stack already grown for the request, so going 20 KiB deeper from there
// does not copy it. It ran before the stack was presized, and grew it on
// its own: one more copy per forwarded HTTP call (the profile's
// runtime.newstack under identify, 2% of the gateway's CPU).
func TestHTTPIdentifyOnPresizedStack(t *testing.T) {
	var mu sync.Mutex
	var moved []bool
	h := startHTTP(t, func(o *server.HTTPOptions) {
		base := o.Identify
		o.Identify = func(cs *tls.ConnectionState) (identity.Agent, error) {
			var local byte
			before := uintptr(unsafe.Pointer(&local))
			deepenStack(20)
			mu.Lock()
			moved = append(moved, uintptr(unsafe.Pointer(&local)) != before)
			mu.Unlock()
			return base(cs)
		}
	})
	cert, _ := h.issue("op", pki.RoleOperator)
	c := h.httpClient(&cert, h2ALPN) // HTTP/2: each request on a goroutine of its own
	const posts = 5
	for range posts {
		// Whatever mcp-go answers a ping without a session, the
		// request has been identified first.
		if resp := post(t, c, h.url, "", `{"jsonrpc":"2.0","id":1,"method":"ping"}`); resp.StatusCode == http.StatusForbidden {
			t.Fatalf("POST ping: %s", resp.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The first call is the connection's own check, in ServeConn.
	if len(moved) != posts+1 {
		t.Fatalf("identify ran %d times, want %d", len(moved), posts+1)
	}
	copies := 0
	for _, m := range moved[1:] {
		if m {
			copies++
		}
	}
	if copies > 0 {
		t.Errorf("the stack was copied below identify in %d of %d POSTs, want 0", copies, posts)
	}
}

// deepenStack uses n frames of 1 KiB each.
//
//go:noinline
func deepenStack(n int) byte {
	var pad [1 << 10]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return deepenStack(n-1) + pad[(n+1)%len(pad)]
}
