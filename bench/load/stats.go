package load

import (
	"slices"
	"sync"
	"time"
)

// Result is what one closed-loop run measured inside its window.
type Result struct {
	Ops     int64
	Errors  int64
	Resumed int64 // handshakes that resumed a session (ticket)
	// Late counts operations of an open loop (RunOpen) that were never
	// sent: the server fell so far behind that their turn came after the
	// run's cut-off.
	Late    int64
	Elapsed time.Duration
	// Latencies of the successful operations, sorted.
	Latencies []time.Duration
	// FirstError is the first failure seen, for the report.
	FirstError string
}

// Rate is operations per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Percentile returns the q-quantile (0..1) of the latencies, nearest rank.
func (r Result) Percentile(q float64) time.Duration {
	return Percentile(r.Latencies, q)
}

// Percentile returns the q-quantile of sorted durations, nearest rank; zero
// for none.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	if i < 1 {
		i = 1
	}
	if i > len(sorted) {
		i = len(sorted)
	}
	return sorted[i-1]
}

// recorder collects per-worker results and merges them.
type recorder struct {
	mu  sync.Mutex
	res Result
}

// worker is one worker's private tally, merged once at the end so the hot
// loop takes no lock.
type worker struct {
	ops, errs, resumed int64
	lat                []time.Duration
	firstErr           string
}

func (w *worker) fail(err error) {
	w.errs++
	if w.firstErr == "" {
		w.firstErr = err.Error()
	}
}

func (r *recorder) merge(w *worker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Ops += w.ops
	r.res.Errors += w.errs
	r.res.Resumed += w.resumed
	r.res.Latencies = append(r.res.Latencies, w.lat...)
	if r.res.FirstError == "" {
		r.res.FirstError = w.firstErr
	}
}

func (r *recorder) result(elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	res.Elapsed = elapsed
	slices.Sort(res.Latencies)
	return res
}
