package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's target nefia runs with unless
// the user sets GOGC: 200 rather than Go's 100. A gateway's live heap is
// small (a few MiB), so doubling the headroom costs little memory and
// halves how often the collector runs on the request path (issue 16: GC
// was ≈12 µs of a ≈147 µs audited status call at 100).
const defaultGCPercent = 200

// setGCPercent applies defaultGCPercent when GOGC is not set in the
// environment; a user's GOGC (off included) is left as the runtime read it.
func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
