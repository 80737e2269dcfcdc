package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nefia/nefia/identity"
)

// ConnInfo is one live, admitted connection, as 'nefia mtls sessions'
// shows it: who holds it, how it speaks, and what it has done.
type ConnInfo struct {
	// ID names the connection for Disconnect; the gateway makes it up on
	// admission, since a connection is what holds a slot and an HTTP
	// connection may carry several MCP sessions (SessionID below).
	ID         string `json:"id"`
	Name       string `json:"name"`
	Serial     string `json:"serial"`
	Role       string `json:"role"`
	Transport  string `json:"transport"` // mtls-stream, or mtls-http once it spoke HTTP; "" before its first byte
	RemoteAddr string `json:"remote_addr"`
	// SessionID is the MCP session a raw connection serves; HTTP
	// connections carry one per request (Mcp-Session-Id), so it is empty.
	SessionID string    `json:"session_id,omitempty"`
	Since     time.Time `json:"since"`
	// LastActivity is its last tool call, or its admission before any.
	LastActivity time.Time `json:"last_activity"`
	Calls        int64     `json:"calls"`
}

// connActivity is what the gateway counts of an admitted connection.
type connActivity struct {
	id    string
	since time.Time
	calls atomic.Int64
	last  atomic.Int64 // unix nanoseconds of the last call; 0: none yet
}

// errDisconnected is why Disconnect closed a connection.
var errDisconnected = fmt.Errorf("%w: disconnected by an operator", ErrSessionClosed)

// ReasonCloseDisconnected is the close reason of a connection an operator
// ended with Disconnect (its certificate stays valid).
const ReasonCloseDisconnected = "disconnected by an operator"

func newActivity() *connActivity { return &connActivity{id: newConnID(), since: time.Now()} }

// newConnID is a short random id: enough to tell a gateway's live
// connections apart, and nothing to guess anything by.
func newConnID() string { return "c-" + strings.ToLower(rand.Text()[:12]) }

// Connections returns the admitted connections, oldest first.
func (g *Gateway) Connections() []ConnInfo {
	var out []ConnInfo
	for _, tc := range g.admitted(nil) {
		state, agent, _, ok := tc.snapshot()
		if !ok || tc.act == nil {
			continue
		}
		info := ConnInfo{
			ID: tc.act.id, Name: agent.Name, Serial: agent.Serial, Role: string(agent.Role),
			RemoteAddr: tc.remote, SessionID: agent.SessionID, Since: tc.act.since, LastActivity: tc.act.since, Calls: tc.act.calls.Load(),
		}
		switch state {
		case stateRaw:
			info.Transport = identity.TransportStream
		case stateHTTP:
			info.Transport = identity.TransportHTTP
		}
		if last := tc.act.last.Load(); last != 0 {
			info.LastActivity = time.Unix(0, last)
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return a.Since.Compare(b.Since) })
	return out
}

// ErrNoSuchConnection: Disconnect found no live connection by that id or
// serial.
var ErrNoSuchConnection = errors.New("server: no live connection matches")

// Disconnect ends the live connections with this connection id, or of this
// certificate serial (canonical form), without revoking anything: the
// client may connect again. Exactly one of id and serial is given. Each
// close is audited as connection_close with ReasonCloseDisconnected. It
// returns the connections it closed, or ErrNoSuchConnection.
func (g *Gateway) Disconnect(id, serial string) ([]ConnInfo, error) {
	if (id == "") == (serial == "") {
		return nil, errors.New("server: disconnect needs a connection id or a serial, not both")
	}
	byID := map[string]ConnInfo{}
	for _, info := range g.Connections() {
		byID[info.ID] = info
	}
	var closed []ConnInfo
	for _, tc := range g.admitted(nil) {
		info, ok := byID[tc.act.id]
		if !ok || (id != "" && info.ID != id) || (serial != "" && info.Serial != serial) {
			continue
		}
		g.closeConn(tc, errDisconnected)
		closed = append(closed, info)
	}
	if len(closed) == 0 {
		return nil, ErrNoSuchConnection
	}
	return closed, nil
}

// activityKey is the context key of the activity record of the connection
// a request came on.
type activityKey struct{}

// withActivity returns ctx carrying act, the record of the connection
// whose requests are served with it (once per connection: the raw
// stream's session context, the HTTP connection's base context).
func withActivity(ctx context.Context, act *connActivity) context.Context {
	if act == nil {
		return ctx
	}
	return context.WithValue(ctx, activityKey{}, act)
}

// activityOf returns the activity record of the connection ctx's request
// came on; nil outside a gateway connection (stdio mode, tests).
func activityOf(ctx context.Context) *connActivity {
	act, _ := ctx.Value(activityKey{}).(*connActivity)
	return act
}

// called counts one call at now (unix nanoseconds). Issue 16: each call
// used to look for its connection among all of them, by remote address,
// under the gateway's lock (O(connections), and every session's calls
// queued on one mutex); the record reached through the request's context
// is the same one, without a lock. last only moves forward, so that calls
// finishing out of order on one connection cannot set it back.
func (a *connActivity) called(now int64) {
	a.calls.Add(1)
	for {
		last := a.last.Load()
		if last >= now || a.last.CompareAndSwap(last, now) {
			return
		}
	}
}
