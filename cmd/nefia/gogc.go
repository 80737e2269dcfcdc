package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's target nefia runs with unless
// the user sets GOGC: 400 rather than Go's 100. A gateway's live heap is
// small (≈3 MiB at the default 50 connections), so the headroom costs
// little memory (a heap of up to 5× the live one, ≈15 MiB) and the
// collector runs a quarter as often on the request path. Issue 16: GC was
// ≈12 µs of a ≈147 µs audited status call at 100; at 10,000 status calls/s
// and 200 it still ran every ≈110 ms with a 3–5 ms mark phase, and 400
// cut the open loop's p99 by about a fifth (5.9 → 4.6 ms, median of 6
// alternated rounds) and the closed loop's CPU per call by a tenth. A
// gateway with many thousand sessions has a live heap to match: set GOGC
// (or GOMEMLIMIT) there.
const defaultGCPercent = 400

// setGCPercent applies defaultGCPercent when GOGC is not set in the
// environment; a user's GOGC (off included) is left as the runtime read it.
func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
