package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// ErrWatchUnsupported is returned by NewWatch where the platform has no
// cheap change notification nefia uses (anything but Linux): callers stat
// their files instead, as before.
var ErrWatchUnsupported = errors.New("file watch not supported on this platform")

// Watch tells whether any of a set of files may have changed since the last
// call of Changed, for one system call however many files there are (issue
// 16: the status tool and the certificate reloaders statted up to eight
// files per call or handshake). It watches the directories holding the
// files (inotify on Linux): a write in place, a replacement by rename
// (WriteFile), a removal or a new file, by this or any other process, is
// queued by the kernel in the system call that makes it, so Changed, which
// reads the queue without blocking, is exact rather than eventually right.
//
// Changed may report a change that did not touch the files (another file
// in the same directory); callers then compare Versions as they would
// without a watch. A Watch that fails (queue overflow, a watched directory
// removed or moved) reports a change and an error once, and callers fall
// back to statting.
//
// What a Watch cannot see is a change above the watched directories (a
// parent directory renamed) and a symlink re-pointed: NewWatch refuses
// files or directories that are symlinks, and callers keep a bound on how
// long they trust a result anyway.
type Watch struct {
	mu     sync.Mutex
	w      *watcher
	broken bool
}

// NewWatch watches the directories of paths. Every path must be a regular
// file or a directory that is not a symlink, or not exist yet (its
// directory must); a directory among paths is watched itself too.
func NewWatch(paths ...string) (*Watch, error) {
	var dirs []string
	for _, p := range paths {
		p = filepath.Clean(p)
		dir := filepath.Dir(p)
		if err := notSymlink(dir, false); err != nil {
			return nil, err
		}
		if err := notSymlink(p, true); err != nil {
			return nil, err
		}
		dirs = append(dirs, dir)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			dirs = append(dirs, p)
		}
	}
	w, err := newWatcher(dirs)
	if err != nil {
		return nil, err
	}
	// The descriptor goes with the Watch: callers that forget Close (a
	// toolset dropped by a test) must not exhaust the per-user inotify
	// instances.
	runtime.AddCleanup(w, func(c func()) { c() }, w.closer())
	return &Watch{w: w}, nil
}

// Changed reports whether a watched directory saw any change since the
// previous call (true on the first call is not promised: a Watch starts
// empty). It never blocks. After an error, every later call returns true
// and the same kind of error: the caller must stat from then on.
func (w *Watch) Changed() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return true, errWatchBroken
	}
	changed, err := w.w.drain()
	if err != nil {
		w.broken = true
		return true, err
	}
	return changed, nil
}

var errWatchBroken = errors.New("watch: no longer reliable")

// notSymlink fails for a symlink, and for a path that cannot be read
// (unless it may be missing and is).
func notSymlink(p string, mayBeMissing bool) error {
	fi, err := os.Lstat(p)
	switch {
	case mayBeMissing && errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&os.ModeSymlink != 0:
		return errors.New("watch: " + p + " is a symlink")
	}
	return nil
}
