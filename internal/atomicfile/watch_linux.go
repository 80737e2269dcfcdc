package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watcher is one inotify instance, non-blocking. Changed reads it with a
// non-blocking read; Wait's reader parks on it in Go's netpoller (the
// descriptor is wrapped by os.NewFile), so waiting costs no CPU.
type watcher struct {
	fd  *fdBox
	buf [4096]byte
	// path maps the watch descriptor of an ancestor of a watched
	// directory to the names in it that lead to one (see ancestors); a
	// descriptor not in it is a watched directory, where any event counts.
	path map[int32][]string
}

// ancestorMask is what an ancestor's watch reports: an entry on the way to
// a watched directory created, removed or renamed (a symlink re-pointed, a
// directory swapped in under the same name), or the ancestor itself gone.
const ancestorMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_MASK_ADD

func newWatcher(dirs []string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch: inotify: %w", err)
	}
	slices.Sort(dirs)
	dirs = slices.Compact(dirs)
	full := map[int32]bool{}
	for _, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, watchMask)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
		full[int32(wd)] = true
	}
	// A watch follows the directory it was given, not its path: a parent
	// renamed away and another renamed in, or a symlink on the way
	// re-pointed, puts another directory behind the path without an
	// event in the watched one (attack review 3). So every ancestor is
	// watched too, for the one name in it that leads on.
	path := map[int32][]string{}
	for _, d := range dirs {
		steps, err := ancestors(d)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		for _, st := range steps {
			wd, err := unix.InotifyAddWatch(fd, st.dir, ancestorMask)
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("watch %s: %w", st.dir, err)
			}
			if !full[int32(wd)] && !slices.Contains(path[int32(wd)], st.name) {
				path[int32(wd)] = append(path[int32(wd)], st.name)
			}
		}
	}
	// A non-blocking descriptor given to os.NewFile is registered with
	// the netpoller. Fd() is never called on f: it would make the
	// descriptor blocking.
	return &watcher{fd: &fdBox{fd: fd, f: os.NewFile(uintptr(fd), "inotify")}, path: path}, nil
}

// close closes the descriptor once.
func (w *watcher) close() error { return w.fd.close() }

// drain reads every queued event; any event in a watched directory is a
// change, an ancestor's only for the name that leads on, and that one is an
// error like every event that makes the watch unreliable (overflow, a
// watched directory gone).
func (w *watcher) drain() (bool, error) {
	changed := false
	for {
		n, err := unix.Read(w.fd.fd, w.buf[:])
		if errors.Is(err, unix.EAGAIN) {
			return changed, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return true, fmt.Errorf("watch: read: %w", err)
		}
		if n <= 0 {
			return true, errors.New("watch: closed")
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			if ev.Mask&(unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
				return true, fmt.Errorf("watch: event %#x: a watched directory or one of its ancestors went away, or events were lost", ev.Mask)
			}
			name := w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			names, ancestor := w.path[ev.Wd]
			switch {
			case !ancestor:
				changed = true
			case slices.Contains(names, string(name)):
				// The way to a watched directory changed: from here on
				// the watch may follow the wrong directory.
				return true, fmt.Errorf("watch: %q, on the way to a watched directory, was replaced", name)
			} // else another entry of an ancestor: not on the way
		}
	}
}

// await parks the calling goroutine until the descriptor is readable and
// ready (called with nothing locked, it drains through poll) reports true,
// the deadline set by interrupt passes, or the file is closed.
func (w *watcher) await(ready func() bool) error {
	rc, err := w.fd.f.SyscallConn()
	if err != nil {
		return err
	}
	// The callback is called first at once, then each time the
	// netpoller says the descriptor became readable; returning false
	// parks again.
	return rc.Read(func(uintptr) bool { return ready() })
}

// interrupt wakes a goroutine parked in await (when stop) or clears that
// wake-up for the next await (when !stop).
func (w *watcher) interrupt(stop bool) {
	var t time.Time
	if stop {
		t = time.Unix(1, 0)
	}
	w.fd.f.SetReadDeadline(t)
}

// fdBox holds the descriptor apart from the watcher, so that the cleanup
// NewWatch registers can close it without keeping the watcher alive, and
// never closes it twice (after Close, the number may belong to another
// file). fd is the same descriptor as f, kept as a number for the
// non-blocking reads of drain.
type fdBox struct {
	fd int
	f  *os.File
}

func (b *fdBox) close() error {
	if b.fd < 0 {
		return nil
	}
	err := b.f.Close()
	b.fd = -1
	return err
}

// step is an ancestor directory of a watched one and the name in it that
// leads there.
type step struct{ dir, name string }

// ancestors lists the steps from the root down to dir (absolute).
func ancestors(dir string) ([]step, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	var steps []step
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return steps, nil
		}
		steps = append(steps, step{dir: parent, name: filepath.Base(dir)})
		dir = parent
	}
}
