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
	// Agent is the verified caller; nil when the connection was refused
	// before a certificate was verified.
	Agent *identity.Agent
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

// CallEvent is one finished tool call.
type CallEvent struct {
	// Agent is the caller; Known is false when the request carried no
	// identity (it was then denied).
	Agent identity.Agent
	Known bool
	// Tool is the name the caller asked for: peer-controlled text, so sinks
	// must bound it before using it as a label or a file's contents.
	Tool string
	// Outcome is audit.OutcomeOK, OutcomeError or OutcomeDenied.
	Outcome  string
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
