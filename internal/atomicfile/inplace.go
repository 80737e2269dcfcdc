package atomicfile

import (
	"fmt"
	"io"
	"os"
)

// A file that is appended to in place (the inventory, issue 16) is not
// replaced in one step the way WriteFile replaces a file: a reader that
// reads while the write is being copied into the page cache can see part
// of it (old closing bytes, then new ones after them), which parses as a
// corrupt file. Its writer holds LockFile's exclusive lock on the
// descriptor it writes through (WriteAtSync), and its readers a shared one
// on theirs (ReadFileShared), so a read sees the file before or after a
// write, never during. A file replaced by WriteFile meanwhile is another
// inode: the reader reads the one it opened, whole.

// ReadFileShared reads path whole under a shared lock (see above).
func ReadFileShared(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := LockFileShared(f); err != nil {
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return io.ReadAll(f)
}

// WriteAtSync writes data at off in the existing file path under an
// exclusive lock (see above) and fsyncs it before the lock is released.
// The caller keeps off+len(data) at or beyond the file's end when the
// write must leave nothing of the old bytes after it: no truncation is
// done.
func WriteAtSync(path string, data []byte, off int64) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
	}()
	if err := LockFile(f); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}
