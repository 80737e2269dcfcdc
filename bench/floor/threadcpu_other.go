//go:build !linux

package floor

import (
	"errors"
	"time"
)

// ThreadCPU is Linux-only: per-thread CPU time (RUSAGE_THREAD) has no
// portable equivalent, and the benchmarks it serves run on Linux. Elsewhere
// it says so instead of measuring the whole process and calling it a floor.
func ThreadCPU() (time.Duration, error) {
	return 0, errors.New("floor: per-thread CPU time is measured on Linux only")
}
