package server

import (
	"sync"
	"time"
)

// Limits on how fast one certificate's failed tool calls reach the audit
// trail. A denied or failing call is recorded like any other, but a peer
// can make them as fast as it can write: pipelined denied calls with 15 KB
// of arguments grew the trail by 25 MB/s, and a full audit disk refuses
// every state change, the operator's revocation of that peer included
// (found by the review of issue 10). Successful calls are the trail's
// purpose and are never limited; denied and failed ones are, per serial,
// and what is held back is summarized once a window.
const (
	callBurst        = 20          // failed-call records per serial at once
	callRate         = 2.0         // per second, after the burst
	callWindow       = time.Minute // how often suppressed calls are summarized
	callMaxSerials   = 1024        // serials tracked per window; the rest share one entry
	callMaxSummaries = 16          // summary records per window; the rest are summed in one more
	callOthers       = "other certificates"
)

// callLimiter decides which failed tool calls get a record of their own.
// Memory is bounded: at most callMaxSerials entries, cleared every window.
type callLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	start   time.Time
	serials map[string]*callState
}

type callState struct {
	serial, name string
	bucket       bucket
	suppressed   map[string]int // outcome -> count not recorded
}

func newCallLimiter(now func() time.Time) *callLimiter {
	return &callLimiter{now: now, start: now(), serials: map[string]*callState{}}
}

// allow reports whether a failed call of the certificate serial (name for
// the summary) gets its own record; ended is the previous window's summary
// when one just ended.
func (l *callLimiter) allow(serial, name, outcome string) (ok bool, ended []suppressedCount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.start) >= callWindow {
		ended = l.resetLocked(now)
	}
	key := serial + "\x00" + name
	st := l.serials[key]
	if st == nil {
		if len(l.serials) >= callMaxSerials {
			key, serial, name = callOthers, "", callOthers
			st = l.serials[key]
		}
		if st == nil {
			st = &callState{serial: serial, name: name, suppressed: map[string]int{}}
			l.serials[key] = st
		}
	}
	if st.bucket.take(now, callBurst, callRate) {
		return true, ended
	}
	st.suppressed[outcome]++
	return false, ended
}

// flush ends the window now and returns what it suppressed.
func (l *callLimiter) flush() []suppressedCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resetLocked(l.now())
}

// resetLocked starts a new window and returns the old one's counts, as
// suppressedCount with addr holding the certificate's name and byReason
// the count of each outcome.
func (l *callLimiter) resetLocked(now time.Time) []suppressedCount {
	var out []suppressedCount
	for _, st := range l.serials {
		if c, ok := suppressedOf(st.name, st.serial, st.suppressed); ok {
			out = append(out, c)
		}
	}
	l.start, l.serials = now, map[string]*callState{}
	return foldSummaries(out, callMaxSummaries, callOthers)
}
