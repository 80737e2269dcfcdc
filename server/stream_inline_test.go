package server

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// goid returns the calling goroutine's id, from its stack header.
func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(buf[:bytes.IndexByte(buf, ' ')]), 10, 64)
	return id
}

// goroutineConn records which goroutine last read from the connection and
// which wrote to it last.
type goroutineConn struct {
	net.Conn
	mu            sync.Mutex
	reader, write uint64
}

func (c *goroutineConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.reader = goid()
		c.mu.Unlock()
	}
	return n, err
}

func (c *goroutineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.write = goid()
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *goroutineConn) last() (reader, writer uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reader, c.write
}

// initialize performs the initialize handshake on peer.
func initialize(t *testing.T, peer *rawPeer) {
	t.Helper()
	peer.send(t, request(0, "initialize", map[string]any{
		"protocolVersion": "2025-11-25", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "t", "version": "1"},
	}))
	peer.recv(t)
	peer.sendLine(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
}

// TestLoneRequestNoHandOff (issue 16 item 2): a request alone on its
// session runs on the goroutine that read it and its answer is written by
// that goroutine too: no hand-off to a worker, none to the writer. Before,
// each of 200 calls went reader → worker → writer (200 of 200 answers
// written by another goroutine than the reader's, 200 of 200 handlers run
// elsewhere); a few may still be handed off when the race detector makes a
// call outlast inlineBudget. Not parallel: it compares goroutines.
func TestLoneRequestNoHandOff(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	var handler atomic.Uint64
	ts.srv.AddTool(mcp.NewTool("where", mcp.WithDescription("Record the handler's goroutine.")),
		func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			handler.Store(goid())
			return mcp.NewToolResultText("here"), nil
		})
	client, conn := net.Pipe()
	rec := &goroutineConn{Conn: conn}
	serveConn(t, client, rec, ts.srv, StreamOptions{DirectWrites: true, ContextFunc: withIdentity("agent-1")})
	peer := newRawPeer(client)
	initialize(t, peer)
	const n = 200
	ranElsewhere, writtenElsewhere := 0, 0
	for i := range n {
		peer.sendLine(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"where","arguments":{}}}`, i+1))
		if msg := peer.recv(t); msg["result"] == nil {
			t.Fatalf("call %d: %v", i, msg)
		}
		reader, writer := rec.last()
		if handler.Load() != reader {
			ranElsewhere++
		}
		if writer != reader {
			writtenElsewhere++
		}
	}
	t.Logf("of %d lone calls, %d ran on another goroutine than their reader's, %d were written by another", n, ranElsewhere, writtenElsewhere)
	if ranElsewhere > n/10 || writtenElsewhere > n/10 {
		t.Errorf("%d of %d lone calls ran elsewhere and %d were written elsewhere, want ≤ %d each: they are handed off",
			ranElsewhere, n, writtenElsewhere, n/10)
	}
}

// TestSlowLoneRequestKeepsReading (issue 16 item 2): a lone request that
// runs on the read loop and turns out slow does not stop the session's
// reading: past inlineBudget the loop moves to another goroutine, so a
// ping sent behind it is answered while it runs, and a
// notifications/cancelled for it reaches it. On both kinds of stream.
func TestSlowLoneRequestKeepsReading(t *testing.T) {
	verifyNoLeaks(t)
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct writes %v", direct), func(t *testing.T) {
			ts := newTestServer(t)
			started, cancelled := make(chan struct{}), make(chan struct{})
			ts.srv.AddTool(mcp.NewTool("wait", mcp.WithDescription("Block until cancelled.")),
				func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					close(started)
					<-ctx.Done()
					close(cancelled)
					return nil, ctx.Err()
				})
			ps := servePipe(t, ts.srv, StreamOptions{DirectWrites: direct})
			peer := newRawPeer(ps.client)
			initialize(t, peer)
			peer.send(t, request("slow-1", "tools/call", map[string]any{"name": "wait", "arguments": map[string]any{}}))
			<-started
			start := time.Now()
			peer.send(t, request("p", "ping", nil))
			if msg := peer.recv(t); msg["id"] != "p" || msg["result"] == nil {
				t.Fatalf("got %v, want the ping's answer while the slow call runs", msg)
			}
			t.Logf("ping answered %v after it was sent behind the slow call", time.Since(start))
			peer.send(t, map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
				"params": map[string]any{"requestId": "slow-1"}})
			select {
			case <-cancelled:
			case <-time.After(testTimeout):
				t.Fatal("the slow call was not cancelled")
			}
			// The session goes on: the next call is served.
			peer.send(t, request(3, "tools/call", map[string]any{"name": "echo", "arguments": map[string]any{"text": "after"}}))
			msg := peer.recv(t)
			if msg["id"] == "slow-1" { // the cancelled call's answer, if mcp-go sends one
				msg = peer.recv(t)
			}
			if msg["id"] != float64(3) || msg["result"] == nil {
				t.Fatalf("got %v, want the call after the cancelled one answered", msg)
			}
		})
	}
}

// TestByteBudgetReleaseNoAlloc (issue 16 item 3): taking and giving back a
// request's bytes allocates nothing when nobody waits for them (every
// request on a session that is not at its limit): before, each release
// made a new wake channel. A waiter is still woken by a release.
func TestByteBudgetReleaseNoAlloc(t *testing.T) {
	b := newByteBudget(100)
	if n := testing.AllocsPerRun(100, func() {
		if err := b.acquire(context.Background(), 60); err != nil {
			t.Fatal(err)
		}
		b.release(60)
	}); n != 0 {
		t.Errorf("%v allocations per request's bytes, want 0", n)
	}
	if err := b.acquire(context.Background(), 60); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(context.Background(), 60) }()
	for { // until the second acquire waits: it took the lock and found too little
		b.mu.Lock()
		waiting := b.waiting
		b.mu.Unlock()
		if waiting {
			break
		}
		runtime.Gosched()
	}
	b.release(60)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("a release did not wake the waiting acquire")
	}
}
