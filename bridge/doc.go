// Package bridge connects a local stdio MCP client to a nefia gateway over
// mutual TLS: it is what 'nefia mcp connect' runs, so that clients that can
// only spawn a stdio server (Claude Desktop, the MCP Inspector) reach a
// gateway that admits nobody without a client certificate.
//
// The bridge dials TLS 1.3 with the client certificate, verifies the gateway
// against the CA it was given, and then copies newline-delimited JSON-RPC
// both ways: the client's standard input to the connection, the connection
// to its standard output. It writes nothing else to standard output.
//
// Two things make it more than a pipe:
//
//   - In TLS 1.3 the server judges the client certificate only after the
//     client's side of the handshake is complete, so a refusal is not a
//     handshake error: it arrives as an alert on the first read. The bridge
//     therefore sends a ping of its own (id "nefia-connect-probe") right
//     after the handshake and swallows the answer. A refused certificate
//     shows up there, as one error naming the cause, before the client has
//     sent anything.
//   - It tracks the ids of requests written and responses read. When the
//     connection drops with nothing in flight it reconnects on its own (and
//     replays the client's initialize, answered privately, so the new
//     session knows the client); with a request in flight it cannot know
//     whether the gateway acted on it, so it answers that request with a
//     JSON-RPC error and ends with ErrConnectionLost.
//
// With Options.Renew it also renews its certificate at two thirds of its
// lifetime and moves the client to a connection made with the new one
// between two messages: requests in flight on the old connection are
// answered there, the next message goes on the new one, whose session got
// the client's initialize replayed as after a reconnect. A certificate
// that expires before any renewal succeeded ends Run with ErrExpired.
package bridge
