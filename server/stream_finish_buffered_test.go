package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestNoRequestServedAfterItsSessionEnds (attack review of issue 16 item
// 2): a peer pipelines two calls in one write; the first runs inline on
// the read loop and ends the session while it runs, the second is already
// in the LineReader's buffer.
//
//   - Finish is how a revocation reaches a raw session ("answers what it
//     is already running but reads nothing more"; here the tool calls it
//     itself, which is what nefia.mtls.renew revoking the caller's own
//     previous certificate amounts to). Its past read deadline never
//     stopped a buffered line: the read loop took it and ran it after the
//     revocation, with the revoked identity, in every run.
//   - Close (a certificate that expired mid-session, shutdown) cancels the
//     handlers' context, but dispatch's select between a free slot and the
//     cancelled context picked at random, and a tool that does not poll
//     its context (most of nefia's: they write the store) ran for a
//     session that had ended: in about half the runs.
//
// On the base commit the second call was dispatched to a worker as soon as
// it was read, before the first call's handler ran, so it was "already
// running"; with the inline read loop it would start only after the first
// call returned.
func TestNoRequestServedAfterItsSessionEnds(t *testing.T) {
	verifyNoLeaks(t)
	tests := []struct {
		name string
		end  func(*StreamSession)
	}{
		{"finish (revocation)", func(s *StreamSession) { s.Finish(errors.New("test: certificate revoked"), testTimeout) }},
		{"close (expiry, shutdown)", func(s *StreamSession) { s.Close() }},
	}
	const runs = 20
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var after atomic.Int32
			for range runs {
				var ended atomic.Bool // the session was ended: what starts from now on started after it
				var sess atomic.Pointer[StreamSession]
				ts := newTestServer(t)
				ts.srv.AddTool(mcp.NewTool("end-me", mcp.WithDescription("End the caller's session.")),
					func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
						tt.end(sess.Load())
						ended.Store(true)
						return mcp.NewToolResultText("ended"), nil
					})
				ts.srv.AddTool(mcp.NewTool("effect", mcp.WithDescription("Count calls.")),
					func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
						if ended.Load() {
							after.Add(1)
						}
						return mcp.NewToolResultText("done"), nil
					})
				client, conn := tcpPair(t)
				ps := serveConn(t, client, conn, ts.srv, StreamOptions{DirectWrites: true, ContextFunc: withIdentity("agent-1")})
				sess.Store(ps.sess)
				peer := newRawPeer(client)
				initialize(t, peer)
				peer.sendLine(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"end-me","arguments":{}}}`+"\n"+
					`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"effect","arguments":{}}}`)
				for {
					if _, err := peer.tryRecv(); err != nil {
						break
					}
				}
				select {
				case <-ps.sess.Done():
				case <-time.After(testTimeout):
					t.Fatal("the ended session did not end")
				}
			}
			if n := after.Load(); n != 0 {
				t.Errorf("in %d runs, a call read before the session ended started %d time(s) after it ended, want 0", runs, n)
			}
		})
	}
}
