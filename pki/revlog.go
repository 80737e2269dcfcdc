package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nefia/nefia/internal/atomicfile"
)

// RevokedLogFile is the revocation log (issue 16): one fsynced JSON line
// per revocation since the store (RevokedFile) was last written whole. A
// revocation at 100,000 revoked serials then costs one appended line, not
// a 13 MB rewrite, and readers (the gateway's RevocationChecker) read only
// the lines they have not seen.
//
// The store and the log are one state: the store's "log":true says a log
// belongs to it, so a lost log fails closed like a lost store. Writing the
// store whole (writeRevoked: a fold) replaces the log by an empty one
// after the store is durable, by rename, so every log file ever seen is
// append-only and a reader holding it open reads it by offset. States:
//
//	store     log                                   verdict
//	present   present                               store plus the log's complete lines
//	present   missing, store says "log":true        fail closed: ErrCorruptState / ErrRevocationUnavailable
//	present   missing, no "log" (older nefia)       the store alone
//	present   last line without its "\n"            that line ignored (an append in progress, or one a
//	                                                crash cut: never acknowledged); the next writer
//	                                                truncates it away
//	present   a complete line that does not parse   fail closed
//	          (or a malformed serial, or zeros)
//	present   not a regular file, unreadable        fail closed
//	missing   holding a complete line               fail closed: the store was lost
//	missing   missing, or no complete line          checkMissingStore's matrix
const RevokedLogFile = "mtls_revoked.log"

// foldEvery is how many log lines make the next revocation write the
// store whole and empty the log: the fold costs one store rewrite per
// foldEvery revocations, and the log a reader parses stays small.
const foldEvery = 4096

// logEntry is one line of the log: the revocation and the CRL number it
// reserved (see nextCRLNumber), so a lost CRL file never rewinds it.
type logEntry struct {
	Revocation
	CRLNumber int64 `json:"crl_number,omitempty"`
}

// revLog is what was read of a log: its complete lines and the offset
// just past the last one.
type revLog struct {
	exists  bool
	entries []logEntry
	size    int64 // bytes of complete lines
	maxCRL  int64
}

// readRevLog reads the log at path. A missing log is empty (exists false);
// a complete line that does not parse is ErrCorruptState; an incomplete
// last line is left out of entries and size.
func readRevLog(path string) (revLog, error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return revLog{}, fmt.Errorf("%w: %s is not a regular file", ErrCorruptState, path)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return revLog{}, nil
	}
	if err != nil {
		return revLog{}, fmt.Errorf("pki: read %s: %w", path, err)
	}
	l := revLog{exists: true}
	err = parseLogLines(path, data, 0, func(e logEntry) { l.entries = append(l.entries, e); l.maxCRL = max(l.maxCRL, e.CRLNumber) }, &l.size)
	return l, err
}

// parseLogLines calls add for each complete line of data (which starts at
// byte base of the log) and advances *size past it.
func parseLogLines(path string, data []byte, base int64, add func(logEntry), size *int64) error {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return nil // incomplete: in progress, or cut by a crash
		}
		var e logEntry
		if err := json.Unmarshal(data[:i], &e); err != nil {
			return fmt.Errorf("%w: %s: line at byte %d: %v", ErrCorruptState, path, base+*size, err)
		}
		if canon, err := ParseSerial(e.Serial); err != nil || canon != e.Serial || e.CRLNumber < 0 {
			return fmt.Errorf("%w: %s: line at byte %d has a malformed serial %q or CRL number", ErrCorruptState, path, base+*size, e.Serial)
		}
		add(e)
		*size += int64(i + 1)
		data = data[i+1:]
	}
	return nil
}

// appendRevLog appends e to the log at path as one line and fsyncs it,
// first cutting off an incomplete last line (size is where the complete
// lines end). Must be called under the state lock.
func appendRevLog(path string, size int64, e logEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("pki: encode %s: %w", path, err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, recordMode)
	if err != nil {
		return fmt.Errorf("pki: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pki: stat %s: %w", path, err)
	}
	if fi.Size() != size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("pki: cut the torn tail of %s: %w", path, err)
		}
	}
	if _, err := f.WriteAt(line, size); err != nil {
		return fmt.Errorf("pki: append to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: fsync %s: %w", path, err)
	}
	if size == 0 {
		return atomicfile.SyncDir(filepath.Dir(path)) // a new log's entry
	}
	return nil
}

// storeHead is the store's first line decoded: everything but the
// revocations. ok is false when the store is not laid out as
// writeRevoked writes it (then the caller reads it whole).
func storeHead(data []byte) (rf revokedFile, ok bool) {
	if json.Unmarshal(headLine(data, "revoked"), &rf) != nil || !knownRevokedVersion(rf.Version) || rf.CRLNumber < 0 {
		return revokedFile{}, false
	}
	return rf, true
}

// headLine is the first line of a record file as writeRecords writes it
// (every field, then the list key and its opening bracket), closed into an
// object of its own: the fields without the list.
func headLine(data []byte, listKey string) []byte {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	if bytes.HasSuffix(line, []byte(`"`+listKey+`":[`)) {
		line = append(bytes.Clone(line), "]}"...)
	}
	return line
}

// serialKey is how a serial appears in the store and the log, as
// json.Marshal writes it. A quote inside a string is escaped, so it
// cannot occur inside another value.
func serialKey(canon string) []byte { return []byte(`"serial":"` + canon + `"`) }
