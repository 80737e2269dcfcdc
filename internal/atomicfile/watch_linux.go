package atomicfile

import (
	"errors"
	"fmt"
	"os"
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
	// A non-blocking descriptor given to os.NewFile is registered with
	// the netpoller. Fd() is never called on f: it would make the
	// descriptor blocking.
	return &watcher{fd: &fdBox{fd: fd, f: os.NewFile(uintptr(fd), "inotify")}}, nil
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
