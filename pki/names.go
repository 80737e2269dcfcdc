package pki

import (
	"fmt"
	"regexp"
	"strings"
)

// Role is the authority a client certificate carries, stored in its Subject
// OrganizationalUnit.
type Role string

// Roles. An operator may call every tool; an agent only read-only ones.
const (
	RoleAgent    Role = "agent"
	RoleOperator Role = "operator"
)

// ParseRole validates a role name; the empty string means RoleAgent, the
// least authority.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case "", RoleAgent:
		return RoleAgent, nil
	case RoleOperator:
		return RoleOperator, nil
	}
	return "", fmt.Errorf("%w: %q (want %q or %q)", ErrInvalidRole, s, RoleAgent, RoleOperator)
}

// Allows reports whether a holder of r may hand out a certificate of role
// other: nobody can issue more authority than their own.
func (r Role) Allows(other Role) bool {
	return r == RoleOperator || r == other
}

// namePattern is the only shape a certificate name may have: names become
// file names (NAME.crt, NAME.key), so path separators, dots-only names and
// leading dashes must be impossible.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateName checks a client certificate name.
func ValidateName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: %q must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} (1-64 characters, starting with a letter or digit)", ErrInvalidName, name)
	}
	// The bundle directory holds ca.crt beside NAME.crt: a client named "ca"
	// would overwrite it (on case-insensitive file systems "CA" too).
	if strings.EqualFold(name, "ca") {
		return fmt.Errorf("%w: %q is reserved for the CA certificate file", ErrInvalidName, name)
	}
	// Nor may a bundle file be named like a state file (mtls_ca.key ...),
	// whatever directory it goes to (issue 10 item 6).
	for _, ext := range []string{".crt", ".key", ".p12"} {
		for _, f := range stateFiles {
			if strings.EqualFold(name+ext, f) {
				return fmt.Errorf("%w: %q is reserved: its bundle would be named like the state file %s", ErrInvalidName, name, f)
			}
		}
	}
	return nil
}
