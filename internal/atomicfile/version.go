package atomicfile

import (
	"os"
	"syscall"
)

// Version identifies one version of a file cheaply, without reading it:
// device, inode, size, modification and change time. WriteFile replaces a
// file by rename, so every write it makes shows as a new inode; the times and
// size catch editors that write in place.
type Version struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// VersionOf stats path (following symlinks) and returns its Version. It makes
// one system call and no allocation beyond the path's conversion, so it is
// cheap enough to call on every TLS handshake.
func VersionOf(path string) (Version, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return Version{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return Version{
		dev:   uint64(st.Dev), //nolint:unconvert // Dev is not uint64 on every platform.
		ino:   st.Ino,
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
	}, nil
}
