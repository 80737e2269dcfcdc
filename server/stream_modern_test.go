package server

import (
	"bytes"
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// addNoopTool adds a tool, which makes mcp-go broadcast
// notifications/tools/list_changed to every initialized session.
func addNoopTool(ts *testServer, name string) {
	ts.srv.AddTool(mcp.NewTool(name), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(name), nil
	})
}

// TestStreamStatelessEra speaks protocol 2026-07-28 by hand: no initialize,
// every request carries its version, client info and capabilities in _meta.
func TestStreamStatelessEra(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{ContextFunc: withIdentity("agent-x")})
	peer := newRawPeer(ps.client)

	peer.send(t, request(1, "server/discover", map[string]any{"_meta": modernMeta()}))
	resp := peer.recv(t)
	result, _ := resp["result"].(map[string]any)
	versions, _ := result["supportedVersions"].([]any)
	if !slices.Contains(versions, any(mcp.ProtocolVersion20260728)) {
		t.Fatalf("server/discover: got %v, want supportedVersions with %s", resp, mcp.ProtocolVersion20260728)
	}
	if result["resultType"] != "complete" {
		t.Errorf("server/discover resultType = %v, want complete", result["resultType"])
	}
	if ps.sess.GetClientInfo().Name != "raw-modern" || !ps.sess.Initialized() {
		t.Errorf("session after discover: client %+v, initialized %v", ps.sess.GetClientInfo(), ps.sess.Initialized())
	}

	peer.send(t, request(2, "tools/call", map[string]any{
		"name": "echo", "arguments": map[string]any{"text": "stateless"}, "_meta": modernMeta(),
	}))
	resp = peer.recv(t)
	result, _ = resp["result"].(map[string]any)
	sc, _ := result["structuredContent"].(map[string]any)
	if sc["text"] != "stateless" || sc["identity"] != "agent-x" || sc["session_id"] != ps.sess.SessionID() {
		t.Errorf("tools/call echo: got %v", resp)
	}

	// A 2026-07-28 request must declare its capabilities.
	meta := modernMeta()
	delete(meta, mcp.MetaKeyClientCapabilities)
	peer.send(t, request(3, "tools/list", map[string]any{"_meta": meta}))
	if resp := peer.recv(t); errorCode(resp) != mcp.INVALID_PARAMS {
		t.Errorf("request without clientCapabilities: got %v, want invalid params", resp)
	}

	// Without a subscription a 2026-07-28 session is not sent list_changed
	// (SEP-2575: every notification is opt-in). The writer flushes queued
	// notifications before a response, so had one been queued it would come
	// before the tools/list result.
	addNoopTool(ts, "unannounced")
	peer.send(t, request(4, "tools/list", map[string]any{"_meta": modernMeta()}))
	if resp := peer.recv(t); resp["id"] != float64(4) {
		t.Errorf("got %v, want only the tools/list result", resp)
	}
}

func TestStreamSubscriptionsListen(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	peer := newRawPeer(ps.client)

	listen := func(id string) map[string]any {
		return request(id, "subscriptions/listen", map[string]any{
			"notifications": map[string]any{"toolsListChanged": true},
			"_meta":         modernMeta(),
		})
	}
	subscriptionID := func(msg map[string]any) any {
		params, _ := msg["params"].(map[string]any)
		meta, _ := params["_meta"].(map[string]any)
		return meta[mcp.MetaKeySubscriptionID]
	}

	peer.send(t, listen("L1"))
	ack := peer.recv(t)
	if ack["method"] != mcp.MethodNotificationSubscriptionsAcknowledged || subscriptionID(ack) != "L1" {
		t.Fatalf("got %v, want the subscription acknowledgement for L1", ack)
	}

	addNoopTool(ts, "announced")
	changed := peer.recv(t)
	if changed["method"] != mcp.MethodNotificationToolsListChanged || subscriptionID(changed) != "L1" {
		t.Errorf("got %v, want tools/list_changed tagged with subscription L1", changed)
	}

	// One listen stream per connection: mcp-go keeps one filter per session.
	peer.send(t, listen("L2"))
	if resp := peer.recv(t); resp["id"] != "L2" || errorCode(resp) != mcp.INVALID_REQUEST {
		t.Errorf("second listen: got %v, want invalid request for L2", resp)
	}

	// Requests keep being served while the stream is open.
	peer.send(t, request(5, "tools/list", map[string]any{"_meta": modernMeta()}))
	if resp := peer.recv(t); resp["id"] != float64(5) {
		t.Errorf("got %v, want the tools/list result", resp)
	}

	// Cancelling the listen request closes the stream with a result.
	peer.send(t, map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
		"params": map[string]any{"requestId": "L1"}})
	if resp := peer.recv(t); resp["id"] != "L1" {
		t.Errorf("got %v, want the listen request's final response", resp)
	}
	if ps.sess.openListenID() != nil {
		t.Error("listen stream still recorded after it ended")
	}
}

// TestStreamLegacyNotifications checks that a session that performed the
// initialize handshake still gets list_changed without subscribing.
func TestStreamLegacyNotifications(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	peer := newRawPeer(ps.client)

	peer.send(t, request(1, "initialize", map[string]any{
		"protocolVersion": mcp.ProtocolVersion20251125,
		"clientInfo":      map[string]any{"name": "raw-legacy", "version": "1"},
		"capabilities":    map[string]any{},
	}))
	resp := peer.recv(t)
	if result, _ := resp["result"].(map[string]any); result["protocolVersion"] != mcp.ProtocolVersion20251125 {
		t.Fatalf("initialize: got %v", resp)
	}
	peer.send(t, map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})

	addNoopTool(ts, "announced")
	if msg := peer.recv(t); msg["method"] != mcp.MethodNotificationToolsListChanged {
		t.Errorf("got %v, want tools/list_changed", msg)
	}
}

// watchConn closes seen the first time marker appears in what is read.
type watchConn struct {
	net.Conn
	marker []byte
	seen   chan struct{}
	once   sync.Once
	tail   []byte // the last len(marker)-1 bytes read, to match across reads
}

func (w *watchConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	buf := append(w.tail, p[:n]...)
	if bytes.Contains(buf, w.marker) {
		w.once.Do(func() { close(w.seen) })
	}
	w.tail = append([]byte(nil), buf[max(0, len(buf)-len(w.marker)+1):]...)
	return n, err
}

// TestStreamGoSDKListChanged has the official SDK open subscriptions/listen
// (it does so on connect when given a ToolListChangedHandler) and receive
// tools/list_changed over the stream.
func TestStreamGoSDKListChanged(t *testing.T) {
	verifyNoLeaks(t)
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{})
	conn := &watchConn{Conn: ps.client, marker: []byte(mcp.MethodNotificationSubscriptionsAcknowledged), seen: make(chan struct{})}

	changed := make(chan struct{}, 1)
	client := sdk.NewClient(&sdk.Implementation{Name: "go-sdk-listen", Version: "1.0.0"}, &sdk.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(t.Context(), &sdk.IOTransport{Reader: conn, Writer: ps.client}, nil)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })

	// The subscription is in force once acknowledged; a change before that
	// is, by design, not delivered.
	select {
	case <-conn.seen:
	case <-time.After(testTimeout):
		t.Fatal("subscriptions/listen was not acknowledged")
	}
	addNoopTool(ts, "announced")
	select {
	case <-changed:
	case <-time.After(testTimeout):
		t.Fatal("tools/list_changed not delivered to the go-sdk client")
	}
}
