package server

import (
	"errors"
	"testing"
	"time"
)

// TestStreamIdleTimeout (issue 10 item 3): a session that receives nothing
// for IdleTimeout ends with ErrIdleTimeout, freeing whatever holds it; a
// request in flight is activity, so a long call is never cut, and the idle
// time counts from its answer.
func TestStreamIdleTimeout(t *testing.T) {
	verifyNoLeaks(t)
	const idle = 200 * time.Millisecond
	tests := []struct {
		name   string
		inCall bool // a slow call runs for 3×idle first
	}{
		{name: "idle from the start"},
		{name: "a call in flight is activity", inCall: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			ps := servePipe(t, ts.srv, StreamOptions{IdleTimeout: idle})
			peer := newRawPeer(ps.client)
			peer.send(t, request(1, "ping", nil))
			peer.recv(t)
			start := time.Now()
			if tt.inCall {
				peer.send(t, request(2, "tools/call", map[string]any{"name": "slow", "arguments": map[string]any{}}))
				ts.waitSlowStarted(t, 1)
				select {
				case err := <-ps.errc:
					t.Fatalf("session ended with a call in flight: %v", err)
				case <-time.After(3 * idle):
				}
				close(ts.release)
				if res := peer.recv(t); res["result"] == nil {
					t.Fatalf("slow call answered %v", res)
				}
				start = time.Now()
			}
			err := ps.wait(t)
			took := time.Since(start)
			if !errors.Is(err, ErrIdleTimeout) {
				t.Fatalf("Serve = %v, want ErrIdleTimeout", err)
			}
			if took < idle*3/4 || took > idle+2*time.Second {
				t.Errorf("ended %v after the last activity, want about %v", took, idle)
			}
			peer.expectEOF(t)
		})
	}
}
