package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nefia/nefia/internal/atomicfile"
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

// Versions of the revocation store. A store with a log is version 2, so
// that a nefia from before the log (which accepts only version 1 and
// ignores unknown fields) refuses it and fails closed, rather than reading
// the store alone and admitting what only the log says is revoked. Version
// 1 is still read (a store from before the log, and one written with
// "log":true before the version was raised).
const (
	revokedVersionNoLog = 1
	revokedVersionLog   = 2
)

// knownRevokedVersion reports whether v is a store version this nefia reads.
func knownRevokedVersion(v int) bool { return v == revokedVersionNoLog || v == revokedVersionLog }

type revokedFile struct {
	Version int `json:"version"`
	// CRLNumber is the number of the last CRL signed, or about to be:
	// it is written here before the CRL that carries it (see
	// nextCRLNumber). 0: no CRL yet.
	CRLNumber int64 `json:"crl_number,omitempty"`
	// Log says a revocation log (RevokedLogFile) belongs to this store,
	// so that losing the log is noticed. Every store written since
	// issue 16 says so.
	Log     bool         `json:"log,omitempty"`
	Revoked []Revocation `json:"revoked"`
}

// writeRevoked replaces the revocation store with rf, which must hold
// every revocation of the store and the log, then empties the log (a
// fold). The store is durable before the log is replaced, both by rename:
// a crash in between leaves the log's lines in both, which readRevoked
// counts once. A store that had no log yet gets an empty one first, so no
// crash leaves a store that says it keeps a log with none beside it
// (which would refuse every handshake until repaired).
func (s *Store) writeRevoked(rf revokedFile) error {
	logPath := s.Path(RevokedLogFile)
	if _, err := os.Lstat(logPath); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(logPath, nil, recordMode); err != nil {
			return err
		}
	}
	head := ""
	if rf.CRLNumber != 0 {
		head = `"crl_number":` + strconv.FormatInt(rf.CRLNumber, 10) + `,`
	}
	head += `"log":true,`
	if err := writeRecords(s.Path(RevokedFile), revokedVersionLog, head, "revoked", rf.Revoked); err != nil {
		return err
	}
	return atomicfile.WriteFile(logPath, nil, recordMode)
}

// readRevoked loads the revocation store and its log for a
// read-modify-write or a report. A missing store is empty only where
// checkMissingStore proves no revocation was ever recorded and no log
// exists; anywhere else it is as bad as a corrupt one (ErrCorruptState,
// naming the file), and nothing may write over it. The log is read
// before the store: a fold writes the store before it empties the log, so
// this order never misses a revocation a concurrent fold moved.
func (s *Store) readRevoked() (revokedFile, error) {
	lg, err := readRevLog(s.Path(RevokedLogFile))
	if err != nil {
		return revokedFile{}, err
	}
	var rf revokedFile
	err = readJSON(s.Path(RevokedFile), &rf)
	if errors.Is(err, fs.ErrNotExist) {
		if len(lg.entries) > 0 {
			return rf, fmt.Errorf("%w: %s is missing, but its log %s holds revocations; restore it from a backup "+
				"(starting an empty store would let revoked certificates back in)", ErrCorruptState, s.Path(RevokedFile), RevokedLogFile)
		}
		if err := checkMissingStore(s.dir); err != nil {
			return rf, fmt.Errorf("%w: %v", ErrCorruptState, err)
		}
		return revokedFile{Version: 1}, nil
	}
	if err != nil {
		return rf, err
	}
	if err := validateRevoked(s.Path(RevokedFile), rf); err != nil {
		return rf, err
	}
	if rf.Log && !lg.exists {
		return rf, fmt.Errorf("%w: %s is missing, but %s says it keeps one; restore both from a backup "+
			"(without it, the revocations recorded since the store was last written would be forgotten)", ErrCorruptState, s.Path(RevokedLogFile), RevokedFile)
	}
	if len(lg.entries) > 0 {
		have := make(map[string]bool, len(rf.Revoked))
		for _, r := range rf.Revoked {
			have[r.Serial] = true
		}
		for _, e := range lg.entries {
			if !have[e.Serial] {
				rf.Revoked = append(rf.Revoked, e.Revocation)
				have[e.Serial] = true
			}
		}
	}
	rf.CRLNumber = max(rf.CRLNumber, lg.maxCRL)
	return rf, nil
}

