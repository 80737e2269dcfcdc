//go:build unix

package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// versionOf uses x/sys/unix rather than syscall: its Stat_t names the times
// Mtim and Ctim on Linux, macOS and the BSDs alike.
func versionOf(path string) (Version, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Version{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return Version{
		dev:   uint64(st.Dev), //nolint:unconvert // Dev is not uint64 on every platform.
		ino:   uint64(st.Ino), //nolint:unconvert // nor is Ino.
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
	}, nil
}
