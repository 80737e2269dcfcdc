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
// removed or moved) or is closed reports a change and an error from then
// on, and callers fall back to statting.
//
// What a Watch cannot see is a change above the watched directories (a
// parent directory renamed) and a symlink re-pointed: NewWatch refuses
// files and directories that are symlinks, and callers still stat now and
// then (at least once a second) to bound how long such a change goes
// unseen.
type Watch struct {
	mu     sync.Mutex
	w      *watcher
	gen    uint64 // counts the reads that found events
	broken error  // set once the watch failed or was closed
	own    View   // the view Changed reports through
}

// View is one consumer's look at a Watch: several consumers of the same
// files (the CA and server certificate reloaders) share one Watch, and one
// inotify instance, each learning of every change through its own View. A
// View is not safe for concurrent use; a Watch is.
type View struct {
	w    *Watch
	seen uint64
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
	runtime.AddCleanup(w, func(b *fdBox) { b.close() }, w.fd)
	watch := &Watch{w: w}
	watch.own = View{w: watch}
	return watch, nil
}

// View returns a new consumer's view, which reports changes made from now
// on.
func (w *Watch) View() *View {
	w.mu.Lock()
	defer w.mu.Unlock()
	return &View{w: w, seen: w.gen}
}

// Changed reports whether a watched directory saw any change since the
// previous call of Changed (through the Watch's own view). It never
// blocks. After an error, every later call returns true and an error: the
// caller must stat from then on.
func (w *Watch) Changed() (bool, error) { return w.own.Changed() }

// Changed reports whether a watched directory saw any change since this
// view's previous call, as Watch.Changed does.
func (v *View) Changed() (bool, error) {
	gen, err := v.w.poll()
	if err != nil {
		return true, err
	}
	changed := gen != v.seen
	v.seen = gen
	return changed, nil
}

// poll reads the queued events and returns the generation.
func (w *Watch) poll() (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.gen, w.broken
	}
	changed, err := w.w.drain()
	if err != nil {
		w.broken = err
		return w.gen, err
	}
	if changed {
		w.gen++
	}
	return w.gen, nil
}

// Close releases the watch (its inotify instance) now rather than when the
// Watch is garbage collected; views report an error from then on.
func (w *Watch) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken == errWatchClosed {
		return nil
	}
	w.broken = errWatchClosed
	return w.w.close()
}

var errWatchClosed = errors.New("watch: closed")

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
