package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// termSafe makes a string that came from a peer or a file safe to print on
// the operator's terminal: control characters (C0, DEL, C1: ESC sequences,
// carriage returns and newlines that would forge or hide a line) and the
// bidirectional overrides and isolates (which reorder what is displayed,
// "Trojan Source") are written as visible escapes, \x1b or \u202e, as is
// every byte that is not UTF-8. Everything else, other scripts included, is
// printed as is. Every human-readable output of a certificate name, serial,
// audit field, path or problem goes through it (issue 10 item 13); --json
// output is for programs and keeps the data.
func termSafe(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		case bidiControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || bidiControl(r) {
			return true
		}
		i += size
	}
	return false
}

// bidiControl reports the Unicode bidirectional formatting characters:
// marks, embeddings, overrides and isolates.
func bidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}