func validateRevoked(path string, rf revokedFile) error {
	if !knownRevokedVersion(rf.Version) {
		return fmt.Errorf("%w: %s: unsupported version %d", ErrCorruptState, path, rf.Version)
	}
	if rf.Version == revokedVersionLog && !rf.Log {
		return fmt.Errorf("%w: %s: version %d without its log", ErrCorruptState, path, rf.Version)
	}
	if rf.CRLNumber < 0 {
		return fmt.Errorf("%w: %s: negative crl_number %d", ErrCorruptState, path, rf.CRLNumber)
	}
	for i, r := range rf.Revoked {
		if canon, err := ParseSerial(r.Serial); err != nil || canon != r.Serial {
			return fmt.Errorf("%w: %s: entry %d has a malformed serial %q", ErrCorruptState, path, i, r.Serial)
		}
	}
	return nil
}

// RevokeResult is what RevokeReport did: the revocation record and what
// the operator should be told about it.
type RevokeResult struct {
	Revocation
	// Warnings are facts that did not stop the revocation: the serial is
	// not in the inventory, or the inventory could not be read or updated.
	// They name files by base name only, so they can be shown to a remote
	// caller.
	Warnings []string
}

// Revoke is RevokeReport without the warnings.
func (s *Store) Revoke(serial, reason string) (Revocation, error) {
	res, err := s.RevokeReport(serial, reason)
	return res.Revocation, err
}

// RevokeReport adds serial to the revocation store. Any well-formed serial
// is revocable (issue 10 item 5): a certificate whose inventory entry is
// lost must still be shut out, so a serial the inventory does not know, or
// an inventory that is missing or unreadable, only adds a warning.
// Revoking an already revoked serial changes nothing and returns the
// existing record with ErrAlreadyRevoked, so callers can report "already
// revoked" and stay idempotent.
//
// The inventory's revocation count is made positive before the first
// revocation is written, so a store lost afterwards is recognised as lost
// (checkMissingStore), and
// a store that is missing where revocations may have been recorded is
// refused (ErrCorruptState naming it) and left alone (issue 10 item 4).
func (s *Store) RevokeReport(serial, reason string) (RevokeResult, error) {
	canon, err := ParseSerial(serial)
	if err != nil {
		return RevokeResult{}, err
	}
	reason, err = cleanReason(reason)
	if err != nil {
		return RevokeResult{}, err
	}
	if s.records != nil {
		return s.revokeShared(canon, reason)
	}
	return s.revokeFile(canon, reason)
}

// Revocations returns every entry of the revocation store.
func (s *Store) Revocations() ([]Revocation, error) {
	if s.records != nil {
		return s.records.Revoked()
	}
	rf, err := s.readRevoked()
	return rf.Revoked, err
}

func cleanReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	return reason, ValidateReason(reason)
}

// ValidateReason checks a revocation reason, which is free text from an
// operator or a model and ends up in the store, the audit trail and
// terminals: at most MaxReasonLen bytes of valid UTF-8, and no control
// characters, line or paragraph separators or invisible format characters
// (Unicode Cc, Zl, Zp, Cf), such as the bidirectional overrides that make
// text read differently from what it is (issue 10 item 8). The error
// wraps ErrInvalidReason.
func ValidateReason(reason string) error {
	if len(reason) > MaxReasonLen {
		return fmt.Errorf("%w: it is %d bytes, at most %d are accepted", ErrInvalidReason, len(reason), MaxReasonLen)
	}
	if !utf8.ValidString(reason) {
		return fmt.Errorf("%w: it is not valid UTF-8", ErrInvalidReason)
	}
	if i := strings.IndexFunc(reason, func(r rune) bool {
		return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
	}); i >= 0 {
		r, _ := utf8.DecodeRuneInString(reason[i:])
		return fmt.Errorf("%w: it must not contain control characters or invisible formatting characters such as bidirectional overrides (found %U)", ErrInvalidReason, r)
	}
	return nil
}
