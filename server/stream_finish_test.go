package server

import (
	"errors"
	"testing"
	"time"
)

// TestStreamFinish (issue 13, revoke_previous): a session ended by Finish
// (revocation) still answers the call it was running, serves nothing sent
// after it, and is cut at the grace period if the call does not finish; with
// nothing in flight it ends at once.
func TestStreamFinish(t *testing.T) {
	verifyNoLeaks(t)
	cause := errors.New("revoked")
	tests := []struct {
		name     string
		inFlight bool
		release  bool // the slow call finishes within the grace period
	}{
		{name: "nothing in flight: at once"},
		{name: "the running call is answered", inFlight: true, release: true},
		{name: "a call past the grace period is cut", inFlight: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			ps := servePipe(t, ts.srv, StreamOptions{})
			peer := newRawPeer(ps.client)
			peer.send(t, request(1, "ping", nil))
			peer.recv(t)
			if tt.inFlight {
				peer.send(t, request(2, "tools/call", map[string]any{"name": "slow", "arguments": map[string]any{}}))
				ts.waitSlowStarted(t, 1)
			}
			const grace = 300 * time.Millisecond
			start := time.Now()
			ps.sess.Finish(cause, grace)
			if tt.inFlight {
				// Sent after the revocation: never served. net.Pipe blocks
				// a write nobody reads, so it is sent in the background.
				go func() {
					_ = ps.client.SetWriteDeadline(time.Now().Add(grace))
					_, _ = ps.client.Write([]byte(`{"jsonrpc":"2.0","id":3,"method":"ping"}` + "\n"))
				}()
			}
			if tt.release {
				close(ts.release)
				res := peer.recv(t)
				if res["id"] != float64(2) || res["result"] == nil {
					t.Fatalf("the running call was answered %v, want its result", res)
				}
			}
			if err := ps.wait(t); !errors.Is(err, cause) {
				t.Fatalf("Serve = %v, want the Finish cause", err)
			}
			took := time.Since(start)
			switch {
			case !tt.inFlight && took > grace/2:
				t.Errorf("nothing in flight, yet the session took %v to end", took)
			case tt.inFlight && !tt.release && took < grace*3/4:
				t.Errorf("cut after %v, before the grace period of %v", took, grace)
			}
			peer.expectEOF(t) // and no answer to id 3
		})
	}
}
