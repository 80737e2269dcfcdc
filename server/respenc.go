package server

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync/atomic"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// appendToolResponse appends the response line of a tool call (a
// JSON-RPC response whose result is a *mcp.CallToolResult of text content)
// to b by hand, byte for byte what jsonrpc.EncodeLine writes for it (issue
// 16 item 3: the generic path builds a map of the result, encodes it with
// reflection and compacts it twice). Any other shape reports false, and
// the caller encodes it the generic way: results with _meta, multi
// round-trip fields, or content that is not plain text.
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
	var structured []byte
	switch {
	case len(res.RawStructuredContent) > 0:
		structured = res.RawStructuredContent
	case res.StructuredContent != nil:
		if raw, isRaw := res.StructuredContent.(json.RawMessage); isRaw {
			if raw == nil { // json.Marshal writes null for it
				return b[:start], false
			}
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
// reports false for invalid JSON.
//
// Pre-encoded structured content (the status tool's, rendered once per
// change and caller) comes back call after call with the same bytes, and
// compacting and escaping it was a tenth of a status call's CPU: the last
// few results are kept, each with a copy of its input, and reused when the
// input is byte for byte the same (compared in full, so a caller that
// reuses its buffer for other bytes never gets a stale answer).
func appendRawValue(b, raw []byte) ([]byte, bool) {
	slot := &rawValueCache[len(raw)%len(rawValueCache)]
	if e := slot.Load(); e != nil && bytes.Equal(e.src, raw) {
		return append(b, e.out...), true
	}
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
	if len(raw) <= maxCachedRawValue {
		slot.Store(&rawValue{src: slices.Clone(raw), out: slices.Clone(b[n:])})
	}
	return b, true
}

// rawValueCache holds the last encodings of appendRawValue, a slot per
// input length modulo its size (the status tool's agent and operator
// responses differ in length); a collision only costs a recomputation.
var rawValueCache [16]atomic.Pointer[rawValue]

// maxCachedRawValue bounds what one cache slot holds (twice this).
const maxCachedRawValue = 16 << 10

type rawValue struct{ src, out []byte }
