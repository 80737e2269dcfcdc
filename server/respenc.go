package server

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// appendToolResponse appends the response line of a tool call (a
// JSON-RPC response whose result is a *mcp.CallToolResult of text content)
// to b by hand, byte for byte what jsonrpc.EncodeLine writes for it (issue
// 16 item 3: the generic path builds a map of the result, encodes it with
// reflection and compacts it twice). Any other shape reports false, and
// the caller encodes it the generic way: results with _meta, multi
// round-trip fields, or content that is not plain text. Structured content
// given as a jsonrpc.Encoded is appended as it is.
// TestToolResponseMatchesEncodeLine and FuzzToolResponse hold it to that.
func appendToolResponse(b []byte, msg mcp.JSONRPCMessage) ([]byte, bool) {
	resp, ok := msg.(mcp.JSONRPCResponse)
	if !ok || resp.JSONRPC != mcp.JSONRPC_VERSION {
		return b, false
	}
	res, ok := resp.Result.(*mcp.CallToolResult)
	if !ok || res == nil || res.Meta != nil || len(res.InputRequests) > 0 || res.RequestState != "" {
		return b, false
	}
	id, err := resp.ID.MarshalJSON()
	if err != nil {
		return b, false
	}
	start := len(b)
	size := 256 + len(res.RawStructuredContent) + len(id)
	if e, ok := res.StructuredContent.(jsonrpc.Encoded); ok {
		size += e.Len()
	}
	for _, c := range res.Content {
		if t, ok := c.(mcp.TextContent); ok {
			size += len(t.Text) + len(t.Text)/8 // room for some escapes
		}
	}
	b = slices.Grow(b, size)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"result":{"content":[`...)
	for i, c := range res.Content {
		t, ok := c.(mcp.TextContent)
		if !ok || t.Annotations != nil || t.Meta != nil {
			return b[:start], false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":`...)
		b = jsonrpc.AppendString(b, t.Type)
		b = append(b, `,"text":`...)
		b = jsonrpc.AppendString(b, t.Text)
		b = append(b, '}')
	}
	b = append(b, ']')
	if res.IsError {
		b = append(b, `,"isError":true`...)
	}
	if res.ResultType != "" {
		b = append(b, `,"resultType":`...)
		b = jsonrpc.AppendString(b, string(res.ResultType))
	}
	switch sc := res.StructuredContent.(type) {
	case jsonrpc.Encoded:
		if len(res.RawStructuredContent) == 0 {
			// json.Marshal's output by construction (issue 16 item 1):
			// appended as it is, nothing to check, compact or escape.
			b = append(b, `,"structuredContent":`...)
			b = sc.AppendTo(b)
			return append(b, "}}\n"...), true
		}
	case json.RawMessage:
		if sc == nil && len(res.RawStructuredContent) == 0 { // json.Marshal writes null for it
			return b[:start], false
		}
	}
	var structured []byte
	switch {
	case len(res.RawStructuredContent) > 0:
		structured = res.RawStructuredContent
	case res.StructuredContent != nil:
		if raw, isRaw := res.StructuredContent.(json.RawMessage); isRaw {
			structured = raw
		} else if structured, err = json.Marshal(res.StructuredContent); err != nil {
			return b[:start], false
		}
	}
	if structured != nil {
		// What json.Marshal makes of a json.RawMessage: compacted, with
		// <, >, &, U+2028 and U+2029 escaped; invalid JSON is an error.
		b = append(b, `,"structuredContent":`...)
		var ok bool
		if b, ok = appendRawValue(b, structured); !ok {
			return b[:start], false
		}
	}
	return append(b, "}}\n"...), true
}

// appendRawValue appends what json.Marshal makes of raw as a
// json.RawMessage: compacted, with <, >, &, U+2028 and U+2029 escaped; it
// reports false for invalid JSON. Structured content that is sent again and
// again (the status tool's) comes as a jsonrpc.Encoded and never gets
// here; what does (an upstream server's bytes, forwarded once) is checked
// each time, so there is no cache of past encodings to keep right.
func appendRawValue(b, raw []byte) ([]byte, bool) {
	n := len(b)
	c := bytes.NewBuffer(b[n:])
	if err := json.Compact(c, raw); err != nil {
		return b[:n], false
	}
	b = append(b[:n], c.Bytes()...) // c wrote into b's spare capacity when it fit
	if bytes.ContainsAny(b[n:], "<>&\u2028\u2029") {
		var h bytes.Buffer
		json.HTMLEscape(&h, b[n:])
		b = append(b[:n], h.Bytes()...)
	}
	return b, true
}
