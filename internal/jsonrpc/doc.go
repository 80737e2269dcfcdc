// Package jsonrpc frames newline-delimited JSON-RPC 2.0, the wire format of
// the gateway's stream transport (server) and of 'nefia mcp connect'
// (bridge). Both read messages from a peer they do not trust, so the one
// implementation lives here: a line reader that never buffers more than the
// message cap, an envelope decoder that routes a message without copying its
// params or result, and the encoding of the error responses either side
// writes itself.
//
// It knows JSON-RPC, not MCP: methods, tools and sessions are the callers'.
package jsonrpc
