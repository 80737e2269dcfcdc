package bridge

import (
	"errors"
	"io"
	"strings"
	"testing"
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

func TestIDKeysMatchAcrossSpellings(t *testing.T) {
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
		ka, _ := idKey([]byte(tt.a))
		kb, _ := idKey([]byte(tt.b))
		if (ka == kb) != tt.equal {
			t.Errorf("idKey(%s)=%q, idKey(%s)=%q: equal should be %v", tt.a, ka, tt.b, kb, tt.equal)
		}
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

func TestLineReader(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		max     int
		want    []string
		wantErr error
	}{
		{"lines", "a\nb\n", 10, []string{"a", "b"}, io.EOF},
		{"CRLF and blank lines", "a\r\n\r\n  \nb\r\n", 10, []string{"a", "b"}, io.EOF},
		{"last line without newline", "a\nb", 10, []string{"a", "b"}, io.EOF},
		{"at the limit", strings.Repeat("x", 10) + "\n", 10, []string{strings.Repeat("x", 10)}, io.EOF},
		{"over the limit", strings.Repeat("x", 11) + "\n", 10, nil, ErrMessageTooLarge},
		{"over the limit beyond the buffer", strings.Repeat("x", 200<<10) + "\n", 100 << 10, nil, ErrMessageTooLarge},
		{"long line within the limit", strings.Repeat("x", 200<<10) + "\n", 300 << 10, []string{strings.Repeat("x", 200<<10)}, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newLineReader(strings.NewReader(tt.input), tt.max)
			var got []string
			var err error
			for {
				var line []byte
				if line, err = r.next(); err != nil {
					break
				}
				got = append(got, string(line))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || !errors.Is(err, tt.wantErr) {
				t.Errorf("lines %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestErrorResponseKeepsTheID(t *testing.T) {
	for _, id := range []string{`7`, `"x"`} {
		m := parse([]byte(strings.TrimSpace(string(errorResponse([]byte(id), "lost")))))
		want, _ := idKey([]byte(id))
		if m.kind != response || m.id != want || !m.failed {
			t.Errorf("errorResponse(%s) parses as %+v", id, m)
		}
	}
}
