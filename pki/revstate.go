package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// checkMissingStore decides what a missing revocation store
// (mtls_revoked.json) means, for the writer (Revoke, List) and the
// RevocationChecker alike, so the two can never disagree (issue 10 item 4).
// It returns nil only when the state directory provably never recorded a
// revocation, so that an empty store is the truth; otherwise an error
// naming the file: starting an empty store then would let every revoked
// certificate back in (fail open). The error wraps nothing; callers wrap it
// in their own sentinel (ErrCorruptState, ErrRevocationUnavailable).
//
// The evidence is the inventory (mtls_issued.json), whose "revocations"
// field counts every revocation ever written (Revoke raises it before it
// writes the store), and the CA files. Init writes the inventory, then the
// store, after the CA; so a CA without an inventory is damage too.
//
//	store     inventory                                   CA       verdict
//	present   (any)                                       (any)    use the store
//	corrupt   (any)                                       (any)    fail closed: ErrCorruptState
//	missing   revocations > 0                             (any)    fail closed
//	missing   no count (older nefia) listing certificates (any)    fail closed: revocations may exist
//	missing   no count, no certificates                   (any)    empty: nothing was revocable
//	missing   revocations = 0                             (any)    empty: none were recorded
//	missing   corrupt or unreadable                       (any)    fail closed
//	missing   missing                                     present  fail closed: cannot know
//	missing   missing                                     missing  empty: never initialized
//
// Before this matrix, a missing store whose revocation log
// (RevokedLogFile) holds a complete line fails closed whatever the
// inventory says; the log's own states are listed in revlog.go.
//
// A present store never depends on the inventory (item 5): a revocation
// is honoured whatever the inventory says, and revoking works while the
// inventory is missing or damaged. The RevocationChecker adds one rule of
// its own: once it has loaded a store holding revocations, that store going
// missing fails closed whatever the inventory says.
func checkMissingStore(dir string) error {
	storePath := filepath.Join(dir, RevokedFile)
	lost := func(format string, args ...any) error {
		return fmt.Errorf("%s is missing, but %s; restore it from a backup "+
			"(starting an empty store would let revoked certificates back in)", storePath, fmt.Sprintf(format, args...))
	}
	// A torn inventory (an interrupted append) keeps its header line,
	// so its count is read as from a whole one (decodeInventory).
	h, err := readInventoryFile(filepath.Join(dir, IssuedFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ca, err := (&Store{dir: dir}).caPresent()
		if err != nil {
			return lost("whether revocations were recorded cannot be told: %v", err)
		}
		if ca {
			return lost("a CA exists and %s is missing too, so whether revocations were recorded cannot be told", IssuedFile)
		}
		return nil
	case err != nil:
		return lost("whether revocations were recorded cannot be told: %v", err)
	case h.Version != 1:
		return lost("%s has unsupported version %d, so whether revocations were recorded cannot be told", IssuedFile, h.Version)
	case h.Revocations != nil && *h.Revocations < 0:
		return lost("%s has a negative revocation count", IssuedFile)
	case h.Revocations != nil && *h.Revocations > 0:
		return lost("%s records %d revocation(s)", IssuedFile, *h.Revocations)
	case h.Revocations == nil && len(h.Certificates) > 0:
		return lost("%s (written by an older nefia) lists certificates that may have been revoked", IssuedFile)
	}
	return nil
}
