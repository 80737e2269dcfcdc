package atomicfile

import (
	"context"
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
// A change above the watched directories that puts another directory
// behind their path (a parent renamed away and another renamed in, a
// symlinked parent re-pointed) raises no event in them: every ancestor is
// watched too, for the entry that leads on, and such a change breaks the
// Watch (attack review 3). NewWatch refuses files and directories that are
// symlinks themselves. What inotify cannot see at all (a change made on a
// network file system by another host, a file bind-mounted over) is why
// callers still stat now and then (at least once a second).
//
// Wait blocks until a change instead of polling Changed: the goroutine that
// reads the kernel's queue for waiters is parked in Go's netpoller, so an
// idle watch costs no CPU (issue 16: the revocation watch's 10 ms stat poll
// cost an idle gateway 2.7% of a core).
type Watch struct {
	mu     sync.Mutex
	w      *watcher
	gen    uint64 // counts the reads that found events
	broken error  // set once the watch failed or was closed
	own    View   // the view Changed reports through
	// bell is closed, and replaced, whenever gen grows or the watch
	// breaks: Wait's way to learn of it.
	bell    chan struct{}
	waiters int  // goroutines in Wait
	reading bool // the reader goroutine (see read) runs
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
	watch := &Watch{w: w, bell: make(chan struct{})}
	watch.own = View{w: watch}
	return watch, nil
}

// View returns a new consumer's view, which reports changes made from now
// on (not those made before, even if nobody has read them yet).
func (w *Watch) View() *View {
	// Events the kernel queued before the call are read first: they are
	// not this view's to report.
	gen, _ := w.poll()
	return &View{w: w, seen: gen}
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

// Generation returns a number that grows whenever a watched directory saw
// a change, reading the kernel's queue first (one non-blocking read, no
// stat): callers that stat their files only when it moved, and remember it
// with what they statted, are exact (issue 16: a handshake's revocation
// check). After an error the caller must stat from then on.
func (w *Watch) Generation() (uint64, error) { return w.poll() }

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
		w.ring()
		return w.gen, err
	}
	if changed {
		w.gen++
		w.ring()
	}
	return w.gen, nil
}

// ring wakes every Wait; w.mu must be held.
func (w *Watch) ring() {
	close(w.bell)
	w.bell = make(chan struct{})
}

// Wait blocks until a watched directory saw a change that this view's
// Changed has not reported yet, ctx ends (its error is returned) or the
// watch breaks (the error Changed returns from then on). It does not
// consume the change: the caller calls Changed after it.
func (v *View) Wait(ctx context.Context) error {
	w := v.w
	w.mu.Lock()
	if w.broken != nil {
		w.mu.Unlock()
		return w.broken
	}
	w.waiters++
	if !w.reading {
		w.reading = true
		w.w.interrupt(false)
		go w.read()
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.waiters--; w.waiters == 0 && w.reading {
			w.w.interrupt(true) // the reader stops: nobody waits
		}
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		gen, bell, err := w.gen, w.bell, w.broken
		w.mu.Unlock()
		switch {
		case err != nil:
			return err
		case gen != v.seen:
			return nil
		}
		select {
		case <-bell:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read reads the kernel's queue while anybody waits, parked in the
// netpoller between events.
func (w *Watch) read() {
	for {
		err := w.w.await(func() bool {
			before := w.generation()
			gen, err := w.poll()
			return err != nil || gen != before
		})
		w.mu.Lock()
		if w.broken != nil || w.waiters == 0 {
			w.reading = false
			w.mu.Unlock()
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			w.broken = err
			w.ring()
			w.reading = false
			w.mu.Unlock()
			return
		}
		w.w.interrupt(false) // a waiter came back after the last left
		w.mu.Unlock()
	}
}

func (w *Watch) generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// Close releases the watch (its inotify instance) now rather than when the
// Watch is garbage collected; views report an error from then on, and
// Wait returns.
func (w *Watch) Close() error {
	w.mu.Lock()
	if w.broken == errWatchClosed {
		w.mu.Unlock()
		return nil
	}
	w.broken = errWatchClosed
	w.ring()
	w.mu.Unlock()
	// Not under mu: closing waits for the reader, which may be in poll.
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
