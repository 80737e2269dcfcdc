//go:build unix

package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// LockFile takes an exclusive lock on f's open file description, blocking
// until it is free. flock(2) excludes other processes and other descriptors
// of this one, and the kernel releases it if the process dies. It is the one
// locking primitive of nefia: Lock builds on it, and the audit trail holds
// one on a descriptor it keeps open.
func LockFile(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

// UnlockFile releases LockFile's lock; closing f releases it too.
func UnlockFile(f *os.File) { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// LockFileShared takes a shared lock on f's open file description,
// blocking while another description holds LockFile's exclusive lock:
// readers of a file written in place (the inventory's appends) hold it so
// that they never read a write half done.
func LockFileShared(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH)
		if err != unix.EINTR {
			return err
		}
	}
}
