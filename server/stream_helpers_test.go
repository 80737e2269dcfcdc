package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"go.uber.org/goleak"
)

// testTimeout bounds every wait in these tests; nothing should come near it.
const testTimeout = 10 * time.Second

// verifyNoLeaks checks, after every other cleanup of the test has run, that
// the test left no goroutine behind; goroutines that were already running
// (other tests' business) are ignored. Tests using it must not be parallel.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) })
}

// identityKey carries a fake authenticated identity, as the gateway's
// ContextFunc will carry the certificate's.
type identityKey struct{}

// withIdentity is a StreamOptions.ContextFunc attaching name.
func withIdentity(name string) func(context.Context) context.Context {
	return func(ctx context.Context) context.Context {
		return context.WithValue(ctx, identityKey{}, name)
	}
}

type echoArgs struct {
	Text string `json:"text" jsonschema:"text to echo back"`
}

type echoResult struct {
	Text      string `json:"text"`
	SessionID string `json:"session_id"`
	Identity  string `json:"identity"`
}

// testServer is an MCP server with tools that exercise the transport.
type testServer struct {
	srv          *mcpserver.MCPServer
	slowStarted  chan struct{} // one value per slow call that started
	release      chan struct{} // closing it lets slow calls finish
	registered   atomic.Int32
	unregistered atomic.Int32
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{
		slowStarted: make(chan struct{}, 100),
		release:     make(chan struct{}),
	}
	hooks := &mcpserver.Hooks{}
	hooks.AddOnRegisterSession(func(context.Context, mcpserver.ClientSession) { ts.registered.Add(1) })
	hooks.AddOnUnregisterSession(func(context.Context, mcpserver.ClientSession) { ts.unregistered.Add(1) })
	ts.srv = mcpserver.NewMCPServer("nefia-test", "0.0.1",
		mcpserver.WithToolCapabilities(true),
		mcpserver.WithHooks(hooks),
	)

	ts.srv.AddTool(mcp.NewTool("echo",
		mcp.WithDescription("Echo text back with the caller's session and identity."),
		mcp.WithInputSchema[echoArgs](),
		mcp.WithOutputSchema[echoResult](),
		mcp.WithReadOnlyHintAnnotation(true),
	), mcp.NewStructuredToolHandler(func(ctx context.Context, _ mcp.CallToolRequest, args echoArgs) (echoResult, error) {
		res := echoResult{Text: args.Text}
		if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
			res.SessionID = s.SessionID()
		}
		res.Identity, _ = ctx.Value(identityKey{}).(string)
		return res, nil
	}))

	ts.srv.AddTool(mcp.NewTool("slow", mcp.WithDescription("Block until released.")),
		func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			ts.slowStarted <- struct{}{}
			select {
			case <-ts.release:
				return mcp.NewToolResultText("slow done"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})

	ts.srv.AddTool(mcp.NewTool("notify", mcp.WithDescription("Send a progress notification, then return.")),
		func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			err := mcpserver.ServerFromContext(ctx).SendNotificationToClient(ctx, "notifications/progress",
				map[string]any{"progressToken": "p1", "progress": 1})
			if err != nil {
				return nil, err
			}
			return mcp.NewToolResultText("notified"), nil
		})

	ts.srv.AddTool(mcp.NewTool("panic", mcp.WithDescription("Panic.")),
		func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			panic("tool panicked")
		})
	return ts
}

// waitSlowStarted waits for n slow calls to have started.
func (ts *testServer) waitSlowStarted(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-ts.slowStarted:
		case <-time.After(testTimeout):
			t.Fatal("slow tool call did not start")
		}
	}
}

// pipeSession is a StreamSession serving one end of a net.Pipe.
type pipeSession struct {
	client net.Conn
	sess   *StreamSession
	errc   chan error // Serve's result
}

// serveConn serves MCP on conn in the background; the test's cleanup closes
// both ends and waits for Serve.
func serveConn(t *testing.T, client, conn net.Conn, srv *mcpserver.MCPServer, opts StreamOptions) *pipeSession {
	t.Helper()
	sess, err := NewStreamSession(conn, srv, opts)
	if err != nil {
		t.Fatalf("NewStreamSession: %v", err)
	}
	ps := &pipeSession{client: client, sess: sess, errc: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ps.errc <- sess.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		_ = client.Close()
		select {
		case <-sess.Done():
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cleanup")
		}
	})
	return ps
}

// servePipe serves MCP over a fresh net.Pipe.
func servePipe(t *testing.T, srv *mcpserver.MCPServer, opts StreamOptions) *pipeSession {
	t.Helper()
	client, conn := net.Pipe()
	return serveConn(t, client, conn, srv, opts)
}

// wait returns Serve's result.
func (ps *pipeSession) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ps.errc:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

// rawPeer speaks newline-delimited JSON-RPC by hand.
type rawPeer struct {
	conn net.Conn
	r    *bufio.Reader
}

func newRawPeer(conn net.Conn) *rawPeer {
	return &rawPeer{conn: conn, r: bufio.NewReader(conn)}
}

// sendLine writes one line (a newline is added).
func (p *rawPeer) sendLine(t *testing.T, line string) {
	t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := p.conn.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("writing %q: %v", line, err)
	}
}

// send writes v as one JSON line.
func (p *rawPeer) send(t *testing.T, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encoding: %v", err)
	}
	p.sendLine(t, string(b))
}

// recv reads one JSON line.
func (p *rawPeer) recv(t *testing.T) map[string]any {
	t.Helper()
	msg, err := p.tryRecv()
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return msg
}

func (p *rawPeer) tryRecv() (map[string]any, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(testTimeout))
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var msg map[string]any
	if err := json.Unmarshal(line, &msg); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", line, err)
	}
	return msg, nil
}

// expectEOF checks that the server closed the connection.
func (p *rawPeer) expectEOF(t *testing.T) {
	t.Helper()
	msg, err := p.tryRecv()
	if err == nil {
		t.Fatalf("got %v, want the connection closed", msg)
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("connection still open: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// modernMeta is the _meta a 2026-07-28 request carries instead of a handshake.
func modernMeta() map[string]any {
	return map[string]any{
		mcp.MetaKeyProtocolVersion:    mcp.ProtocolVersion20260728,
		mcp.MetaKeyClientInfo:         map[string]any{"name": "raw-modern", "version": "1.0.0"},
		mcp.MetaKeyClientCapabilities: map[string]any{},
	}
}

// request builds a JSON-RPC request.
func request(id any, method string, params map[string]any) map[string]any {
	msg := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	return msg
}

// errorCode returns a response's JSON-RPC error code, or 0 if it is no error.
func errorCode(msg map[string]any) int {
	e, ok := msg["error"].(map[string]any)
	if !ok {
		return 0
	}
	code, _ := e["code"].(float64)
	return int(code)
}
