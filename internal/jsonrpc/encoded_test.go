package jsonrpc

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestEncodedBytes (issue 16 item 1): an Encoded is json.Marshal's bytes
// for its value whichever way it is written: appended (AppendTo), through
// json.Marshal, through EncodeLine (HTML escaping off: the bytes are
// already escaped and stay so), and as the json.RawMessage of the same
// bytes encodes; the zero value is null.
func TestEncodedBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    any
	}{
		{"object", map[string]any{"b": "<x>&\u2028\u2029", "a": []any{1.5, nil, true}}},
		{"struct", struct {
			Name string `json:"name"`
			N    int    `json:"n,omitempty"`
		}{Name: "a\"\\\x00\xff😀"}},
		{"string", "plain"},
		{"null", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			e, err := Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			check(t, e, want)
			raw, err := json.Marshal(json.RawMessage(want))
			if err != nil || !bytes.Equal(raw, want) {
				t.Fatalf("json.RawMessage of the same bytes: %q, %v", raw, err)
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		t.Parallel()
		check(t, Encoded{}, []byte("null"))
	})
	t.Run("unencodable", func(t *testing.T) {
		t.Parallel()
		if e, err := Marshal(make(chan int)); err == nil || e.data != nil {
			t.Fatalf("Marshal of a channel: %q, %v", e.data, err)
		}
	})
}

// check fails unless e is written as want every way it can be.
func check(t *testing.T, e Encoded, want []byte) {
	t.Helper()
	if got := e.AppendTo([]byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
		t.Errorf("AppendTo: %q, want x%q", got, want)
	}
	if e.Len() != len(want) {
		t.Errorf("Len: %d, want %d", e.Len(), len(want))
	}
	if got, err := json.Marshal(e); err != nil || !bytes.Equal(got, want) {
		t.Errorf("json.Marshal: %q, %v; want %q", got, err, want)
	}
	if got, err := EncodeLine(e); err != nil || !bytes.Equal(got, append(want, '\n')) {
		t.Errorf("EncodeLine: %q, %v; want %q", got, err, want)
	}
	if got, err := json.Marshal(map[string]any{"k": e}); err != nil || !bytes.Equal(got, []byte(`{"k":`+string(want)+`}`)) {
		t.Errorf("json.Marshal in a map: %q, %v", got, err)
	}
}
