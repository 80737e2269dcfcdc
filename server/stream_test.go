package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// connectMCPGo connects mark3labs/mcp-go's client over conn and initializes
// it; the client negotiates 2026-07-28 through server/discover unless opts
// pin an earlier version.
func connectMCPGo(t *testing.T, ctx context.Context, conn net.Conn, opts ...mcpclient.ClientOption) (*mcpclient.Client, *mcp.InitializeResult) {
	t.Helper()
	c := mcpclient.NewClient(transport.NewIO(quietClose{conn}, conn, nil), opts...)
	if err := c.Start(ctx); err != nil {
		t.Fatalf("starting mcp-go client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "mcp-go-test", Version: "1.0.0"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initializing mcp-go client: %v", err)
	}
	return c, res
}

// quietClose reports reads from its own closed end of a net.Pipe as EOF, so
// that closing mcp-go's client does not log a read error.
type quietClose struct{ io.Reader }

func (q quietClose) Read(p []byte) (int, error) {
	n, err := q.Reader.Read(p)
	if errors.Is(err, io.ErrClosedPipe) {
		err = io.EOF
	}
	return n, err
}

// callEcho calls the echo tool through mcp-go's client and decodes its
// structured result.
func callEcho(ctx context.Context, c *mcpclient.Client, text string) (echoResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "echo"
	req.Params.Arguments = map[string]any{"text": text}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return echoResult{}, fmt.Errorf("calling echo: %w", err)
	}
	if res.IsError {
		return echoResult{}, fmt.Errorf("echo returned a tool error: %+v", res.Content)
	}
	if len(res.Content) == 0 {
		return echoResult{}, fmt.Errorf("echo returned no text content")
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return echoResult{}, err
	}
	var out echoResult
	if err := json.Unmarshal(b, &out); err != nil {
		return echoResult{}, fmt.Errorf("decoding structured content %s: %w", b, err)
	}
	return out, nil
}

func TestStreamMCPGoClient(t *testing.T) {
	tests := []struct {
		name        string
		opts        []mcpclient.ClientOption
		wantVersion string
		// wantSessionVersion is what the handshake records on the session:
		// nothing for 2026-07-28, which has no handshake.
		wantSessionVersion string
	}{
		{
			name:               "2025-11-25 initialize handshake",
			opts:               []mcpclient.ClientOption{mcpclient.WithProtocolVersion(mcp.ProtocolVersion20251125)},
			wantVersion:        mcp.ProtocolVersion20251125,
			wantSessionVersion: mcp.ProtocolVersion20251125,
		},
		{
			name:        "2026-07-28 stateless via server/discover",
			wantVersion: mcp.ProtocolVersion20260728,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			ts := newTestServer(t)
			ps := servePipe(t, ts.srv, StreamOptions{ContextFunc: withIdentity("agent-7")})
			ctx := t.Context()

			c, init := connectMCPGo(t, ctx, ps.client, tc.opts...)
			if init.ProtocolVersion != tc.wantVersion || c.ProtocolVersion() != tc.wantVersion {
				t.Errorf("protocol version = %q (client %q), want %q", init.ProtocolVersion, c.ProtocolVersion(), tc.wantVersion)
			}
			if init.ServerInfo.Name != "nefia-test" {
				t.Errorf("server name = %q, want nefia-test", init.ServerInfo.Name)
			}

			tools, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatalf("listing tools: %v", err)
			}
			if len(tools.Tools) != 4 {
				t.Errorf("listed %d tools, want 4", len(tools.Tools))
			}

			got, err := callEcho(ctx, c, "hello")
			if err != nil {
				t.Fatal(err)
			}
			want := echoResult{Text: "hello", SessionID: ps.sess.SessionID(), Identity: "agent-7"}
			if got != want {
				t.Errorf("echo = %+v, want %+v", got, want)
			}

			if name := ps.sess.GetClientInfo().Name; name != "mcp-go-test" {
				t.Errorf("session client name = %q, want mcp-go-test", name)
			}
			if v := ps.sess.ProtocolVersion(); v != tc.wantSessionVersion {
				t.Errorf("session protocol version = %q, want %q", v, tc.wantSessionVersion)
			}
			if !ps.sess.Initialized() {
				t.Error("session not initialized")
			}
		})
	}
}

