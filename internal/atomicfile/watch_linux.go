package atomicfile

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watcher is one inotify instance, non-blocking, read only by Changed.
type watcher struct {
	fd  *fdBox
	buf [4096]byte
}

func newWatcher(dirs []string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch: inotify: %w", err)
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if _, err := unix.InotifyAddWatch(fd, d, watchMask); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return &watcher{fd: &fdBox{fd: fd}}, nil
}

// close closes the descriptor once.
func (w *watcher) close() error { return w.fd.close() }

// drain reads every queued event; any event is a change. Events that make
// the watch unreliable (overflow, a watched directory gone) are errors.
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
		changed = true
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			if ev.Mask&(unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
				return true, fmt.Errorf("watch: event %#x: a watched directory went away or events were lost", ev.Mask)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// fdBox holds the descriptor apart from the watcher, so that the cleanup
// NewWatch registers can close it without keeping the watcher alive, and
// never closes it twice (after Close, the number may belong to another
// file).
type fdBox struct{ fd int }

func (b *fdBox) close() error {
	if b.fd < 0 {
		return nil
	}
	err := unix.Close(b.fd)
	b.fd = -1
	return err
}
