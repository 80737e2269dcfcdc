package identity

import "context"

type sessionDoneKey struct{}

// WithSessionDone returns a context carrying done, a channel closed when
// the client's MCP session ends: its raw stream closes, or its HTTP session
// is deleted, expires or is ended by a revocation. Transports attach it to
// every request of a session, so that state kept for a session (an
// upstream session per client, package upstream) ends with it, whatever
// ended the session.
func WithSessionDone(ctx context.Context, done <-chan struct{}) context.Context {
	return context.WithValue(ctx, sessionDoneKey{}, done)
}

// SessionDone returns the channel WithSessionDone attached; nil (which
// never fires) for a request outside a session, or in stdio mode, whose
// one session lasts as long as the process.
func SessionDone(ctx context.Context) <-chan struct{} {
	done, _ := ctx.Value(sessionDoneKey{}).(<-chan struct{})
	return done
}
