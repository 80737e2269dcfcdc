package pki_test

import (
	"errors"
	"math/big"
	"regexp"
	"strings"
	"testing"

	"github.com/nefia/nefia/pki"
)

// canonicalSerial is the only text ParseSerial may return: lowercase hex,
// no leading zero, at most 20 octets (RFC 5280 §4.1.2.2).
var canonicalSerial = regexp.MustCompile(`^[1-9a-f][0-9a-f]{0,39}$`)

// FuzzParseSerial holds ParseSerial to its documented grammar: optional
// surrounding space, one optional 0x prefix, hex digits in any case with
// colons between them. What it accepts re-parses to itself and has the value
// of its digits; what is not in that grammar, such as the signs, underscores
// and second prefixes big.Int.SetString would read, is refused.
func FuzzParseSerial(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got, err := pki.ParseSerial(s)
		want, wantOK := referenceSerial(s)
		if err != nil {
			if !errors.Is(err, pki.ErrInvalidSerial) {
				t.Fatalf("ParseSerial(%q) = %v, not ErrInvalidSerial", s, err)
			}
			if wantOK && len(strings.TrimSpace(s)) <= 59 {
				t.Fatalf("ParseSerial(%q) refused a serial in the grammar (%s): %v", s, want, err)
			}
			return
		}
		if !wantOK {
			t.Fatalf("ParseSerial(%q) = %q, but it is not a serial", s, got)
		}
		if got != want {
			t.Fatalf("ParseSerial(%q) = %q, want %q", s, got, want)
		}
		if !canonicalSerial.MatchString(got) {
			t.Fatalf("ParseSerial(%q) = %q, not canonical", s, got)
		}
		again, err := pki.ParseSerial(got)
		if err != nil || again != got {
			t.Fatalf("canonical %q re-parses to %q, %v", got, again, err)
		}
		n, _ := new(big.Int).SetString(got, 16)
		if pki.FormatSerial(n) != got {
			t.Fatalf("FormatSerial(%q) = %q", got, pki.FormatSerial(n))
		}
	})
}

// referenceSerial is the grammar written out plainly: the canonical form of
// s if it is a positive serial of at most 20 octets, else false.
func referenceSerial(s string) (string, bool) {
	t := strings.TrimSpace(s)
	if len(t) >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		t = t[2:]
	}
	var digits strings.Builder
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c == ':':
			// separators carry no value
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			digits.WriteByte(c)
		default:
			return "", false
		}
	}
	d := strings.TrimLeft(strings.ToLower(digits.String()), "0")
	if d == "" || len(d) > 40 {
		return "", false
	}
	return d, true
}
