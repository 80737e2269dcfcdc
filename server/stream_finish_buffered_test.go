package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestFinishRunsNoRequestReadAfterIt (attack review of issue 16 item 2):
// Finish is how a revocation reaches a raw session ("answers what it is
// already running but reads nothing more"). A peer pipelines two calls in
// one write; the first runs inline on the read loop, and the revocation
// lands while it runs (here the tool calls Finish itself, which is what
// nefia.mtls.renew revoking the caller's own previous certificate amounts
// to). The second call is already in the LineReader's buffer, so the
// past read deadline Finish sets never stops it: the read loop takes it
// from the buffer and runs it, after the revocation, with the revoked
// identity. On the base commit the second call was dispatched to a worker
// as soon as it was read (before the first call's handler ran), so it was
// "already running"; with the inline read loop it starts only after the
// first call returned, i.e. after Finish.
func TestFinishRunsNoRequestReadAfterIt(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	var sess atomic.Pointer[StreamSession]
	var after atomic.Int32
	var finished atomic.Bool // Finish has returned: what runs from now on started after the revocation
	revoked := errors.New("test: certificate revoked")
	ts.srv.AddTool(mcp.NewTool("revoke-me", mcp.WithDescription("Finish the caller's session, as a revocation does.")),
		func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			sess.Load().Finish(revoked, testTimeout)
			finished.Store(true)
			return mcp.NewToolResultText("revoked"), nil
		})
	ts.srv.AddTool(mcp.NewTool("effect", mcp.WithDescription("Count calls.")),
		func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if finished.Load() {
				after.Add(1)
			}
			return mcp.NewToolResultText("done"), nil
		})
	client, conn := tcpPair(t)
	ps := serveConn(t, client, conn, ts.srv, StreamOptions{DirectWrites: true, ContextFunc: withIdentity("agent-1")})
	sess.Store(ps.sess)
	peer := newRawPeer(client)
	initialize(t, peer)
	peer.sendLine(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"revoke-me","arguments":{}}}`+"\n"+
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"effect","arguments":{}}}`)
	var ids []any
	for {
		msg, err := peer.tryRecv()
		if err != nil {
			break
		}
		ids = append(ids, msg["id"])
	}
	select {
	case <-ps.sess.Done():
	case <-time.After(testTimeout):
		t.Fatal("the finished session did not end")
	}
	if n := after.Load(); n != 0 {
		t.Errorf("the call read behind the one during which the session was finished (revoked) started %d time(s) after Finish returned (answers to ids %v), want 0: Finish reads nothing more, but the read loop took it from its buffer", n, ids)
	}
}

// TestClosedSessionRunsNoBufferedRequest (attack review of issue 16 item
// 2): Close (a certificate that expired mid-session, shutdown) cancels the
// handlers' context and closes the stream, but a call already in the
// LineReader's buffer is still dispatched: dispatch's select between a
// free slot and the cancelled context picks at random, and a tool that
// does not poll its context (most of nefia's: they write the store) runs
// for a session that has ended. Pipelined behind an inline call during
// which the session is closed, it ran in about half the runs.
func TestClosedSessionRunsNoBufferedRequest(t *testing.T) {
	verifyNoLeaks(t)
	var after atomic.Int32
	var closed atomic.Bool // Close has returned: what starts from now on started after it
	const runs = 20
	for range runs {
		closed.Store(false)
		ts := newTestServer(t)
		var sess atomic.Pointer[StreamSession]
		ts.srv.AddTool(mcp.NewTool("close-me", mcp.WithDescription("Close the caller's session.")),
			func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				sess.Load().Close()
				closed.Store(true)
				return mcp.NewToolResultText("closed"), nil
			})
		ts.srv.AddTool(mcp.NewTool("effect", mcp.WithDescription("Count calls.")),
			func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				if closed.Load() {
					after.Add(1)
				}
				return mcp.NewToolResultText("done"), nil
			})
		client, conn := tcpPair(t)
		ps := serveConn(t, client, conn, ts.srv, StreamOptions{DirectWrites: true, ContextFunc: withIdentity("agent-1")})
		sess.Store(ps.sess)
		peer := newRawPeer(client)
		initialize(t, peer)
		peer.sendLine(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"close-me","arguments":{}}}`+"\n"+
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"effect","arguments":{}}}`)
		select {
		case <-ps.sess.Done():
		case <-time.After(testTimeout):
			t.Fatal("the closed session did not end")
		}
	}
	if n := after.Load(); n != 0 {
		t.Errorf("in %d runs, a call read before Close started %d time(s) after Close returned, want 0", runs, n)
	}
}
