package atomicfile

// Version identifies one version of a file cheaply, without reading it:
// device, inode, size, modification and change time. WriteFile replaces a
// file by rename, so every write it makes shows as a new inode; the times and
// size catch editors that write in place. Where a platform has no inode or
// change time (Windows), those stay zero and size and modification time
// (100 ns resolution on NTFS) tell versions apart.
type Version struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// VersionOf stats path (following symlinks) and returns its Version. It makes
// one system call and no allocation beyond the path's conversion, so it is
// cheap enough to call on every TLS handshake.
func VersionOf(path string) (Version, error) { return versionOf(path) }
