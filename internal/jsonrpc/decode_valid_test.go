package jsonrpc

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeFailsAsValid holds the stream's single scan (issue 16 item 3)
// to its premise: Decode fails with a *json.SyntaxError exactly when
// json.Valid is false, so a parse error is still told from an invalid
// request without scanning the line twice.
func FuzzDecodeFailsAsValid(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, `{"id":`, `{"a":1}x`, `{}`, `{"id":[1]}`,
		`{"method":"\ud800"}`, "{\"m\":\"\xff\"}", `{"id":1,"id":2}`, `{"params":{"a":[1,2,{"b":null}]}}`, `{ }  `, `{"a":01}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var e Envelope
		err := Decode(line, &e)
		_, syntax := errors.AsType[*json.SyntaxError](err)
		if syntax == json.Valid(line) {
			t.Fatalf("Decode(%q) = %v, json.Valid = %v", line, err, json.Valid(line))
		}
	})
}
