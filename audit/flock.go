package audit

import (
	"os"

	"github.com/nefia/nefia/internal/atomicfile"
)

// flock takes an exclusive lock on f's open file description, so it excludes
// other processes and other descriptors of this one; it is released if the
// process dies. It is atomicfile's primitive, so the trail and the state
// files share one portable locking implementation.
func flock(f *os.File) error { return atomicfile.LockFile(f) }

func funlock(f *os.File) { atomicfile.UnlockFile(f) }
