package server

import (
	"testing"
	"time"
)

// TestPingSessionGoroutines counts the goroutines a whole stream session
// starts for the commonest short connection: a ping, then the peer closes
// (the bench's handshake_full workload, issue 16). The idle watch is a
// timer rather than a goroutine waiting on one, and nothing in flight at
// the close means no drain goroutine: the session's own goroutine (here
// serveConn's) and its writer remain. On the base commit: 4 per session.
// Not parallel: it counts the process's goroutine creations.
func TestPingSessionGoroutines(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	const n = 20
	before := goroutinesCreated(t)
	for i := range n {
		ps := servePipe(t, ts.srv, StreamOptions{
			ContextFunc:  withIdentity("agent-1"),
			IdleTimeout:  time.Minute,
			DirectWrites: true, // as the gateway's: the answer is written on the read loop
		})
		peer := newRawPeer(ps.client)
		peer.sendLine(t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		if msg := peer.recv(t); msg["result"] == nil {
			t.Fatalf("session %d: ping answered with %v", i, msg)
		}
		_ = ps.client.Close()
		if err := ps.wait(t); err != nil {
			t.Fatalf("session %d: Serve: %v", i, err)
		}
	}
	perSession := float64(goroutinesCreated(t)-before) / n
	t.Logf("%.2f goroutines created per session (ping, then close)", perSession)
	if perSession > 2.5 {
		t.Errorf("%.2f goroutines created per session of one ping, want at most 2 (Serve's and the writer)", perSession)
	}
}

// TestIdleTimerStopsForGood: the idle timer of a session that has ended is
// never set again, even by a check running as Serve stops it.
func TestIdleTimerStopsForGood(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{ContextFunc: withIdentity("agent-1"), IdleTimeout: time.Hour})
	_ = ps.client.Close()
	if err := ps.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	ps.sess.checkIdle() // as if it had fired while Serve ended
	if ps.sess.idle.Stop() {
		t.Error("the idle timer of an ended session was set again")
	}
}
