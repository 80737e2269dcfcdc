package atomicfile

import "os"

// versionOf has no inode or change time on Windows; size and modification
// time are what os.Stat offers without opening the file.
func versionOf(path string) (Version, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Version{}, err
	}
	return Version{size: fi.Size(), mtime: fi.ModTime().UnixNano()}, nil
}
