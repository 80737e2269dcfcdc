package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode"
)

// MaxReasonLen bounds a revocation reason, which is free text from an
// operator or a model.
const MaxReasonLen = 256

// Revocation is one entry of the revocation store (mtls_revoked.json).
type Revocation struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
	Name      string    `json:"name"`
}

type revokedFile struct {
	Version int          `json:"version"`
	Revoked []Revocation `json:"revoked"`
}

// readRevoked loads the revocation store for a read-modify-write or a report.
// Unlike the inventory, a missing store is not treated as empty here only by
// the checker (fail closed); for writes, a store that was never created (a
// state dir from before init finished) starts empty.
func (s *Store) readRevoked() (revokedFile, error) {
	var rf revokedFile
	err := readJSON(s.Path(RevokedFile), &rf)
	if errors.Is(err, fs.ErrNotExist) {
		return revokedFile{Version: 1}, nil
	}
	if err != nil {
		return rf, err
	}
	return rf, validateRevoked(s.Path(RevokedFile), rf)
}

func validateRevoked(path string, rf revokedFile) error {
	if rf.Version != 1 {
		return fmt.Errorf("%w: %s: unsupported version %d", ErrCorruptState, path, rf.Version)
	}
	for i, r := range rf.Revoked {
		if canon, err := ParseSerial(r.Serial); err != nil || canon != r.Serial {
			return fmt.Errorf("%w: %s: entry %d has a malformed serial %q", ErrCorruptState, path, i, r.Serial)
		}
	}
	return nil
}

// Revoke adds serial to the revocation store. A serial this CA never issued is
// ErrUnknownSerial. Revoking an already revoked serial changes nothing and
// returns the existing record with ErrAlreadyRevoked, so callers can report
// "already revoked" and stay idempotent.
func (s *Store) Revoke(serial, reason string) (Revocation, error) {
	canon, err := ParseSerial(serial)
	if err != nil {
		return Revocation{}, err
	}
	reason, err = cleanReason(reason)
	if err != nil {
		return Revocation{}, err
	}
	unlock, err := s.lock()
	if err != nil {
		return Revocation{}, err
	}
	defer unlock()

	inv, err := s.readInventory()
	if err != nil {
		return Revocation{}, err
	}
	var issued *IssuedCert
	for i := range inv.Certificates {
		if inv.Certificates[i].Serial == canon {
			issued = &inv.Certificates[i]
			break
		}
	}
	if issued == nil {
		return Revocation{}, fmt.Errorf("%w: %s was not issued by this CA (see 'nefia mtls list')", ErrUnknownSerial, canon)
	}
	rf, err := s.readRevoked()
	if err != nil {
		return Revocation{}, err
	}
	for _, r := range rf.Revoked {
		if r.Serial == canon {
			return r, fmt.Errorf("%w: %s (%s) at %s", ErrAlreadyRevoked, canon, r.Name, r.RevokedAt.Format(time.RFC3339))
		}
	}
	rev := Revocation{Serial: canon, RevokedAt: s.now().UTC(), Reason: reason, Name: issued.Name}
	rf.Revoked = append(rf.Revoked, rev)
	if err := writeRecords(s.Path(RevokedFile), "revoked", rf.Revoked); err != nil {
		return Revocation{}, err
	}
	return rev, nil
}

// Revocations returns every entry of the revocation store.
func (s *Store) Revocations() ([]Revocation, error) {
	rf, err := s.readRevoked()
	return rf.Revoked, err
}

func cleanReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	if len(reason) > MaxReasonLen {
		return "", fmt.Errorf("pki: reason is %d bytes, at most %d", len(reason), MaxReasonLen)
	}
	if strings.IndexFunc(reason, unicode.IsControl) >= 0 {
		return "", errors.New("pki: reason must not contain control characters")
	}
	return reason, nil
}
