package jsonrpc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// errorIDs are the ids the encoding tests echo: every kind JSON-RPC allows,
// and the bytes that encoding/json treats specially.
var errorIDs = []struct {
	name string
	id   json.RawMessage // nil: absent
}{
	{"absent", nil},
	{"null", json.RawMessage(`null`)},
	{"number", json.RawMessage(`7`)},
	{"negative float", json.RawMessage(`-1.5e3`)},
	{"string", json.RawMessage(`"req-1"`)},
	{"unicode", json.RawMessage(`"é漢🙂"`)},
	{"escaped unicode", json.RawMessage(`"\u00e9"`)},
	{"html characters", json.RawMessage(`"<a href='x'>&</a>"`)},
	{"line separator", json.RawMessage("\"a\u2028b\u2029c\"")},
	{"escaped quote and backslash", json.RawMessage(`"a\"b\\c"`)},
}

// marshalError is the straightforward encoding of an error response with
// json.Marshal (HTML escaping on), nil id as null, nil data left out.
func marshalError(t *testing.T, id json.RawMessage, code int, message string, data any) []byte {
	t.Helper()
	if id == nil {
		id = json.RawMessage("null")
	}
	type detail struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    any    `json:"data,omitempty"`
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   detail          `json:"error"`
	}{"2.0", id, detail{code, message, data}})
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestEncodeErrorBytes checks EncodeError against json.Marshal byte for
// byte, for every kind of id, with and without data: the same bytes except
// that '<', '>', '&' (and U+2028, U+2029 in an echoed id) are not escaped,
// which is what the stream transport has written since issue 7. Escaping
// the output with json.HTMLEscape, as the bridge does, gives json.Marshal's
// bytes exactly.
func TestEncodeErrorBytes(t *testing.T) {
	t.Parallel()
	datas := []struct {
		name string
		data any
	}{
		{"no data", nil},
		{"data", map[string]any{"maxMessageBytes": 4 << 20}},
		{"data with html", map[string]any{"seen": "<script>&"}},
	}
	for _, tc := range errorIDs {
		for _, d := range datas {
			t.Run(tc.name+"/"+d.name, func(t *testing.T) {
				t.Parallel()
				const msg = "Invalid Request: id <longer> & worse"
				got := EncodeError(tc.id, CodeInvalidRequest, msg, d.data)
				want := marshalError(t, tc.id, CodeInvalidRequest, msg, d.data)

				var escaped bytes.Buffer
				json.HTMLEscape(&escaped, got)
				if !bytes.Equal(escaped.Bytes(), want) {
					t.Errorf("HTMLEscape(EncodeError) =\n%s\nwant json.Marshal's\n%s", escaped.Bytes(), want)
				}
				if bytes.ContainsAny(got, "<>&") != bytes.ContainsAny(unescapeHTML(want), "<>&") || bytes.Contains(got, []byte(`\u003c`)) {
					t.Errorf("EncodeError = %s: HTML characters escaped", got)
				}
				if !bytes.Equal(got, unescapeHTML(want)) {
					t.Errorf("EncodeError =\n%s\nwant json.Marshal's without HTML escaping\n%s", got, unescapeHTML(want))
				}
				if bytes.Count(got, []byte("\n")) != 1 || got[len(got)-1] != '\n' {
					t.Errorf("EncodeError = %q: not one line", got)
				}
			})
		}
	}
}

// unescapeHTML undoes json.Marshal's HTML escaping of a line with no
// backslash-u sequences of its own but those escapes.
func unescapeHTML(b []byte) []byte {
	r := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&", `\u2028`, "\u2028", `\u2029`, "\u2029")
	return []byte(r.Replace(string(b)))
}

func TestEncodeLineDoesNotEscapeHTML(t *testing.T) {
	t.Parallel()
	got, err := EncodeLine(map[string]string{"method": "<x>&\n\u2028"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\"method\":\"<x>&\\n\\u2028\"}\n"; string(got) != want {
		t.Errorf("EncodeLine = %q, want %q", got, want)
	}
}
