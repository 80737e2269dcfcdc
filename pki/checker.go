package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// RevocationChecker answers "is this serial revoked?" on every TLS handshake
// without reading the store each time: it keeps the serials in memory and
// re-reads the file only when its inode, size, modification or change time
// differs from what it last loaded (one stat per check, no read). Writers
// replace the file by rename, so every update shows as a new inode.
//
// It fails closed: while the store cannot be read or parsed, every check
// returns ErrRevocationUnavailable. A missing store is judged by the same
// rule as Revoke's (checkMissingStore): empty only in a state directory
// that provably never recorded a revocation, and never once this checker
// has loaded a store that held one. It is safe for concurrent use.
type RevocationChecker struct {
	path    string
	logPath string     // the revocation log beside it (RevokedLogFile)
	reload  sync.Mutex // one reload at a time; checks never wait on it unless the file changed
	snap    atomic.Pointer[revocationSnapshot]
	loads   atomic.Uint64 // file reads, for tests proving checks do not read
	stats   atomic.Uint64 // stat rounds (checks and Watch), for tests proving the watch spares them
	// held is set once a loaded store held a revocation: from then on a
	// missing store fails closed whatever the inventory says.
	held atomic.Bool
	// missing caches the verdict on a missing store by the inventory's
	// version, so a benign missing store costs two stats per check, not an
	// inventory read.
	missing atomic.Pointer[missingVerdict]
	// log is guarded by reload.
	log logReader
	// watch, when not nil, watches the store's directory (inotify): a
	// check whose generation matches verified's costs no stat (issue 16
	// item 2), and Watch blocks on it instead of polling (item 1). Nil
	// where there is none (not Linux, a symlinked state directory): every
	// check stats, and Watch polls.
	watch    *atomicfile.Watch
	verified atomic.Pointer[verifiedSnapshot]
}

// verifiedSnapshot says that snap matched the files when they were statted
// after the watch's generation was gen, at time at.
type verifiedSnapshot struct {
	snap *revocationSnapshot
	gen  uint64
	at   time.Time
}

// watchRecheck bounds how long the watch alone is trusted: what inotify
// cannot see (a parent directory renamed) is caught by a stat within this.
const watchRecheck = time.Second

type missingVerdict struct {
	inv, log atomicfile.Version
	snap     *revocationSnapshot
}

type revocationSnapshot struct {
	id      atomicfile.Version
	logID   atomicfile.Version  // the log's version when read; zero when missing
	serials map[string]struct{} // big-endian serial bytes, from the store
	// logged holds the serials of the log's lines (issue 16): a few
	// thousand at most, copied on each new line, while serials (100,000)
	// is shared between snapshots of one store version.
	logged map[string]struct{}
	err    error // non-nil: the store at id could not be loaded
}

func (s *revocationSnapshot) has(b []byte) bool {
	if _, ok := s.serials[string(b)]; ok {
		return true
	}
	_, ok := s.logged[string(b)]
	return ok
}

// logReader is the checker's open descriptor on the revocation log and
// how far it has read it. Every log file is append-only (a fold replaces
// it by rename), so reading on from off through the same descriptor never
// misses a line.
type logReader struct {
	f   *os.File
	off int64
}

// NewRevocationChecker returns a checker for the store at path (normally
// Store.Path(RevokedFile)). It loads lazily, on the first check.
func NewRevocationChecker(path string) *RevocationChecker {
	c := &RevocationChecker{path: path, logPath: filepath.Join(filepath.Dir(path), RevokedLogFile)}
	// A missing state directory or a symlink: no watch, checks stat.
	c.watch, _ = atomicfile.NewWatch(path, c.logPath)
	return c
}

// Path returns the file the checker watches.
func (c *RevocationChecker) Path() string { return c.path }

// Check returns nil for a certificate that is not revoked, an error wrapping
// ErrRevoked for one that is, and one wrapping ErrRevocationUnavailable when
// the store cannot be consulted.
func (c *RevocationChecker) Check(cert *x509.Certificate) error {
	revoked, err := c.IsRevoked(cert.SerialNumber)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("%w: serial %s (%s)", ErrRevoked, FormatSerial(cert.SerialNumber), cert.Subject.CommonName)
	}
	return nil
}

