package audit

import (
	"os"

	"golang.org/x/sys/unix"
)

// flock takes an exclusive lock on f's open file description, so it excludes
// other processes and other descriptors of this one; it is released if the
// process dies.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

func funlock(f *os.File) { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }
