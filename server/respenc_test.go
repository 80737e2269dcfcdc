package server

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// checkToolResponse fails unless appendToolResponse writes exactly what
// jsonrpc.EncodeLine writes for msg, or declines (wantHand false) so that
// the caller encodes it that way.
func checkToolResponse(t *testing.T, msg mcp.JSONRPCMessage, wantHand bool) {
	t.Helper()
	want, werr := jsonrpc.EncodeLine(msg)
	got, ok := appendToolResponse([]byte("x"), msg)
	if !ok {
		if !bytes.Equal(got, []byte("x")) {
			t.Fatalf("declined but wrote %q", got)
		}
		if wantHand {
			t.Fatalf("declined a plain tool result: %s (%v)", want, werr)
		}
		return
	}
	if werr != nil {
		t.Fatalf("encoded by hand what EncodeLine fails on (%v): %q", werr, got)
	}
	if !bytes.Equal(got[1:], want) {
		t.Fatalf("bytes differ:\n got %q\nwant %q", got[1:], want)
	}
}

// TestToolResponseMatchesEncodeLine (issue 16 item 3): the hand-appended
// tool response line is byte for byte the generic encoding, for every id
// kind, odd text, errors, result types and structured content given as a
// value, pre-encoded (json.RawMessage, compacted and HTML-escaped as
// json.Marshal does) or raw; other shapes are declined.
func TestToolResponseMatchesEncodeLine(t *testing.T) {
	t.Parallel()
	odd := "a\"\\/<>&\u2028\u2029\x00\x1f\té😀\xff"
	text := func(s string) []mcp.Content { return []mcp.Content{mcp.NewTextContent(s)} }
	tests := []struct {
		name string
		id   any
		res  *mcp.CallToolResult
		hand bool
	}{
		{"status", int64(7), &mcp.CallToolResult{Content: text("ok"), StructuredContent: json.RawMessage(`{"a":1,"b":"<x>"}`)}, true},
		{"string id", "req-<1>&\u2028", &mcp.CallToolResult{Content: text(odd)}, true},
		{"float id", 1.5, &mcp.CallToolResult{Content: text("x")}, true},
		{"error", 1, &mcp.CallToolResult{Content: text(odd), IsError: true}, true},
		{"result type", 2, &mcp.CallToolResult{Result: mcp.Result{ResultType: "complete"}, Content: text("x")}, true},
		{"no content", 3, &mcp.CallToolResult{}, true},
		{"two texts", 4, &mcp.CallToolResult{Content: append(text("a"), mcp.NewTextContent("b"))}, true},
		{"structured value", 5, &mcp.CallToolResult{Content: text("x"), StructuredContent: map[string]any{"z": odd, "a": []any{1.0, nil}}}, true},
		{"raw with spaces and html", 6, &mcp.CallToolResult{Content: text("x"), StructuredContent: json.RawMessage(" { \"a\" : \"<\u2028>\" , \"b\":[ 1 ,2] } ")}, true},
		{"raw structured field", 7, &mcp.CallToolResult{Content: text("x"), RawStructuredContent: json.RawMessage(`{"k":"&"}`)}, true},
		{"nil raw message", 8, &mcp.CallToolResult{Content: text("x"), StructuredContent: json.RawMessage(nil)}, false},
		{"invalid raw", 9, &mcp.CallToolResult{Content: text("x"), StructuredContent: json.RawMessage(`{"a":`)}, false},
		{"meta", 10, &mcp.CallToolResult{Result: mcp.Result{Meta: &mcp.Meta{AdditionalFields: map[string]any{"k": "v"}}}, Content: text("x")}, false},
		{"annotated text", 11, &mcp.CallToolResult{Content: []mcp.Content{mcp.TextContent{Type: "text", Text: "x", Annotated: mcp.Annotated{Annotations: &mcp.Annotations{Priority: new(1.0)}}}}}, false},
		{"image", 12, &mcp.CallToolResult{Content: []mcp.Content{mcp.NewImageContent("AAAA", "image/png")}}, false},
		{"request state", 13, &mcp.CallToolResult{Content: text("x"), MultiRoundTripResult: mcp.MultiRoundTripResult{RequestState: "s"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(tc.id), tc.res), tc.hand)
		})
	}
	t.Run("not a tool result", func(t *testing.T) {
		checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(1), mcp.EmptyResult{}), false)
	})
}

// FuzzToolResponse: for any text, id and structured content bytes, the hand
// encoding equals the generic one or is declined.
func FuzzToolResponse(f *testing.F) {
	f.Add("ok", "1", []byte(`{"a":1}`), false)
	f.Add("<&>\u2028", "x", []byte(" [1, \"<\"] "), true)
	f.Fuzz(func(t *testing.T, text, id string, structured []byte, isErr bool) {
		res := &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(text)}, IsError: isErr}
		if len(structured) > 0 {
			res.StructuredContent = json.RawMessage(structured)
		}
		checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(id), res), false)
	})
}

// BenchmarkToolResponse compares the generic encoding of a status-sized
// tool response with the hand-appended one.
func BenchmarkToolResponse(b *testing.B) {
	structured := json.RawMessage(bytes.Repeat([]byte(`{"enabled":true,"listen_addr":"127.0.0.1:8443"},`), 12))
	structured = append(append(json.RawMessage(`[`), structured[:len(structured)-1]...), ']')
	msg := mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(42)), &mcp.CallToolResult{
		Content: []mcp.Content{mcp.NewTextContent(string(bytes.Repeat([]byte("mTLS enabled: true\n"), 20)))}, StructuredContent: structured})
	b.Run("EncodeLine", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jsonrpc.EncodeLine(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := appendToolResponse(nil, msg); !ok {
				b.Fatal("declined")
			}
		}
	})
}

// TestToolResponseCachedRawValue: structured content served again from
// appendRawValue's cache is byte for byte the generic encoding, and a
// buffer reused for other bytes of the same length (the same cache slot,
// the same backing array) never gets the previous answer, nor invalid JSON
// a valid one's.
func TestToolResponseCachedRawValue(t *testing.T) {
	t.Parallel()
	buf := json.RawMessage(`{"a":"<b>", "n":1}`)
	call := func(raw json.RawMessage, hand bool) {
		t.Helper()
		checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(1)),
			&mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent("x")}, RawStructuredContent: raw}), hand)
	}
	for _, step := range []struct {
		name string
		src  string // written into buf (same length), "" keeps it
		hand bool
	}{
		{name: "first", hand: true},
		{name: "again, from the cache", hand: true},
		{name: "same buffer, other bytes", src: `{"a":"&c&", "n":2}`, hand: true},
		{name: "same buffer, invalid", src: `{"a":"&c&", "n":2 `, hand: false},
		{name: "same buffer, first bytes again", src: `{"a":"<b>", "n":1}`, hand: true},
	} {
		if step.src != "" {
			copy(buf, step.src)
		}
		t.Run(step.name, func(t *testing.T) { call(buf, step.hand) })
	}
}
