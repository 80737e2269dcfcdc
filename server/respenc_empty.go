package server

import (
	"github.com/mark3labs/mcp-go/mcp"
)

// appendEmptyResponse appends the response line of a request whose result
// is empty (a ping's: mcp.EmptyResult with no field set) to b by hand, byte
// for byte what jsonrpc.EncodeLine writes for it, and reports false for
// any other message. Every connection of the bench's handshake workload,
// and of a client that checks its connection, sends a ping; the generic
// path encodes it with reflection (issue 16). TestEmptyResponseMatchesEncodeLine
// holds it to that.
func appendEmptyResponse(b []byte, msg mcp.JSONRPCMessage) ([]byte, bool) {
	resp, ok := msg.(mcp.JSONRPCResponse)
	if !ok || resp.JSONRPC != mcp.JSONRPC_VERSION {
		return b, false
	}
	if res, ok := resp.Result.(mcp.EmptyResult); !ok || res != (mcp.EmptyResult{}) {
		return b, false
	}
	id, err := resp.ID.MarshalJSON()
	if err != nil {
		return b, false
	}
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	return append(b, `,"result":{}}`+"\n"...), true
}
