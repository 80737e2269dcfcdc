package server

import (
	"context"
	"log/slog"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/observe"
)

// logObserver writes connection and call events to the operational log.
// Refusals are warnings; a connection closed with an error is info; opened
// and normally closed connections and tool calls are debug, since the audit
// trail records every one of them (issue 16 item 4: two info lines per
// connection were a measurable part of a handshake's cost).
type logObserver struct{ log *slog.Logger }

// Connection implements observe.Observer.
func (o logObserver) Connection(e observe.ConnEvent) {
	level := slog.LevelDebug
	switch {
	case e.Kind == observe.ConnRefused:
		level = slog.LevelWarn
	case e.Kind == observe.ConnClosed && e.Err != nil:
		level = slog.LevelInfo
	}
	if !o.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 14)
	attrs = append(attrs, "remote_addr", e.Remote)
	if a := e.Agent; a != nil {
		attrs = append(attrs, "name", a.Name, "serial", a.Serial)
		if a.Role != "" {
			attrs = append(attrs, "role", a.Role)
		}
		if a.SessionID != "" {
			attrs = append(attrs, "session_id", a.SessionID)
		}
		if e.Unverified {
			attrs = append(attrs, "unverified", true)
		}
	}
	if t := transportOf(e); t != "" {
		attrs = append(attrs, "transport", t)
	}
	switch e.Kind {
	case observe.ConnRefused:
		attrs = append(attrs, "reason", e.Reason)
		if e.Err != nil {
			attrs = append(attrs, "error", audit.Clip(e.Err.Error(), maxLoggedError))
		}
		o.log.Warn("connection rejected", attrs...)
	case observe.ConnOpened:
		o.log.Debug("connection open", attrs...)
	case observe.ConnClosed:
		attrs = append(attrs, "reason", e.Reason, "duration", e.Duration.Round(1e6))
		if e.Err != nil {
			attrs = append(attrs, "error", audit.Clip(e.Err.Error(), maxLoggedError))
		}
		o.log.Log(context.Background(), level, "connection closed", attrs...)
	}
}

// Call implements observe.Observer.
func (o logObserver) Call(e observe.CallEvent) {
	if !o.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	o.log.Debug("tool call", "tool", audit.Clip(e.Tool, maxUnverifiedName), "name", e.Agent.Name, "serial", e.Agent.Serial,
		"outcome", e.Outcome, "duration", e.Duration)
}

func transportOf(e observe.ConnEvent) string {
	if e.Agent != nil && e.Agent.Transport != "" {
		return e.Agent.Transport
	}
	return e.Transport
}
