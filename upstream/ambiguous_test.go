package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestForwardedArgumentsCheckAllocations: the duplicate-key check every
// forwarded call runs allocates nothing for ordinary arguments (at most
// once under -race, whose instrumentation moves a buffer to the heap). The
// json.Decoder.Token walk it replaces (issue 12 item 2) allocated per
// token, formatting an error value for every scalar, tens of µs a call.
func TestForwardedArgumentsCheckAllocations(t *testing.T) {
	for _, tt := range []struct{ name, args string }{
		{name: "the benchmark's echo", args: `{"text":"hello through the gateway"}`},
		{name: "nested", args: `{"path":"/srv/a","opts":{"depth":2,"follow":false,"tags":["a","b"]},"n":null}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.args)
			if ambiguous(data) {
				t.Fatalf("ambiguous(%s) = true", data)
			}
			if n := testing.AllocsPerRun(100, func() { ambiguous(data) }); n > 1 {
				t.Errorf("ambiguous(%s) allocates %.0f times per call, want 0", data, n)
			}
		})
	}
}

// TestForwardedArgumentsAmbiguousDecoded: keys are compared as a JSON
// decoder reads them, invalid UTF-8 included (read as U+FFFD).
func TestForwardedArgumentsAmbiguousDecoded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, args string
		want       bool
	}{
		{name: "two invalid bytes read as one key", args: "{\"\xff\":1,\"\xfe\":2}", want: true},
		{name: "escaped quote in a key", args: `{"a\"":1,"a":2}`},
		{name: "escaped backslash before the closing quote", args: `{"a\\":1,"b":{"a\\":2}}`},
		{name: "same key escaped two ways", args: `{"\u00e9":1,"é":2}`, want: true},
		{name: "duplicate after a closed array", args: `{"a":[1,[2,{"a":3}]],"a":4}`, want: true},
		{name: "many keys, none twice", args: manyKeys(40, -1)},
		{name: "many keys, the last one twice", args: manyKeys(40, 39), want: true},
		{name: "many keys, one twice across the move to a set", args: manyKeys(40, 3), want: true},
		{name: "many keys in a nested object, one twice", args: `{"a":` + manyKeys(40, 30) + `}`, want: true},
		{name: "many keys in an object, the same in a nested one", args: strings.TrimSuffix(manyKeys(20, -1), "}") + `,"in":` + manyKeys(20, -1) + `,"k0x":1}`},
		{name: "deeper than the stack buffer", args: `[[[[[[[[[[[[[[[[[[[[{"k":1,"k":2}]]]]]]]]]]]]]]]]]]]`, want: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ambiguous([]byte(tt.args)); got != tt.want {
				t.Errorf("ambiguous(%q) = %v, want %v", tt.args, got, tt.want)
			}
			if ref := ambiguousByTokens([]byte(tt.args)); ref != tt.want {
				t.Errorf("reference ambiguousByTokens(%q) = %v, want %v", tt.args, ref, tt.want)
			}
		})
	}
}

// manyKeys is an object with n keys k0..k(n-1) and, for dup >= 0, key
// k<dup> once more at the end.
func manyKeys(n, dup int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	if dup >= 0 {
		fmt.Fprintf(&b, `"k%d":0,`, dup)
	}
	return strings.TrimSuffix(b.String(), ",") + "}"
}

// TestForwardedArgumentsManyKeys: an object with many keys (a caller's
// arguments, up to the 4 MiB message limit) is checked in linear time: a
// list compared key by key would take seconds for this one.
func TestForwardedArgumentsManyKeys(t *testing.T) {
	t.Parallel()
	data := []byte(manyKeys(200_000, 199_999))
	start := time.Now()
	if !ambiguous(data) {
		t.Fatal("duplicate key not found")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("checking %d bytes with 200,000 keys took %s", len(data), d)
	}
}

// FuzzAmbiguous: the byte scanner agrees with a json.Decoder.Token walk
// (the previous implementation) on every input a handler can receive.
func FuzzAmbiguous(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":"x"}`, `{"a":{"a":1},"a":2}`, `{"a":1,"\u0061":2}`, `[1,{"k":[{"k":1,"k":2}]}]`,
		`{"a":1`, `{} {}`, ` "s" `, "{\"\xff\":1,\"\xfe\":2}", `{"a\\":1,"a\\\\":2}`, `{"x":"}","x":"{"}`,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(manyKeys(20, 5)))
	f.Add([]byte(`{"a":` + manyKeys(18, -1) + `,"b":[` + manyKeys(17, 16) + `]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if json.Valid(data) && json.Unmarshal(data, &v) != nil {
			// Well-formed but not decodable (a number beyond float64):
			// mcp-go refuses such arguments before any handler, and the
			// token walk, decoding numbers, called them ambiguous.
			t.Skip()
		}
		if got, want := ambiguous(data), ambiguousByTokens(data); got != want {
			t.Errorf("ambiguous(%q) = %v, the token walk says %v", data, got, want)
		}
	})
}

// ambiguousByTokens is the previous ambiguous, kept as the reference.
func ambiguousByTokens(data []byte) bool {
	type frame struct {
		obj, wantKey bool
		keys         map[string]struct{}
	}
	var stack []frame
	values := 0
	value := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].wantKey = true
		} else if n == 0 {
			values++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return len(stack) != 0 || values != 1
		}
		if err != nil {
			return true
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				value()
				stack = append(stack, frame{obj: d == '{', wantKey: d == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].wantKey {
			f := &stack[n-1]
			k, _ := tok.(string)
			if _, dup := f.keys[k]; dup {
				return true
			}
			if f.keys == nil {
				f.keys = map[string]struct{}{}
			}
			f.keys[k] = struct{}{}
			f.wantKey = false
			continue
		}
		value()
	}
}

// BenchmarkAmbiguous compares the check with its reference on the
// benchmark's echo arguments.
func BenchmarkAmbiguous(b *testing.B) {
	data := []byte(`{"text":"hello through the gateway"}`)
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			ambiguous(data)
		}
	})
	b.Run("tokens", func(b *testing.B) {
		for b.Loop() {
			ambiguousByTokens(data)
		}
	})
}