// IsRevoked reports whether serial is in the store.
func (c *RevocationChecker) IsRevoked(serial *big.Int) (bool, error) {
	snap, err := c.current()
	if err != nil {
		return false, err
	}
	var buf [20]byte // RFC 5280 caps serials at 20 octets
	n := (serial.BitLen() + 7) / 8
	if serial.Sign() <= 0 || n > len(buf) {
		return false, nil // never a serial this CA issued, so never in its store
	}
	b := buf[:n]
	serial.FillBytes(b)
	return snap.has(b), nil
}

// Refresh checks the file now and reloads it if it changed; it returns the
// error that makes checks fail, if any.
func (c *RevocationChecker) Refresh() error {
	_, err := c.current()
	return err
}

// Generation counts the store's reloads: it changes whenever the checker
// read a new version of the file, so callers can re-judge live connections
// only when something changed.
func (c *RevocationChecker) Generation() uint64 { return c.loads.Load() }

// Len returns the number of revoked serials currently loaded.
func (c *RevocationChecker) Len() int {
	if s := c.snap.Load(); s != nil {
		return len(s.serials) + len(s.logged)
	}
	return 0
}

func (c *RevocationChecker) current() (*revocationSnapshot, error) {
	// The watch first (issue 16 item 2). This is exact, not eventually
	// right: a revocation is a write to the log or a rename of the
	// store, and the kernel queues its inotify event in that very system
	// call, so once it returned (before the handshake began) Generation,
	// which reads the queue, has moved past every verified generation,
	// and this check stats. A generation is recorded only with stats made
	// after it was read, so a verified pair never covers a change its
	// stats missed; pairs stored out of order only cost a stat. Another
	// directory put behind the state directory's path (a parent renamed,
	// a symlink re-pointed) breaks the watch, which then stats on every
	// check (atomicfile.Watch); only what inotify cannot see at all (a
	// network file system changed by another host) waits for the 1 s
	// re-stat.
	var gen uint64
	watched := false
	if c.watch != nil {
		if g, err := c.watch.Generation(); err == nil {
			if v := c.verified.Load(); v != nil && v.gen == g && time.Since(v.at) < watchRecheck {
				return v.snap, v.snap.err
			}
			gen, watched = g, true
		}
	}
	statted := time.Now()
	s, err := c.statted()
	if watched && s != nil && s.id != (atomicfile.Version{}) {
		c.verified.Store(&verifiedSnapshot{snap: s, gen: gen, at: statted})
	}
	return s, err
}

// statted is current without the watch: one stat of the log and one of
// the store, and a reload when either changed.
func (c *RevocationChecker) statted() (*revocationSnapshot, error) {
	c.stats.Add(1)
	logPath := c.logPath
	// The log is looked at before the store, for the reason readRevoked
	// reads it first: a fold writes the store, then empties the log.
	lid, lerr := atomicfile.VersionOf(logPath)
	if lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %v", ErrRevocationUnavailable, lerr)
	}
	id, err := atomicfile.VersionOf(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return c.whenMissing(lid)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)
	}
	if s := c.snap.Load(); s != nil && s.id == id && s.logID == lid {
		return s, s.err
	}
	c.reload.Lock()
	defer c.reload.Unlock()
	if s := c.snap.Load(); s != nil && s.id == id && s.logID == lid {
		return s, s.err
	}
	var s *revocationSnapshot
	if prev := c.snap.Load(); prev != nil && prev.err == nil && prev.id == id && lerr == nil && c.log.same(logPath) {
		s = c.readLogOn(prev, lid)
	} else {
		s = c.loadAll(id, lid, lerr == nil)
	}
	c.loads.Add(1)
	if len(s.serials)+len(s.logged) > 0 {
		c.held.Store(true)
	}
	c.snap.Store(s)
	return s, s.err
}

