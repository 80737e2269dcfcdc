package jsonrpc

import (
	"math/bits"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// plain marks the ASCII bytes AppendString copies as they are: one load per
// byte instead of six comparisons (issue 16, second wave: the status
// text, hundreds of bytes, is appended to every response).
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

const (
	ones = 0x0101010101010101
	high = 0x8080808080808080
)

// word is src[i:i+8] as a little-endian word (one load).
func word(src string, i int) uint64 {
	_ = src[i+7]
	return uint64(src[i]) | uint64(src[i+1])<<8 | uint64(src[i+2])<<16 | uint64(src[i+3])<<24 |
		uint64(src[i+4])<<32 | uint64(src[i+5])<<40 | uint64(src[i+6])<<48 | uint64(src[i+7])<<56
}

// special marks, in the high bit of its byte, the first byte of w that
// is not plain: below 0x20, not ASCII, or one of " \\ < > &; 0 when all
// are plain. Each term is the "some byte is zero" (or "is less than n",
// n <= 128) bit trick, whose lowest mark is always exact (a borrow only
// runs upwards), so the lowest mark of their union is the first such byte.
func special(w uint64) uint64 {
	zero := func(v uint64) uint64 { return (v - ones) &^ v & high }
	return (w-ones*0x20)&^w&high | w&high | zero(w^(ones*'"')) | zero(w^(ones*'\\')) |
		zero(w^(ones*'<')) | zero(w^(ones*'>')) | zero(w^(ones*'&'))
}

// AppendString appends src as a JSON string exactly as json.Marshal writes
// it (HTML escaping on): control characters, quotes, backslashes, <, > and
// & escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
// The audit trail and the stream's response encoder append their JSON by
// hand with it (issue 16), and must produce json.Marshal's bytes.
func AppendString(dst []byte, src string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(src); {
		// Plain bytes eight at a time, up to the first that is not.
		for i+8 <= len(src) {
			if m := special(word(src, i)); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(src) {
			break
		}
		if c := src[i]; c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			dst = append(dst, src[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(src[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, src[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, src[start:]...)
	return append(dst, '"')
}
