package policy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrUnsafeURI marks a resource URI (or a subject) the policy refuses to
// decide: one a glob on its text could allow while the upstream resolves it
// elsewhere ("file:///srv/shared/../../etc/shadow" matches
// "file:///srv/shared/*"). The message says what was found.
var ErrUnsafeURI = errors.New("unsafe resource uri")

// maxDecodes bounds how many layers of percent-encoding CheckURI peels off
// a segment ("%252e" is "%2e" once decoded, "." twice).
const maxDecodes = 4

// CheckURI refuses a resource URI whose text is not what an upstream will
// act on: dot segments ("." or "..", plain or percent-encoded in any case,
// also ending at '?', '#' or ';'), an encoded '/' or '\' or a literal '\'
// (separators a glob does not see), NUL and other control characters. The
// policy decides resource URIs by glob on their text, so it can only vouch
// for URIs with none of these; Decide denies them whatever a rule allows.
func CheckURI(uri string) error {
	if err := checkControl(uri); err != nil {
		return err
	}
	if strings.ContainsRune(uri, '\\') {
		return fmt.Errorf("%w: %q contains a backslash", ErrUnsafeURI, uri)
	}
	segs := strings.FieldsFunc(uri, func(r rune) bool { return r == '/' || r == '?' || r == '#' || r == ';' })
	for _, seg := range segs {
		d := seg
		for range maxDecodes {
			u, err := url.PathUnescape(d)
			if err != nil || u == d {
				break
			}
			d = u
		}
		switch {
		case d != seg && strings.ContainsAny(d, "/\\?#;"):
			return fmt.Errorf("%w: %q contains an encoded separator (%q)", ErrUnsafeURI, uri, seg)
		case d != seg && checkControl(d) != nil:
			return fmt.Errorf("%w: %q contains an encoded control character (%q)", ErrUnsafeURI, uri, seg)
		case d == "." || d == "..":
			return fmt.Errorf("%w: %q contains a dot segment (%q)", ErrUnsafeURI, uri, seg)
		}
	}
	return nil
}

// checkControl refuses NUL and the other ASCII control characters (and
// DEL), which no tool name, prompt name or URI needs and which path.Match
// or an upstream may read differently from the text a rule was written for.
func checkControl(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: %q contains control character %#02x at byte %d", ErrUnsafeURI, s, c, i)
		}
	}
	return nil
}

// checkSubject is what Decide refuses before matching any rule: control
// characters in any subject, and for a resource subject a URI CheckURI
// refuses.
func checkSubject(subject string) error {
	if _, kind, name, ok := parts(subject); ok && kind == KindResource {
		return CheckURI(name)
	}
	return checkControl(subject)
}