// same reports whether the open log is still the file at path.
func (l *logReader) same(path string) bool {
	if l.f == nil {
		return false
	}
	a, err1 := l.f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// readLogOn is a reload when only the log grew: the new complete lines are
// read from where the last read stopped.
func (c *RevocationChecker) readLogOn(prev *revocationSnapshot, lid atomicfile.Version) *revocationSnapshot {
	s := &revocationSnapshot{id: prev.id, logID: lid, serials: prev.serials, logged: maps.Clone(prev.logged)}
	if s.logged == nil {
		s.logged = map[string]struct{}{}
	}
	if err := c.log.readOn(c.logPath, s.logged); err != nil {
		return &revocationSnapshot{id: prev.id, logID: lid, err: fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)}
	}
	return s
}

// readOn adds the serials of the log's complete lines after l.off.
func (l *logReader) readOn(path string, into map[string]struct{}) error {
	fi, err := l.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() <= l.off {
		return nil
	}
	data := make([]byte, fi.Size()-l.off)
	n, err := l.f.ReadAt(data, l.off)
	if err != nil && n < len(data) && !errors.Is(err, io.EOF) {
		return err
	}
	var buf [20]byte
	var used int64
	err = parseLogLines(path, data[:n], l.off, func(e logEntry) {
		b, _ := canonicalSerialBytes(e.Serial, buf[:0]) // parseLogLines checked it
		into[string(b)] = struct{}{}
	}, &used)
	l.off += used
	return err
}

// loadAll reads the log, from its start, and then the store.
func (c *RevocationChecker) loadAll(id, lid atomicfile.Version, logExists bool) *revocationSnapshot {
	if c.log.f != nil {
		c.log.f.Close()
		c.log = logReader{}
	}
	logPath := c.logPath
	fail := func(err error) *revocationSnapshot {
		return &revocationSnapshot{id: id, logID: lid, err: fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)}
	}
	logged := map[string]struct{}{}
	if logExists {
		if fi, err := os.Lstat(logPath); err != nil || !fi.Mode().IsRegular() {
			return fail(fmt.Errorf("%s is not a regular file", logPath))
		}
		f, err := os.Open(logPath)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
		if err == nil {
			c.log = logReader{f: f}
			if err := c.log.readOn(c.logPath, logged); err != nil {
				return fail(err)
			}
		}
	}
	serials, hasLog, err := loadSerials(c.path)
	if err != nil {
		return fail(err)
	}
	if hasLog && c.log.f == nil {
		return fail(fmt.Errorf("%s is missing, but %s says it keeps one; restore both from a backup", logPath, filepath.Base(c.path)))
	}
	return &revocationSnapshot{id: id, logID: lid, serials: serials, logged: logged}
}

// whenMissing judges a missing store (issue 10 item 4): an empty set where
// checkMissingStore allows one, else ErrRevocationUnavailable naming the
// file and saying why.
func (c *RevocationChecker) whenMissing(lid atomicfile.Version) (*revocationSnapshot, error) {
	if c.held.Load() {
		err := fmt.Errorf("%w: %s is missing, but it held revocations when last read; restore it from a backup", ErrRevocationUnavailable, c.path)
		return nil, err
	}
	// The verdict stands while neither the inventory nor the log changed
	// (lid: the log's version statted just before, zero when it is
	// missing), so a handshake reads neither file again.
	dir := filepath.Dir(c.path)
	inv, invErr := atomicfile.VersionOf(filepath.Join(dir, IssuedFile))
	if v := c.missing.Load(); invErr == nil && v != nil && v.inv == inv && v.log == lid {
		return v.snap, v.snap.err
	}
	if lg, err := readRevLog(c.logPath); err != nil || len(lg.entries) > 0 {
		return nil, fmt.Errorf("%w: %s is missing, but its log %s holds revocations or cannot be read (%v); restore it from a backup",
			ErrRevocationUnavailable, c.path, RevokedLogFile, err)
	}
	s := &revocationSnapshot{serials: map[string]struct{}{}}
	if err := checkMissingStore(dir); err != nil {
		s.err = fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)
	}
	if invErr == nil {
		c.missing.Store(&missingVerdict{inv: inv, log: lid, snap: s})
	}
	return s, s.err
}

