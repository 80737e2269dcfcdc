package upstream

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLineLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "lines at the limit", in: "12345\n12345\n", ok: true},
		{name: "unterminated at the limit", in: "12345\n12345", ok: true},
		{name: "line over the limit", in: "12345\n123456\n", ok: false},
		{name: "unterminated over the limit", in: "123456", ok: false},
		{name: "empty lines", in: "\n\n\n", ok: true},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				var r io.Reader = strings.NewReader(tt.in)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				var reported error
				_, err := io.ReadAll(&lineLimit{r: r, max: 5, onLimit: func(e error) { reported = e }})
				if (err == nil) != tt.ok || (reported == nil) != tt.ok {
					t.Errorf("ReadAll error %v, reported %v; want ok %v", err, reported, tt.ok)
				}
			})
		}
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sse  bool
		in   string
		ok   bool
	}{
		{name: "json body at the limit", in: "12345", ok: true},
		{name: "json body over the limit", in: "123456", ok: false},
		{name: "json blank lines do not reset", in: "12\n\n34\n\n", ok: false},
		{name: "sse events each under the limit", sse: true, in: "d:1\n\nd:2\n\nd:3\n\n", ok: true},
		{name: "sse events with CRLF", sse: true, in: "d\r\n\r\ne\r\n\r\nf\r\n\r\n", ok: true},
		{name: "sse event over the limit", sse: true, in: "d:1\nd:2\n\n", ok: false},
		{name: "sse event without its blank line", sse: true, in: "d:12345", ok: false},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				var r io.Reader = strings.NewReader(tt.in)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				_, err := io.ReadAll(&bodyLimit{rc: io.NopCloser(r), max: 5, sse: tt.sse})
				if (err == nil) != tt.ok {
					t.Errorf("ReadAll error %v, want ok %v", err, tt.ok)
				}
			})
		}
	}
}