func TestStreamGoSDKClient(t *testing.T) {
	tests := []struct {
		name    string
		version string // requested; "" means the SDK's latest
		want    string
	}{
		{name: "2025-11-25 initialize handshake", version: "2025-11-25", want: "2025-11-25"},
		{name: "2026-07-28 stateless via server/discover", version: "", want: "2026-07-28"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			ts := newTestServer(t)
			ps := servePipe(t, ts.srv, StreamOptions{ContextFunc: withIdentity("operator-1")})
			ctx := t.Context()

			client := sdk.NewClient(&sdk.Implementation{Name: "go-sdk-test", Version: "1.0.0"}, nil)
			cs, err := client.Connect(ctx, &sdk.IOTransport{Reader: ps.client, Writer: ps.client},
				&sdk.ClientSessionOptions{ProtocolVersion: tc.version})
			if err != nil {
				t.Fatalf("connecting go-sdk client: %v", err)
			}
			t.Cleanup(func() { _ = cs.Close() })
			if got := cs.InitializeResult().ProtocolVersion; got != tc.want {
				t.Errorf("protocol version = %q, want %q", got, tc.want)
			}

			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("listing tools: %v", err)
			}
			if len(tools.Tools) != 4 {
				t.Errorf("listed %d tools, want 4", len(tools.Tools))
			}

			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
			if err != nil {
				t.Fatalf("calling echo: %v", err)
			}
			if res.IsError {
				t.Fatalf("echo returned a tool error: %+v", res.Content)
			}
			b, err := json.Marshal(res.StructuredContent)
			if err != nil {
				t.Fatal(err)
			}
			var got echoResult
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("decoding structured content %s: %v", b, err)
			}
			want := echoResult{Text: "hi", SessionID: ps.sess.SessionID(), Identity: "operator-1"}
			if got != want {
				t.Errorf("echo = %+v, want %+v", got, want)
			}
			if name := ps.sess.GetClientInfo().Name; name != "go-sdk-test" {
				t.Errorf("session client name = %q, want go-sdk-test", name)
			}
		})
	}
}

// TestStreamConcurrentSessions runs 20 connections against one MCPServer at
// once, which mcp-go's StdioServer cannot do (ErrSessionExists).
func TestStreamConcurrentSessions(t *testing.T) {
	verifyNoLeaks(t)
	const n = 20
	ts := newTestServer(t)
	ctx := t.Context()

	sessions := make([]*pipeSession, n)
	for i := range sessions {
		sessions[i] = servePipe(t, ts.srv, StreamOptions{ContextFunc: withIdentity(fmt.Sprintf("agent-%d", i))})
	}

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, ps := range sessions {
		var opts []mcpclient.ClientOption
		if i%2 == 0 { // mix both protocol eras on one server
			opts = append(opts, mcpclient.WithProtocolVersion(mcp.ProtocolVersion20251125))
		}
		c, _ := connectMCPGo(t, ctx, ps.client, opts...)
		wg.Go(func() {
			got, err := callEcho(ctx, c, fmt.Sprint(i))
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			want := echoResult{Text: fmt.Sprint(i), SessionID: ps.sess.SessionID(), Identity: fmt.Sprintf("agent-%d", i)}
			if got != want {
				errs <- fmt.Errorf("session %d: echo = %+v, want %+v", i, got, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ids := map[string]bool{}
	for _, ps := range sessions {
		ids[ps.sess.SessionID()] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct session ids, want %d", len(ids), n)
	}
	if got := ts.registered.Load(); got != n {
		t.Errorf("%d sessions registered, want %d", got, n)
	}

	for _, ps := range sessions {
		_ = ps.client.Close()
		if err := ps.wait(t); err != nil {
			t.Errorf("Serve after the peer closed = %v, want nil", err)
		}
	}
	if got := ts.unregistered.Load(); got != n {
		t.Errorf("%d sessions unregistered, want %d", got, n)
	}
}

func TestStreamSlowCallDoesNotBlockFastCall(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	ctx := t.Context()
	c, _ := connectMCPGo(t, ctx, ps.client)

	slowDone := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "slow"
		res, err := c.CallTool(ctx, req)
		if err == nil && res.IsError {
			err = fmt.Errorf("slow returned a tool error: %+v", res.Content)
		}
		slowDone <- err
	}()
	ts.waitSlowStarted(t, 1)

	if _, err := callEcho(ctx, c, "fast"); err != nil {
		t.Fatalf("fast call while a slow one runs: %v", err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("slow call finished before it was released: %v", err)
	default:
	}

	close(ts.release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

func TestStreamPanickingToolKeepsSession(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	peer := newRawPeer(ps.client)

	peer.send(t, request(1, "tools/call", map[string]any{"name": "panic", "_meta": modernMeta()}))
	resp := peer.recv(t)
	if errorCode(resp) != mcp.INTERNAL_ERROR || resp["id"] != float64(1) {
		t.Errorf("panicking tool: got %v, want internal error for id 1", resp)
	}

	peer.send(t, request(2, "tools/list", map[string]any{"_meta": modernMeta()}))
	if resp := peer.recv(t); resp["id"] != float64(2) || resp["result"] == nil {
		t.Errorf("after the panic: got %v, want a tools/list result", resp)
	}
}

// TestStreamNotificationBeforeResponse checks that a notification a handler
// sends reaches the peer before the handler's response.
func TestStreamNotificationBeforeResponse(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	peer := newRawPeer(ps.client)

	for id := range 20 { // the order must hold every time, not by luck
		peer.send(t, request(id, "tools/call", map[string]any{"name": "notify", "_meta": modernMeta()}))
		if msg := peer.recv(t); msg["method"] != "notifications/progress" {
			t.Fatalf("call %d: got %v first, want the progress notification", id, msg)
		}
		if msg := peer.recv(t); msg["id"] != float64(id) || msg["result"] == nil {
			t.Fatalf("call %d: got %v, want its result", id, msg)
		}
	}
}
