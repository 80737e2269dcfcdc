package server

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// deadlineConn counts the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set atomic.Int64
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

// TestStreamWriteUsesDeadline: on a stream with write deadlines every
// answer is written under one (WriteTimeout from now) instead of a timer
// of its own per write (issue 16 item 3); TestStreamBackpressure checks
// that a peer that stops reading still ends the session with
// ErrWriteTimeout.
func TestStreamWriteUsesDeadline(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	client, conn := net.Pipe()
	dc := &deadlineConn{Conn: conn}
	ps := serveConn(t, client, dc, ts.srv, StreamOptions{WriteTimeout: time.Minute})
	peer := newRawPeer(ps.client)
	const calls = 3
	for id := range calls {
		peer.send(t, request(id, "ping", nil))
		if resp := peer.recv(t); resp["result"] == nil {
			t.Fatalf("ping %d: %v", id, resp)
		}
	}
	if n := dc.set.Load(); n < calls {
		t.Errorf("%d write deadlines set for %d answers, want one per answer", n, calls)
	}
}
