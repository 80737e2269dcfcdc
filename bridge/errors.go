package bridge

import "errors"

// Errors Run ends with. Each is wrapped with the address and the detail.
var (
	// ErrUnreachable means no TCP connection could be made to the gateway.
	ErrUnreachable = errors.New("bridge: cannot reach the gateway")
	// ErrUntrusted means the gateway's certificate does not verify against
	// the CA the bridge was given.
	ErrUntrusted = errors.New("bridge: the gateway's certificate is not trusted")
	// ErrRefused means the gateway refused the client certificate (revoked,
	// expired, another CA's, no nefia role) or closed the connection
	// without admitting it.
	ErrRefused = errors.New("bridge: the gateway refused the certificate")
	// ErrConnectionLost means the connection ended while a request was in
	// flight, or could not be made again after it ended.
	ErrConnectionLost = errors.New("bridge: connection to the gateway lost")
	// ErrExpired means the client certificate expired before the bridge
	// could renew it (Options.Renew kept failing).
	ErrExpired = errors.New("bridge: the client certificate expired before it could be renewed")
	// ErrMessageTooLarge means one JSON-RPC message, from either side, was
	// longer than Options.MaxMessageBytes.
	ErrMessageTooLarge = errors.New("bridge: message exceeds size limit")
	// ErrOutput means the client's side (standard output) could not be
	// written: the client is gone.
	ErrOutput = errors.New("bridge: write to the client failed")
)
