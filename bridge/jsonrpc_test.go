package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/nefia/nefia/internal/jsonrpc"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want message
	}{
		{"request, number id", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, message{kind: request, id: "n:1", rawID: []byte("1"), method: "tools/list"}},
		{"request, string id", `{"jsonrpc":"2.0","id":"1","method":"ping"}`, message{kind: request, id: "s:1", rawID: []byte(`"1"`), method: "ping"}},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, message{kind: notification, method: "notifications/initialized"}},
		{"null id is a notification", `{"jsonrpc":"2.0","id":null,"method":"x"}`, message{kind: notification, method: "x"}},
		{"cancellation", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"x"}}`,
			message{kind: notification, method: "notifications/cancelled", cancelled: "n:7"}},
		{"result", `{"jsonrpc":"2.0","id":1.0,"result":{}}`, message{kind: response, id: "n:1"}},
		{"error", `{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"x"}}`, message{kind: response, id: "s:a", failed: true}},
		{"error with null id", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`, message{kind: response}},
		{"not JSON", `hello`, message{}},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, message{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parse([]byte(tt.line))
			if got.kind != tt.want.kind || got.id != tt.want.id || got.method != tt.want.method ||
				got.cancelled != tt.want.cancelled || got.failed != tt.want.failed || string(got.rawID) != string(tt.want.rawID) {
				t.Errorf("parse(%s) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestWithID(t *testing.T) {
	got, err := withID([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`), reinitID)
	if err != nil {
		t.Fatal(err)
	}
	m := parse([]byte(strings.TrimSpace(string(got))))
	if m.kind != request || m.id != "s:"+reinitID || m.method != "initialize" || !strings.HasSuffix(string(got), "}\n") {
		t.Errorf("withID = %s (%+v)", got, m)
	}
}

// TestLineReaderMessageTooLarge checks that the bridge reports a line over
// the cap, from either side, as ErrMessageTooLarge naming the cap. The
// reader's own cases are in internal/jsonrpc.
func TestLineReaderMessageTooLarge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		max   int
	}{
		{"over the limit", strings.Repeat("x", 11) + "\n", 10},
		{"over the limit beyond the buffer", strings.Repeat("x", 200<<10) + "\n", 100 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newLineReader(strings.NewReader(tt.input), tt.max)
			line, err := r.next()
			if !errors.Is(err, ErrMessageTooLarge) || line != nil {
				t.Fatalf("next = %q, %v; want ErrMessageTooLarge", line, err)
			}
			if want := fmt.Sprintf("(%d bytes)", tt.max); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name the cap %s", err, want)
			}
		})
	}
}

func TestErrorResponseKeepsTheID(t *testing.T) {
	for _, id := range []string{`7`, `"x"`} {
		m := parse([]byte(strings.TrimSpace(string(errorResponse([]byte(id), "lost")))))
		want, _ := jsonrpc.IDKey([]byte(id))
		if m.kind != response || m.id != want || !m.failed {
			t.Errorf("errorResponse(%s) parses as %+v", id, m)
		}
	}
}

// TestErrorResponseBytes checks that errorResponse, now built on the shared
// encoding, writes the bytes the bridge's own json.Marshal did, HTML
// escaping included, for every kind of id.
func TestErrorResponseBytes(t *testing.T) {
	t.Parallel()
	// marshalled is errorResponse as it was before internal/jsonrpc.
	marshalled := func(id json.RawMessage, msg string) []byte {
		type detail struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		b, _ := json.Marshal(struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Error   detail          `json:"error"`
		}{JSONRPC: "2.0", ID: id, Error: detail{Code: -32603, Message: msg}})
		return append(b, '\n')
	}
	tests := []struct {
		name string
		id   string
	}{
		{"number", `7`},
		{"float", `-1.5e3`},
		{"string", `"x"`},
		{"null", `null`},
		{"unicode", `"é漢🙂"`},
		{"escaped unicode", `"\u00e9"`},
		{"html characters", `"<a>&</a>"`},
		{"line separator", "\"a\u2028b\""},
		{"private id", `"` + probeID + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const msg = "nefia connect: lost <before> the answer & more"
			got, want := errorResponse(json.RawMessage(tt.id), msg), marshalled(json.RawMessage(tt.id), msg)
			if !bytes.Equal(got, want) {
				t.Errorf("errorResponse(%s) =\n%s\nwant\n%s", tt.id, got, want)
			}
		})
	}
	if got, want := errorResponse(nil, "m"), marshalled(nil, "m"); !bytes.Equal(got, want) {
		t.Errorf("errorResponse(nil) = %s, want %s", got, want)
	}
}

// TestParseKeepsNoCopyOfParams checks that classifying a line does not copy
// its params: every line from the client and the gateway is parsed, and a
// tool call's arguments may be nearly the whole message cap. Not parallel:
// it reads the process's allocation count.
func TestParseKeepsNoCopyOfParams(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"request", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"text":"` + strings.Repeat("a", 1<<20) + `"}}}`},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"message":"` + strings.Repeat("a", 1<<20) + `"}}`},
		{"error response", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"` + strings.Repeat("a", 1<<20) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := []byte(tt.line)
			const runs = 8
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if m := parse(line); m.kind == invalid {
					t.Fatal("parsed as invalid")
				}
			}
			runtime.ReadMemStats(&after)
			got := (after.TotalAlloc - before.TotalAlloc) / runs
			t.Logf("parse of a %d-byte line allocated %d bytes", len(line), got)
			if got > 4<<10 {
				t.Errorf("parse of a %d-byte line allocated %d bytes: its params were copied", len(line), got)
			}
		})
	}
}
