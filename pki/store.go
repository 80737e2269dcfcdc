package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// File names inside the state directory, as listed in DESIGN.md.
const (
	CACertFile     = "mtls_ca.crt"
	CAKeyFile      = "mtls_ca.key"
	ServerCertFile = "mtls_server.crt"
	ServerKeyFile  = "mtls_server.key"
	IssuedFile     = "mtls_issued.json"
	RevokedFile    = "mtls_revoked.json"
	lockFile       = ".mtls.lock"
)

// File modes: private keys and state are readable by the owner only; the
// directories that hold them are not listable by anyone else.
const (
	dirMode    fs.FileMode = 0o700
	keyMode    fs.FileMode = 0o600
	certMode   fs.FileMode = 0o644
	recordMode fs.FileMode = 0o600
)

// Clock tells the time. It is injected so that expiry and revocation edge
// cases can be tested to the second.
type Clock interface {
	Now() time.Time
}

// SystemClock is the Clock of the real world.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Store is the nefia state directory. Its methods are safe for concurrent use
// by goroutines and by processes: mutations hold an exclusive file lock.
type Store struct {
	dir   string
	clock Clock
	log   *slog.Logger

	// inv caches the parsed inventory by file version: a running gateway
	// issues many certificates, and re-parsing the whole inventory for each
	// would make issuance O(n) in parsing on top of the O(n) write.
	invMu  sync.Mutex
	invVer atomicfile.Version
	inv    *inventoryFile
	// invSize is the size of the inventory file at invVer when it ends
	// as writeRecords ends it, so issuance can append; 0: rewrite it.
	invSize int64
	// commit groups concurrent issuers into one append (recordFile).
	commitMu sync.Mutex
	commit   invCommit

	// records, when set, holds the inventory and the revocations instead
	// of the files (WithRecords).
	records Records
}

// Option configures a Store.
type Option func(*Store)

// WithClock makes the Store read time from c instead of the system clock.
func WithClock(c Clock) Option { return func(s *Store) { s.clock = c } }

// WithLogger gives the Store a logger for what it cannot return: a failure
// that did not stop the operation (a CRL not regenerated after a
// revocation). Without it, slog.Default is used.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// NewStore returns the Store rooted at dir. Nothing is created until the first
// write.
func NewStore(dir string, opts ...Option) *Store {
	s := &Store{dir: dir, clock: SystemClock{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the path of a file in the state directory.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name) }

func (s *Store) now() time.Time { return s.clock.Now() }

// ensureDir creates the state directory 0700 if missing. An existing directory
// keeps its mode: tightening a user's directory behind their back would be a
// surprise, and status reports a loose one as a problem.
func (s *Store) ensureDir() error {
	if err := os.MkdirAll(s.dir, dirMode); err != nil {
		return fmt.Errorf("pki: create state dir %s: %w", s.dir, err)
	}
	return nil
}

// lock takes the state directory's exclusive lock for a read-modify-write.
func (s *Store) lock() (func(), error) {
	if err := s.ensureDir(); err != nil {
		return nil, err
	}
	return atomicfile.Lock(s.Path(lockFile))
}

// Lock takes the state directory's exclusive lock, so that other packages
// keeping files in the state directory (the upstream assertion key) create
// them once even when the CLI and a gateway race; call the returned
// function to release it.
func (s *Store) Lock() (unlock func(), err error) { return s.lock() }

// readJSON decodes a state file into v. A missing file reports fs.ErrNotExist;
// anything unparsable is ErrCorruptState naming the file.
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pki: read %s: %w", path, err)
	}
	return decodeJSON(path, data, v)
}

func decodeJSON(path string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorruptState, path, err)
	}
	return nil
}

// writeRecords writes a state file atomically as {"version":V,"KEY":[...]}
// with one compact record per line: cheap to encode at 100,000 records, and
// still readable (and diffable) by an operator. head, when not empty, is
// rendered JSON members (ending in a comma) written before KEY.
func writeRecords[T any](path string, version int, head, key string, items []T) error {
	data, err := encodeRecordsVersion(path, version, head, key, items)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, recordMode)
}

// encodeRecords is writeRecords' encoding: the straightforward one that
// the inventory's appends must reproduce byte for byte.
func encodeRecords[T any](path, head, key string, items []T) ([]byte, error) {
	return encodeRecordsVersion(path, 1, head, key, items)
}

// encodeRecordsVersion is encodeRecords for a file of the given format
// version.
func encodeRecordsVersion[T any](path string, version int, head, key string, items []T) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(64 + len(head) + 200*len(items))
	b.WriteString(`{"version":` + strconv.Itoa(version) + `,` + head + `"` + key + `":[`)
	if err := appendItems(&b, 0, items); err != nil {
		return nil, fmt.Errorf("pki: encode %s: %w", path, err)
	}
	b.WriteString(closing(len(items)))
	return b.Bytes(), nil
}

// appendItems writes items as list entries following first entries
// already written: one per line, comma-separated. The inventory's appends
// (appendEncoding) and the whole-file encoding share it, so their bytes
// cannot drift apart.
func appendItems[T any](b *bytes.Buffer, first int, items []T) error {
	for i := range items {
		if first+i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n  ")
		data, err := json.Marshal(items[i])
		if err != nil {
			return err
		}
		b.Write(data)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("pki: stat %s: %w", path, err)
}
