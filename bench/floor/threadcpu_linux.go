package floor

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ThreadCPU returns the CPU time (user plus system) the calling OS thread
// has used; lock the goroutine to its thread around two calls.
func ThreadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, fmt.Errorf("floor: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
