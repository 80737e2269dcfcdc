package jsonrpc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// appendStringCases are strings whose encoding json.Marshal decides
// differently: every byte value alone, the runes it escapes, invalid UTF-8.
func appendStringCases() []string {
	cases := []string{"", "plain text", `"quoted" \ back`, "<a href='x'>&amp;</a>", "line\nbreak\ttab\r\b\f",
		"\u2028\u2029", "é ü 日本 🙂", "\xff\xfe bad \xc3", "you are: \"bot\" (role agent)\nproblems: none"}
	for c := range 256 {
		b := string([]byte{byte(c)})
		cases = append(cases, b, "a"+b+"z")
		for at := range 9 { // at each place of a word, and just after one
			cases = append(cases, strings.Repeat("p", at)+b+"plain tail of text")
		}
	}
	return append(cases, strings.Repeat("status text without escapes, ", 40))
}

// TestAppendStringMatchesMarshal (issue 16, second wave): AppendString,
// which now skips plain bytes eight at a time (a special byte at each
// place of a word, every byte value), writes json.Marshal's bytes.
func TestAppendStringMatchesMarshal(t *testing.T) {
	t.Parallel()
	for _, s := range appendStringCases() {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Errorf("AppendString(%q) = %s, want %s", s, got[1:], want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range appendStringCases() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// BenchmarkAppendString: a status text's worth of plain bytes.
//
//	go test -run '^$' -bench AppendString ./internal/jsonrpc/
func BenchmarkAppendString(b *testing.B) {
	s := strings.Repeat("client certificates: 3 issued, 2 active\n", 12)
	buf := make([]byte, 0, 2*len(s))
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}
