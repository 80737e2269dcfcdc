package server

import "errors"

// Errors a stream session ends with.
var (
	// ErrSessionClosed is returned by Serve when the session was ended with
	// Close, for example because its client certificate was revoked.
	ErrSessionClosed = errors.New("server: session closed")
	// ErrMessageTooLarge is returned by Serve when the peer sent one JSON-RPC
	// message longer than StreamOptions.MaxMessageBytes.
	ErrMessageTooLarge = errors.New("server: message exceeds size limit")
	// ErrWriteTimeout is returned by Serve when one write to the peer took
	// longer than StreamOptions.WriteTimeout (a peer that does not read).
	ErrWriteTimeout = errors.New("server: write to peer timed out")
	// ErrIdleTimeout is returned by Serve when the peer sent no message for
	// StreamOptions.IdleTimeout while no request was in flight.
	ErrIdleTimeout = errors.New("server: session idle")
)
