package audit

import "golang.org/x/sys/unix"

// diskUsedPercent reports how full the file system holding dir is, as df
// computes it (space available to unprivileged users counts as free).
func diskUsedPercent(dir string) (int, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Blocks == 0 {
		return 0, false
	}
	used := st.Blocks - st.Bfree
	total := used + st.Bavail
	if total == 0 {
		return 0, false
	}
	return int((used*100 + total - 1) / total), true
}
