package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestStreamCloseFromOutside(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	ctx := t.Context()
	c, _ := connectMCPGo(t, ctx, ps.client)

	// A call in flight must not hold the session open.
	callErr := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "slow"
		_, err := c.CallTool(ctx, req)
		callErr <- err
	}()
	ts.waitSlowStarted(t, 1)

	start := time.Now()
	if err := ps.sess.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ps.wait(t); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Serve = %v, want ErrSessionClosed", err)
	}
	// Revocation must end live sessions within a second.
	if took := time.Since(start); took > time.Second {
		t.Errorf("session took %v to end after Close", took)
	}
	select {
	case <-ps.sess.Done():
	default:
		t.Error("Done not closed after Serve returned")
	}
	if err := <-callErr; err == nil {
		t.Error("the in-flight call succeeded on a closed session")
	}
	if got := ts.unregistered.Load(); got != 1 {
		t.Errorf("%d sessions unregistered, want 1", got)
	}
	if err := ps.sess.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStreamEnds(t *testing.T) {
	tests := []struct {
		name string
		// end ends the session while a slow call is in flight.
		end     func(ps *pipeSession, cancel context.CancelFunc)
		wantErr error
	}{
		{
			name:    "context cancelled",
			end:     func(_ *pipeSession, cancel context.CancelFunc) { cancel() },
			wantErr: context.Canceled,
		},
		{
			name:    "closed from outside",
			end:     func(ps *pipeSession, _ context.CancelFunc) { _ = ps.sess.Close() },
			wantErr: ErrSessionClosed,
		},
		{
			// The server reads EOF, lets the call run for DrainTimeout, then
			// cancels it; its response has nowhere to go.
			name:    "peer closed",
			end:     func(ps *pipeSession, _ context.CancelFunc) { _ = ps.client.Close() },
			wantErr: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			ts := newTestServer(t)
			client, conn := net.Pipe()
			sess, err := NewStreamSession(conn, ts.srv, StreamOptions{DrainTimeout: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- sess.Serve(ctx) }()
			ps := &pipeSession{client: client, sess: sess, errc: errc}
			defer func() { _ = client.Close() }()

			peer := newRawPeer(client)
			peer.send(t, request(1, "tools/call", map[string]any{"name": "slow", "_meta": modernMeta()}))
			ts.waitSlowStarted(t, 1)

			tc.end(ps, cancel)
			err = ps.wait(t)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Serve = %v, want %v", err, tc.wantErr)
			}
			if got := ts.unregistered.Load(); got != 1 {
				t.Errorf("%d sessions unregistered, want 1", got)
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestStreamPeerHalfClose checks that after the peer closes its sending side
// (TCP half-close), requests in flight still finish and their responses are
// written, within DrainTimeout.
func TestStreamPeerHalfClose(t *testing.T) {
	tests := []struct {
		name    string
		release bool // let the slow call finish during the drain
		// wantResult is whether the slow call's response carries a result
		// (true) or an error after cancellation at the drain timeout.
		wantResult bool
	}{
		{name: "in-flight call finishes", release: true, wantResult: true},
		{name: "drain timeout cancels it", release: false, wantResult: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			ts := newTestServer(t)
			client, conn := tcpPair(t)
			ps := serveConn(t, client, conn, ts.srv, StreamOptions{DrainTimeout: 100 * time.Millisecond})
			peer := newRawPeer(client)

			peer.send(t, request(1, "tools/call", map[string]any{"name": "slow", "_meta": modernMeta()}))
			ts.waitSlowStarted(t, 1)
			if err := client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if tc.release {
				close(ts.release)
			}

			resp := peer.recv(t)
			if resp["id"] != float64(1) {
				t.Fatalf("got %v, want the response to request 1", resp)
			}
			if _, ok := resp["result"]; ok != tc.wantResult {
				t.Errorf("response %v: has result = %v, want %v", resp, ok, tc.wantResult)
			}
			peer.expectEOF(t)
			if err := ps.wait(t); err != nil {
				t.Errorf("Serve = %v, want nil after the peer closed", err)
			}
		})
	}
}

func TestStreamSessionMisuse(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)

	t.Run("closed before Serve", func(t *testing.T) {
		client, conn := net.Pipe()
		defer func() { _ = client.Close() }()
		sess, err := NewStreamSession(conn, ts.srv, StreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = sess.Close()
		if err := sess.Serve(t.Context()); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("Serve after Close = %v, want ErrSessionClosed", err)
		}
		if err := sess.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "twice") {
			t.Errorf("second Serve = %v, want an error", err)
		}
		if got := ts.registered.Load(); got != 0 {
			t.Errorf("a session closed before Serve was registered")
		}
	})

	t.Run("invalid options", func(t *testing.T) {
		client, conn := net.Pipe()
		defer func() { _ = client.Close(); _ = conn.Close() }()
		for _, tc := range []struct {
			name string
			opts StreamOptions
			want string
		}{
			{name: "negative max message", opts: StreamOptions{MaxMessageBytes: -1}, want: "MaxMessageBytes"},
			{name: "negative in flight", opts: StreamOptions{MaxInFlight: -1}, want: "MaxInFlight"},
			{name: "negative write timeout", opts: StreamOptions{WriteTimeout: -time.Second}, want: "WriteTimeout"},
			{name: "negative drain timeout", opts: StreamOptions{DrainTimeout: -time.Second}, want: "DrainTimeout"},
			{name: "negative buffer", opts: StreamOptions{NotificationBuffer: -1}, want: "NotificationBuffer"},
		} {
			if _, err := NewStreamSession(conn, ts.srv, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.want)
			}
		}
		if _, err := NewStreamSession(nil, ts.srv, StreamOptions{}); err == nil {
			t.Error("nil stream accepted")
		}
		if _, err := NewStreamSession(conn, nil, StreamOptions{}); err == nil {
			t.Error("nil MCP server accepted")
		}
	})
}
