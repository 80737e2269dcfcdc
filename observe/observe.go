// Package observe carries the gateway's connection and call events to the
// places that record them: the operational log, the audit trail and the
// Prometheus metrics. The gateway reports each event once, to one Observer;
// a new sink is a new Observer, not a new call at every site.
package observe

import (
	"time"

	"github.com/nefia/nefia/identity"
)

// ConnKind is what happened to a connection.
type ConnKind int

// The connection events, in the order a connection can meet them.
const (
	// ConnRefused: the connection was refused (handshake policy, a limit,
	// a deadline); Reason says why.
	ConnRefused ConnKind = iota + 1
	// ConnOpened: an authenticated connection was admitted.
	ConnOpened
	// ConnClosed: an admitted connection ended; Reason says why.
	ConnClosed
)

// String names the kind for logs.
func (k ConnKind) String() string {
	switch k {
	case ConnRefused:
		return "refused"
	case ConnOpened:
		return "opened"
	case ConnClosed:
		return "closed"
	}
	return "unknown"
}

// ConnEvent is one connection event.
type ConnEvent struct {
	Kind ConnKind
	// Agent is who the connection's certificate names; nil when it was
	// refused before one was presented. For a refusal it may be a
	// certificate that did not verify: then Unverified is set and the name
	// proves nothing.
	Agent      *identity.Agent
	Unverified bool
	// Remote is the peer's address; Transport how it spoke (or would have).
	Remote, Transport string
	// Reason is why it was refused or closed: one of a fixed set of
	// phrases (server.Reason*, server.Close*), never peer text.
	Reason string
	// Err is the underlying error, for the log and the audit trail.
	Err error
	// Duration is how long an admitted connection lasted (ConnClosed).
	Duration time.Duration
}

// MetaUpstream is the key, in the _meta of a tool the gateway lists, whose
// value names the upstream MCP server (mcp.upstreams) the tool is proxied
// to. Package upstream sets it on every proxy (over anything the upstream
// sent under it); the call hooks read it to fill CallEvent.Upstream, so the
// audit trail says where a call went without the server knowing upstreams.
const MetaUpstream = "io.nefia/upstream"

// CallEvent is one finished tool call.
type CallEvent struct {
	// Agent is the caller, with the session the call came on; Known is
	// false when the request carried no identity (it was then denied), and
	// Agent then holds the session id alone.
	Agent identity.Agent
	Known bool
	// Tool and Args are what the caller sent: peer-controlled, so sinks
	// bound them (and remove secrets) before recording them anywhere.
	Tool string
	Args map[string]any
	// Outcome is audit.OutcomeOK, OutcomeError or OutcomeDenied; Error is
	// the tool error or protocol error text, if any.
	Outcome, Error string
	// Decision is the authorization decision that was enforced, as text;
	// empty when the call never reached authorization (unknown tool).
	Decision string
	// Upstream is the name of the upstream MCP server (mcp.upstreams) the
	// tool is proxied to; empty for nefia's own tools.
	Upstream string
	// Method is the MCP method of the call: "" for tools/call, else
	// resources/read or prompts/get (then Tool is the policy subject the
	// read or get was decided on, or the URI or name asked for when it
	// never reached authorization).
	Method   string
	Duration time.Duration
}

// Observer receives events. Implementations must be safe for concurrent use
// and must not block: events are reported on connection and request paths.
type Observer interface {
	Connection(ConnEvent)
	Call(CallEvent)
}

// Multi reports each event to every observer in order.
type Multi []Observer

// Connection implements Observer.
func (m Multi) Connection(e ConnEvent) {
	for _, o := range m {
		o.Connection(e)
	}
}

// Call implements Observer.
func (m Multi) Call(e CallEvent) {
	for _, o := range m {
		o.Call(e)
	}
}
