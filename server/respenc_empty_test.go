package server

import (
	"bytes"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// TestEmptyResponseMatchesEncodeLine: a ping's answer appended by hand is
// byte for byte the generic encoding, for every id kind; a result with any
// field set, or of another type, is declined.
func TestEmptyResponseMatchesEncodeLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   any
		res  any
		hand bool
	}{
		{"int id", int64(1), mcp.EmptyResult{}, true},
		{"negative id", int64(-42), mcp.EmptyResult{}, true},
		{"float id", 1.5, mcp.EmptyResult{}, true},
		{"string id", "req-<1>&\u2028\"\\é", mcp.EmptyResult{}, true},
		{"empty string id", "", mcp.EmptyResult{}, true},
		{"null id", nil, mcp.EmptyResult{}, true},
		{"result type", int64(2), mcp.EmptyResult{ResultType: "complete"}, false},
		{"meta", int64(3), mcp.EmptyResult{Meta: &mcp.Meta{AdditionalFields: map[string]any{"k": "v"}}}, false},
		{"pointer", int64(4), &mcp.EmptyResult{}, false},
		{"other result", int64(5), mcp.Result{}, false},
		{"map result", int64(6), map[string]any{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msg := mcp.NewJSONRPCResultResponse(mcp.NewRequestId(tc.id), tc.res)
			got, ok := appendEmptyResponse([]byte("prefix"), msg)
			if ok != tc.hand {
				t.Fatalf("appended by hand: %v, want %v", ok, tc.hand)
			}
			if !ok {
				if string(got) != "prefix" {
					t.Errorf("declined, but b is now %q", got)
				}
				return
			}
			want, err := jsonrpc.EncodeLine(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[len("prefix"):], want) {
				t.Errorf("by hand %q, generic %q", got[len("prefix"):], want)
			}
		})
	}
	t.Run("error response", func(t *testing.T) {
		t.Parallel()
		msg := mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(int64(1))}
		if _, ok := appendEmptyResponse(nil, msg); ok {
			t.Error("an error response was appended as an empty result")
		}
	})
}
