package jsonrpc

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		line      string
		wantErr   bool
		id        string // raw, as kept
		hasID     bool
		method    string
		hasMethod bool
		badMethod bool
		params    Member
		result    Member
		error     Member
	}{
		{name: "request", line: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":[1,2]}}`, id: "1", hasID: true, method: "tools/list", hasMethod: true, params: Present},
		{name: "notification", line: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, method: "notifications/initialized", hasMethod: true},
		{name: "null id", line: `{"jsonrpc":"2.0","id":null,"method":"x"}`, id: "null", method: "x", hasMethod: true},
		{name: "null method", line: `{"jsonrpc":"2.0","id":"a","method":null}`, id: `"a"`, hasID: true},
		{name: "empty method", line: `{"jsonrpc":"2.0","id":"a","method":""}`, id: `"a"`, hasID: true, hasMethod: true},
		{name: "numeric method", line: `{"jsonrpc":"2.0","id":1,"method":7}`, id: "1", hasID: true, hasMethod: true, badMethod: true},
		{name: "result", line: `{"jsonrpc":"2.0","id":1.0,"result":{}}`, id: "1.0", hasID: true, result: Present},
		{name: "null result", line: `{"jsonrpc":"2.0","id":1,"result":null}`, id: "1", hasID: true, result: Null},
		{name: "error", line: `{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"x"}}`, id: `"a"`, hasID: true, error: Present},
		{name: "null error", line: `{"jsonrpc":"2.0","id":"a","error":null}`, id: `"a"`, hasID: true, error: Null},
		{name: "repeated member: last wins", line: `{"id":1,"error":{},"error":null,"id":2}`, id: "2", hasID: true, error: Null},
		{name: "object id decodes", line: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, id: `{"a":1}`, hasID: true, method: "ping", hasMethod: true},
		{name: "null message is an empty envelope", line: `null`},
		{name: "not JSON", line: `hello`, wantErr: true},
		{name: "batch", line: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, wantErr: true},
		{name: "bare string", line: `"ping"`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := Envelope{ID: json.RawMessage("stale"), Error: Present}
			err := Decode([]byte(tc.line), &env)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Decode error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			method, merr := env.MethodName()
			if string(env.ID) != tc.id || env.HasID() != tc.hasID || method != tc.method || env.HasMethod() != tc.hasMethod || (merr != nil) != tc.badMethod ||
				env.Params != tc.params || env.Result != tc.result || env.Error != tc.error {
				t.Errorf("Decode(%s) = id %s (has %v), method %q (has %v, err %v), params %v, result %v, error %v",
					tc.line, env.ID, env.HasID(), method, env.HasMethod(), merr, env.Params, env.Result, env.Error)
			}
		})
	}
}

// TestDecodeKeepsNoCopyOfParams checks that decoding a large message's
// envelope allocates far less than the message: routing a request must not
// copy its params, which may be nearly the whole message cap. Not parallel:
// it reads the process's allocation count.
func TestDecodeKeepsNoCopyOfParams(t *testing.T) {
	line := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"text":"` + strings.Repeat("a", 1<<20) + `"},"result":[` + strings.Repeat("1,", 1<<10) + `1]}`)
	const runs = 8
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		var env Envelope
		if err := Decode(line, &env); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := (after.TotalAlloc - before.TotalAlloc) / runs; got > 4<<10 {
		t.Errorf("Decode of a %d-byte message allocated %d bytes; the params or result were copied", len(line), got)
	}
}

func TestIDKeysMatchAcrossSpellings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b  string
		equal bool
	}{
		{`1`, `1.0`, true},
		{`1`, `1e0`, true},
		{`1`, `"1"`, false},
		{`"a"`, `"\u0061"`, true},
		{`12345678901234567`, `12345678901234567`, true},
	}
	for _, tt := range tests {
		ka, _ := IDKey([]byte(tt.a))
		kb, _ := IDKey([]byte(tt.b))
		if (ka == kb) != tt.equal {
			t.Errorf("IDKey(%s)=%q, IDKey(%s)=%q: equal should be %v", tt.a, ka, tt.b, kb, tt.equal)
		}
	}
}

func TestIDKeyNone(t *testing.T) {
	t.Parallel()
	for _, id := range []string{``, `null`, ` null `, `{"a":1}`, `[1]`, `true`, `"unterminated`} {
		if k, ok := IDKey(json.RawMessage(id)); ok || k != "" {
			t.Errorf("IDKey(%s) = %q, %v; want none", id, k, ok)
		}
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"absent", ``, true},
		{"null", `null`, true},
		{"string", `"x"`, true},
		{"number", `12`, true},
		{"negative", `-1.5e3`, true},
		{"object", `{"a":1}`, false},
		{"array", `[1]`, false},
		{"boolean", `true`, false},
	}
	for _, tt := range tests {
		if got := ValidID(json.RawMessage(tt.id)); got != tt.want {
			t.Errorf("%s: ValidID(%s) = %v, want %v", tt.name, tt.id, got, tt.want)
		}
	}
}

func TestCancelledID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		want string
		ok   bool
	}{
		{"number", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"x"}}`, "n:7", true},
		{"string", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}`, "s:a", true},
		{"no params", `{"jsonrpc":"2.0","method":"notifications/cancelled"}`, "", false},
		{"null params", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":null}`, "", false},
		{"params an array", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":[7]}`, "", false},
		{"last params wins", `{"method":"notifications/cancelled","params":{"requestId":7},"params":[7]}`, "", false},
		{"null requestId", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":null}}`, "", false},
	}
	for _, tt := range tests {
		if got, ok := CancelledID([]byte(tt.line)); got != tt.want || ok != tt.ok {
			t.Errorf("%s: CancelledID = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
