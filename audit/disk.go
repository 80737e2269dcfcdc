package audit

import "fmt"

// DiskWarnPercent is the use of the trail's file system above which status
// reports a problem: a full disk refuses every state change (no audit, no
// action), so the operator should hear of it before.
const DiskWarnPercent = 90

// DiskProblem returns a warning when the file system holding the audit
// directory dir is more than DiskWarnPercent used, and "" otherwise or when
// it cannot tell (other platforms, an unreadable directory). The text names
// no path: agents may read it through the status tool.
func DiskProblem(dir string) string {
	used, ok := diskUsedPercent(dir)
	if !ok || used <= DiskWarnPercent {
		return ""
	}
	return fmt.Sprintf("the audit trail's file system is %d%% full: when it is full, every state change is refused until space is freed (rotated files can be limited with audit.max_files)", used)
}
