// Package server assembles nefia's MCP server and its transports, and owns
// connection-level security: the TLS 1.3 mutual-TLS policy, revocation checks
// in the handshake and on live sessions, the identity each request carries,
// connection and message limits, and authorization of tool calls.
//
// # Shape
//
// A Gateway listens on TCP. A connection first takes one of MaxHandshakes
// places for its handshake, which has a deadline (when they are all taken,
// the oldest pending handshake of the address holding the most is cut if
// it holds more than an eighth, else the oldest of all), and is verified
// against the current CA file (re-read when it changes): chain, validity,
// clientAuth usage, a revocation check against pki.RevocationChecker (one
// stat, no read, per handshake) and a valid role in the certificate's OU. Only then does it
// take one of MaxConnections session slots (one more is refused at once;
// one certificate takes at most MaxConnectionsPerClient, and the last
// OperatorReserve slots are for operators). It is then re-checked, and its
// first byte must come within FirstByteTimeout. Every accepted connection
// is in one table from accept to close, whatever its state (see connState),
// and that table is where revocation and CA replacement find it.
// After the handshake it is routed by ALPN or its first byte: MCP Streamable
// HTTP at /mcp (HTTPTransport, identity re-checked on every request), or
// newline-delimited JSON-RPC served as its own MCP session by a
// StreamSession (identity re-checked as it starts, closed after IdleTimeout
// without a message): requests run concurrently, writes are serialized, one
// message and the bytes in flight are capped. The identity built from the
// verified certificate (identity.Agent) rides in every request's context,
// where the authorization middleware, the audit hooks and the tools read it.
//
// Live sessions end when their certificate is revoked (at once through the
// nefia.mtls.revoke tool, within RevocationPoll when the CLI revokes), when
// it expires, when the CA is replaced, or when the gateway shuts down.
//
// In stdio mode the same StreamSession serves stdin/stdout with the local
// operator's identity.
//
// # Example
//
//	gw, err := server.NewGateway(server.GatewayOptions{
//		CACertFile:  store.Path(pki.CACertFile),
//		CertFile:    store.Path(pki.ServerCertFile),
//		KeyFile:     store.Path(pki.ServerKeyFile),
//		Revocations: pki.NewRevocationChecker(store.Path(pki.RevokedFile)),
//		Tools:       tools.Deps{Store: store, ConfigPath: configPath},
//		Logger:      logger,
//	})
//	if err != nil {
//		return err
//	}
//	return gw.ListenAndServe(ctx, "127.0.0.1:19821")
//
// Tests start a real gateway on 127.0.0.1:0 with servertest.Start.
package server
