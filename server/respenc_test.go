package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
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
		{"encoded", 14, &mcp.CallToolResult{Content: text("x"), StructuredContent: encoded(t, map[string]any{"z": odd, "a": []any{1.5, nil}})}, true},
		{"encoded error", 15, &mcp.CallToolResult{Content: text(odd), IsError: true, StructuredContent: encoded(t, "<&>")}, true},
		{"encoded zero", 16, &mcp.CallToolResult{Content: text("x"), StructuredContent: jsonrpc.Encoded{}}, true},
		{"encoded pointer", 17, &mcp.CallToolResult{Content: text("x"), StructuredContent: new(encoded(t, []string{"<"}))}, true},
		{"encoded under raw field", 18, &mcp.CallToolResult{Content: text("x"), StructuredContent: encoded(t, 1), RawStructuredContent: json.RawMessage(` {"raw" : "<"} `)}, true},
		{"nil raw under raw field", 19, &mcp.CallToolResult{Content: text("x"), StructuredContent: json.RawMessage(nil), RawStructuredContent: json.RawMessage(`[1]`)}, true},
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

// encoded is jsonrpc.Marshal(v), which must not fail.
func encoded(t testing.TB, v any) jsonrpc.Encoded {
	t.Helper()
	e, err := jsonrpc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// FuzzToolResponse: for any text, id and structured content bytes, the hand
// encoding equals the generic one or is declined; structured content that
// is JSON, decoded and given as a jsonrpc.Encoded (as the status tool
// does), is always encoded by hand, to the same bytes.
func FuzzToolResponse(f *testing.F) {
	f.Add("ok", "1", []byte(`{"a":1}`), false)
	f.Add("<&>\u2028", "x", []byte(" [1, \"<\"] "), true)
	f.Fuzz(func(t *testing.T, text, id string, structured []byte, isErr bool) {
		res := &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(text)}, IsError: isErr}
		if len(structured) > 0 {
			res.StructuredContent = json.RawMessage(structured)
		}
		checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(id), res), false)
		var v any
		if json.Unmarshal(structured, &v) == nil {
			res.StructuredContent = encoded(t, v)
			checkToolResponse(t, mcp.NewJSONRPCResultResponse(mcp.NewRequestId(id), res), true)
		}
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

// TestToolResponseCachedRawValue: raw structured content in a buffer the
// caller reuses for other bytes of the same length never gets the previous
// answer, nor invalid JSON a valid one's (appendRawValue had a cache keyed
// by length until issue 16 item 1; this keeps any future one honest).
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
		{name: "again", hand: true},
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

// BenchmarkToolResponseCallers encodes the status responses of 50 callers
// in turn, each with its own structured content (its identity in it), as
// at 50 sessions: "raw" as a json.RawMessage (the status tool's before
// issue 16 item 1, compacted and escaped per call), "encoded" as the
// jsonrpc.Encoded it is now.
func BenchmarkToolResponseCallers(b *testing.B) {
	const callers = 50
	raws := make([]json.RawMessage, callers)
	for i := range raws {
		v := map[string]any{"enabled": true, "listen_addr": "127.0.0.1:8443", "problems": []string{"<none> & nothing"},
			"caller": map[string]any{"name": fmt.Sprintf("agent-%d", i), "serial": strings.Repeat("ab", i%7+10)}}
		for k := range 12 {
			v[fmt.Sprintf("field%d", k)] = strings.Repeat("x", 40)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		raws[i] = raw
	}
	text := []mcp.Content{mcp.NewTextContent(string(bytes.Repeat([]byte("mTLS enabled: true\n"), 20)))}
	run := func(b *testing.B, structured func(i int) any) {
		msgs := make([]mcp.JSONRPCMessage, callers)
		for i := range msgs {
			msgs[i] = mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(i)),
				&mcp.CallToolResult{Content: text, StructuredContent: structured(i)})
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := appendToolResponse(nil, msgs[i%callers]); !ok {
				b.Fatal("declined")
			}
			i++
		}
	}
	b.Run("raw", func(b *testing.B) { run(b, func(i int) any { return raws[i] }) })
	b.Run("encoded", func(b *testing.B) {
		run(b, func(i int) any {
			var v any
			if err := json.Unmarshal(raws[i], &v); err != nil {
				b.Fatal(err)
			}
			return encoded(b, v)
		})
	})
}