// loadSerials reads only what a handshake needs from the store: the serials,
// as big-endian bytes. Handshakes wait for a reload, so it skips everything
// else (times, names, big.Int): 100,000 entries load in a fraction of the
// time the full records take. It is as strict about serials as the store.
func loadSerials(path string) (_ map[string]struct{}, hasLog bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	var rf struct {
		Version int  `json:"version"`
		Log     bool `json:"log"`
		Revoked []struct {
			Serial string `json:"serial"`
		} `json:"revoked"`
	}
	if err := decodeJSON(path, data, &rf); err != nil {
		return nil, false, err
	}
	if !knownRevokedVersion(rf.Version) || rf.Version == revokedVersionLog && !rf.Log {
		return nil, false, fmt.Errorf("%w: %s: unsupported version %d", ErrCorruptState, path, rf.Version)
	}
	serials := make(map[string]struct{}, len(rf.Revoked))
	var buf [20]byte
	for i, r := range rf.Revoked {
		b, ok := canonicalSerialBytes(r.Serial, buf[:0])
		if !ok {
			return nil, false, fmt.Errorf("%w: %s: entry %d has a malformed serial %q", ErrCorruptState, path, i, r.Serial)
		}
		serials[string(b)] = struct{}{}
	}
	return serials, rf.Log, nil
}

// canonicalSerialBytes decodes a serial in canonical form (lowercase hex, no
// leading zero, at most 20 octets) into its minimal big-endian bytes,
// appended to dst; ok is false for anything else.
func canonicalSerialBytes(s string, dst []byte) ([]byte, bool) {
	if len(s) == 0 || len(s) > 40 || s[0] == '0' {
		return nil, false
	}
	nib := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'a' <= c && c <= 'f':
			return c - 'a' + 10, true
		}
		return 0, false
	}
	i := 0
	if len(s)%2 == 1 {
		lo, ok := nib(s[0])
		if !ok {
			return nil, false
		}
		dst = append(dst, lo)
		i = 1
	}
	for ; i < len(s); i += 2 {
		hi, ok1 := nib(s[i])
		lo, ok2 := nib(s[i+1])
		if !ok1 || !ok2 {
			return nil, false
		}
		dst = append(dst, hi<<4|lo)
	}
	return dst, true
}

// watchEvery is how often Watch looks at the store and its log where
// there is no directory watch: one stat of each, so a revocation by
// another process (the CLI) reaches live sessions within about this, not
// the gateway's poll (issue 16).
const watchEvery = 10 * time.Millisecond

// Watch delivers on the returned channel (capacity 1, never closed) when
// the store or its log changed since it last looked, until ctx ends: the
// gateway re-judges live connections then instead of at its next poll.
// With a directory watch it sleeps until the kernel reports a change in
// the state directory (issue 16 item 1: the 10 ms stat poll it replaces
// cost an idle gateway 2.7% of a core), re-statting at least every
// watchRecheck for what the watch cannot see; without one, or once the
// watch fails, it stats every watchEvery.
func (c *RevocationChecker) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	logPath := c.logPath
	look := func() [2]atomicfile.Version {
		c.stats.Add(1)
		s, _ := atomicfile.VersionOf(c.path)
		l, _ := atomicfile.VersionOf(logPath)
		return [2]atomicfile.Version{s, l}
	}
	var view *atomicfile.View
	if c.watch != nil {
		view = c.watch.View() // before the first look: no change after it is missed
	}
	go func() {
		var tick <-chan time.Time // the stat poll, once there is no watch
		last := look()
		for {
			if view != nil {
				wctx, cancel := context.WithTimeout(ctx, watchRecheck)
				err := view.Wait(wctx)
				cancel()
				switch {
				case ctx.Err() != nil:
					return
				case err == nil:
					view.Changed()
				case !errors.Is(err, context.DeadlineExceeded):
					view = nil // the watch failed: poll from now on
				}
			} else {
				if tick == nil {
					t := time.NewTicker(watchEvery)
					defer t.Stop()
					tick = t.C
				}
				select {
				case <-ctx.Done():
					return
				case <-tick:
				}
			}
			if v := look(); v != last {
				last = v
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	return ch
}
