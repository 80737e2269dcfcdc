// Package atomicfile writes state files so that a crash or a concurrent
// writer never leaves a reader with a torn or half-written file, and
// serializes read-modify-write cycles between processes with a lock file.
//
// Every nefia state file (CA, keys, inventory, revocation store, config)
// goes through WriteFile; every read-modify-write of one of them holds Lock.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrNotRegular is returned when the target path exists but is not a regular
// file (a directory, a symlink, a device): replacing it could clobber
// something that is not ours, so the write is refused.
var ErrNotRegular = errors.New("atomicfile: target is not a regular file")

// WriteFile replaces path with data in one step: it writes a temporary file in
// the same directory, fsyncs it, sets perm, renames it over path and fsyncs the
// directory so the rename itself survives a power loss. Readers see either the
// old contents or the new, never a mixture.
func WriteFile(path string, data []byte, perm fs.FileMode) (err error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s", ErrNotRegular, path)
	}
	dir := filepath.Dir(path)
	removeStaleTemps(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temp file for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	// Chmod before writing so a secret never sits in a wider-mode file.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmpName, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("atomicfile: rename into %s: %w", path, err)
	}
	return SyncDir(dir)
}

// staleTempAge is how old a leftover temp file must be before WriteFile
// removes it: far longer than any write takes, so a concurrent writer's temp
// file is never touched.
const staleTempAge = time.Minute

// lastSweep is when removeStaleTemps last globbed for each path.
var lastSweep sync.Map

// removeStaleTemps deletes temp files that earlier writes of path left behind
// when their process was killed between create and rename. They may hold a
// private key (0600, but still a copy nobody tracks), so they must not pile up.
//
// It globs the directory at most once a minute per path (issue 16: a
// glob per inventory write cost more than the write at high issuance
// rates); a temp file is only removed once it is a minute old anyway.
func removeStaleTemps(path string) {
	now := time.Now()
	if last, ok := lastSweep.Load(path); ok && now.Sub(last.(time.Time)) < staleTempAge {
		return
	}
	lastSweep.Store(path, now)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+globEscape(filepath.Base(path))+".tmp-*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTempAge {
			_ = os.Remove(m)
		}
	}
}

// globEscape quotes the glob metacharacters a file name may contain.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SyncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync dir %s: %w", dir, err)
	}
	return nil
}

// Lock takes an exclusive advisory lock on lockPath (created 0600 if missing),
// blocking until it is free, and returns the function that releases it. The
// lock is held by the open file description, so it is released if the process
// dies: a crashed writer never wedges the others.
func Lock(lockPath string) (unlock func(), err error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("atomicfile: lock %s: %w", lockPath, err)
	}
	if err := LockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("atomicfile: lock %s: %w", lockPath, err)
	}
	return func() {
		UnlockFile(f)
		f.Close()
	}, nil
}
