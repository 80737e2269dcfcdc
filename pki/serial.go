package pki

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
)

// serialBits is the size of a serial: 128 random bits keep collisions out of
// reach and make serials unguessable (CA/B Forum BR 7.1 asks for at least 64).
const serialBits = 128

// maxSerialOctets is RFC 5280 §4.1.2.2's cap on a serial's size.
const maxSerialOctets = 20

// maxSerialLen bounds accepted serial text: RFC 5280 §4.1.2.2 caps serials at
// 20 octets, 40 hex digits; colons may sit between octets.
const maxSerialLen = 40 + 19

// NewSerial returns a positive 128-bit serial from crypto/rand.
func NewSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), serialBits)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: generate serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// FormatSerial returns the canonical text form of a serial: lowercase hex, no
// separators, no leading zeros.
func FormatSerial(n *big.Int) string { return n.Text(16) }

// ParseSerial accepts a serial in any case, with or without colons between
// octets (as openssl prints them), and returns its canonical form.
func ParseSerial(s string) (string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidSerial)
	}
	if len(t) > maxSerialLen {
		return "", fmt.Errorf("%w: longer than 20 bytes", ErrInvalidSerial)
	}
	// One optional prefix, then the colons: removing the colons first read
	// "0:x1" as 0x1, and trimming both prefixes read "0x0X1" as 1 (found by
	// FuzzParseSerial, issue 7).
	if len(t) >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		t = t[2:]
	}
	t = strings.ReplaceAll(t, ":", "")
	if t == "" {
		return "", fmt.Errorf("%w: %q has no digits", ErrInvalidSerial, s)
	}
	for _, r := range t {
		if !isHexDigit(r) {
			return "", fmt.Errorf("%w: %q is not hexadecimal", ErrInvalidSerial, s)
		}
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: %q must be a positive number", ErrInvalidSerial, s)
	}
	// The text cap above lets up to 59 digits through when no colons are
	// used; the value itself must fit in 20 octets (found by
	// FuzzParseSerial, issue 7).
	if n.BitLen() > 8*maxSerialOctets {
		return "", fmt.Errorf("%w: longer than 20 bytes", ErrInvalidSerial)
	}
	return FormatSerial(n), nil
}

func isHexDigit(r rune) bool {
	return ('0' <= r && r <= '9') || ('a' <= r && r <= 'f') || ('A' <= r && r <= 'F')
}
