package server

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// Limits on how fast refused connections reach the audit trail (issue 10
// item 11: 3,000 bare TCP connects in 0.23 s wrote 3,000 records). Anyone
// who can reach the port can be refused, certificate or not, so these bound
// the trail's growth from peers the gateway knows nothing about: at most
// refusalGlobalRate records a second in the long run (after a burst of
// refusalGlobalBurst), plus at most refusalMaxSummaries+1 summary records a
// refusalWindow. Refusals of certificates that did verify (revoked, over
// their connection limit, ...) are limited per serial instead, with buckets
// of their own, so a flood without certificates cannot crowd them out; the
// CA issued those, so there are only so many.
const (
	refusalAddrBurst    = 10                // records per address (per serial) at once
	refusalAddrRate     = 1.0               // records per address (per serial) per second, after the burst
	refusalGlobalBurst  = 50                // records at once, all addresses together
	refusalGlobalRate   = 2.0               // records per second, all addresses together
	refusalDistinct     = 8                 // distinct refusals per address per window that skip its bucket
	refusalWindow       = time.Minute       // how often suppressed refusals are summarized
	refusalMaxAddrs     = 1024              // addresses tracked per window; the rest share one entry
	refusalMaxSummaries = 16                // summary records per window; the rest are summed in one more
	refusalOthers       = "other addresses" // the shared entry's name
)

// refusalLimiter decides which refused connections get a record of their
// own. Per remote IP (not ip:port: a peer picks its ports freely) it keeps a
// token bucket, and the first refusal of each distinct kind (reason and
// presented serial) in a window is recorded even when the bucket is empty,
// so that a flood of bare connects cannot hide a revoked certificate's
// attempt behind it. A global bucket bounds all of it together. What is not
// recorded is counted and summarized when the window ends. Memory is
// bounded: at most refusalMaxAddrs addresses are tracked, and the state
// starts over every window.
type refusalLimiter struct {
	mu       sync.Mutex
	now      func() time.Time
	start    time.Time // of the current window
	global   bucket    // refusals without a verified certificate
	verified bucket    // refusals of verified certificates
	addrs    map[string]*addrState
}

type addrState struct {
	addr, serial string // serial: a verified certificate's
	bucket       bucket
	seen         map[string]bool // distinct refusals recorded this window
	suppressed   map[string]int  // reason -> count not recorded
}

// bucket is a token bucket; the zero value starts full on first use.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, burst, rate float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newRefusalLimiter(now func() time.Time) *refusalLimiter {
	return &refusalLimiter{now: now, start: now(), addrs: map[string]*addrState{}}
}

// suppressedCount is one address's (or verified serial's) share of a
// window's summary.
type suppressedCount struct {
	addr, serial string
	total        int
	byReason     map[string]int
}

// allow reports whether this refusal gets its own record: serial is the
// presented certificate's, verified whether its chain verified. When a
// window has ended, it also returns that window's suppressed counts for the
// caller to write (outside the lock).
func (l *refusalLimiter) allow(remote, reason, serial string, verified bool) (ok bool, ended []suppressedCount) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	key, global := host, &l.global
	if verified {
		key, global = "serial "+serial, &l.verified
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.start) >= refusalWindow {
		ended = l.resetLocked(now)
	}
	st := l.addrs[key]
	if st == nil {
		if len(l.addrs) >= refusalMaxAddrs {
			key, host = refusalOthers, refusalOthers
			st = l.addrs[key]
		}
		if st == nil {
			st = &addrState{addr: host, seen: map[string]bool{}, suppressed: map[string]int{}}
			if verified && key != refusalOthers {
				st.serial = serial
			}
			l.addrs[key] = st
		}
	}
	kind := reason + "\x00" + serial
	first := !st.seen[kind] && len(st.seen) < refusalDistinct
	// A verified certificate's first refusal of a kind skips the shared
	// bucket: other certificates' refused requests must not crowd a revoked
	// one's attempt out (review of issue 10). There are at most
	// refusalDistinct such per serial a window, and only our CA issues
	// serials that verify.
	if (first || st.bucket.take(now, refusalAddrBurst, refusalAddrRate)) && ((first && verified) || global.take(now, refusalGlobalBurst, refusalGlobalRate)) {
		st.seen[kind] = true
		return true, ended
	}
	st.suppressed[reason]++
	return false, ended
}

// flush ends the current window now and returns what it suppressed.
func (l *refusalLimiter) flush() []suppressedCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resetLocked(l.now())
}

// resetLocked starts a new window and returns the old one's suppressed
// counts: the refusalMaxSummaries addresses with the most, then the rest
// summed under refusalOthers.
func (l *refusalLimiter) resetLocked(now time.Time) []suppressedCount {
	var out []suppressedCount
	for _, st := range l.addrs {
		if c, ok := suppressedOf(st.addr, st.serial, st.suppressed); ok {
			out = append(out, c)
		}
	}
	l.start, l.addrs = now, map[string]*addrState{}
	return foldSummaries(out, refusalMaxSummaries, refusalOthers)
}

// suppressedOf is one key's counts for a window summary (addr names the
// key: an address, or a certificate's name); ok is false when nothing was
// suppressed.
func suppressedOf(addr, serial string, byReason map[string]int) (c suppressedCount, ok bool) {
	if len(byReason) == 0 {
		return c, false
	}
	c = suppressedCount{addr: addr, serial: serial, byReason: byReason}
	for _, n := range byReason {
		c.total += n
	}
	return c, true
}

// foldSummaries orders a window's suppressed counts, most first, and sums
// those past max into one more entry named others, so a window writes at
// most max+1 summary records however many peers it saw.
func foldSummaries(out []suppressedCount, max int, others string) []suppressedCount {
	slices.SortFunc(out, func(a, b suppressedCount) int {
		return cmp.Or(cmp.Compare(b.total, a.total), cmp.Compare(a.addr, b.addr), cmp.Compare(a.serial, b.serial))
	})
	if len(out) <= max {
		return out
	}
	rest := suppressedCount{addr: others, byReason: map[string]int{}}
	for _, c := range out[max:] {
		rest.total += c.total
		for r, n := range c.byReason {
			rest.byReason[r] += n
		}
	}
	return append(out[:max], rest)
}

func (c suppressedCount) reason() string {
	if c.serial != "" {
		return fmt.Sprintf("%d refused connections of certificate %s (last from %s) not recorded one by one (rate limit)", c.total, c.serial, c.addr)
	}
	return fmt.Sprintf("%d refused connections from %s not recorded one by one (rate limit)", c.total, c.addr)
}
