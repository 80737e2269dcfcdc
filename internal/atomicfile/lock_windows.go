package atomicfile

import (
	"os"

	"golang.org/x/sys/windows"
)

// lockRange is the byte range locked: any fixed range serves, since every
// nefia process locks the same one.
const lockRange = 1

// LockFile takes an exclusive lock on f, blocking until it is free.
// LockFileEx locks are owned by the handle and released by Windows when the
// process dies, as flock(2) locks are on Unix.
func LockFile(f *os.File) error {
	ol := new(windows.Overlapped)
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, lockRange, 0, ol)
}

// UnlockFile releases LockFile's lock; closing f releases it too.
func UnlockFile(f *os.File) {
	ol := new(windows.Overlapped)
	_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, lockRange, 0, ol)
}

// LockFileShared takes a shared lock on f, blocking while another handle
// holds LockFile's exclusive lock (see the Unix version).
func LockFileShared(f *os.File) error {
	ol := new(windows.Overlapped)
	return windows.LockFileEx(windows.Handle(f.Fd()), 0, 0, lockRange, 0, ol)
}
