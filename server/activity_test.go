package server

import (
	"context"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
)

// TestCallActivityReachedThroughContext (issue 16, second wave, item 1): a
// call is counted against the connection record its context carries,
// without the gateway's lock and without looking at other connections.
// Before, activityObserver searched every live connection for the call's
// remote address under Gateway.mu (O(connections) per call, about 1.5 µs
// of the 86 µs of a status call at 50 sessions, and every session's calls
// queued on that one mutex): with the lock held, as here, a call blocked.
func TestCallActivityReachedThroughContext(t *testing.T) {
	t.Parallel()
	g := &Gateway{conns: map[*trackedConn]struct{}{}}
	for range 100 { // other connections: none is looked at
		g.conns[&trackedConn{remote: "127.0.0.1:1", act: newActivity()}] = struct{}{}
	}
	mine := newActivity()
	agent := identity.Agent{Name: "bot", Serial: "01", RemoteAddr: "127.0.0.1:1"} // the same address as the others
	ctx := identity.WithAgent(withActivity(context.Background(), mine), agent)
	hooks := &callHooks{obs: observe.Multi{}}

	g.mu.Lock() // held throughout: counting must not need it
	defer g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			req := &mcp.CallToolRequest{}
			req.Params.Name = "nefia.mtls.status"
			hooks.report(ctx, req, audit.OutcomeOK, "")
		}
		// Outside a gateway connection (stdio mode) and without an
		// identity nothing is counted, and nothing fails.
		hooks.report(identity.WithAgent(context.Background(), agent), &mcp.CallToolRequest{}, audit.OutcomeOK, "")
		hooks.report(withActivity(context.Background(), mine), &mcp.CallToolRequest{}, audit.OutcomeError, "no identity")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("counting a call waits for the gateway's lock")
	}
	if n := mine.calls.Load(); n != 3 {
		t.Errorf("calls counted on the connection: %d, want 3", n)
	}
	if mine.last.Load() == 0 {
		t.Error("last activity not recorded")
	}
	for tc := range g.conns {
		if n := tc.act.calls.Load(); n != 0 {
			t.Fatalf("a call was counted on another connection (%d)", n)
		}
	}
}

// TestCallActivityLastOnlyMovesForward: calls of one connection may
// finish out of order (an HTTP connection's requests, a raw session's
// workers); the last activity is the latest of them.
func TestCallActivityLastOnlyMovesForward(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		times []int64
		want  int64
	}{
		{"in order", []int64{10, 20, 30}, 30},
		{"out of order", []int64{30, 10, 20}, 30},
		{"equal", []int64{5, 5}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newActivity()
			for _, at := range tc.times {
				a.called(at)
			}
			if got := a.last.Load(); got != tc.want {
				t.Errorf("last = %d, want %d", got, tc.want)
			}
			if got := a.calls.Load(); got != int64(len(tc.times)) {
				t.Errorf("calls = %d, want %d", got, len(tc.times))
			}
		})
	}
}

// TestCallActivityNoAlloc: counting a call allocates nothing.
func TestCallActivityNoAlloc(t *testing.T) {
	act := newActivity()
	ctx := identity.WithAgent(withActivity(context.Background(), act), identity.Agent{Name: "bot"})
	hooks := &callHooks{}
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { hooks.counted(ctx, true, now) }); n != 0 {
		t.Errorf("counting a call: %v allocations, want 0", n)
	}
}
