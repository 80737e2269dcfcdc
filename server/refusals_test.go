package server

import (
	"fmt"
	"testing"
	"time"
)

// TestRefusalLimiter drives the limiter with a fake clock: per-address
// burst and rate, the distinct-refusal exemption, the global cap, the
// bounded address map, and a summary that accounts for every refusal.
func TestRefusalLimiter(t *testing.T) {
	t.Parallel()
	type step struct {
		remote, reason, serial string
		verified               bool
		n                      int
		advance                time.Duration
	}
	tests := []struct {
		name        string
		steps       []step
		wantAllowed int
	}{
		{"one address, one kind: burst then rate", []step{
			{remote: "10.0.0.1:1", reason: ReasonOther, n: 100},
			{advance: 5 * time.Second},
			{remote: "10.0.0.1:2", reason: ReasonOther, n: 100},
		}, refusalAddrBurst + 1 + 5}, // the burst, the first of its kind, 5 s of refill
		{"ports do not matter", []step{
			{remote: "10.0.0.1:1", reason: ReasonOther, n: 50},
			{remote: "10.0.0.1:9", reason: ReasonOther, n: 50},
		}, refusalAddrBurst + 1},
		{"a distinct refusal gets through an empty bucket", []step{
			{remote: "10.0.0.1:1", reason: ReasonOther, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonRevoked, serial: "ab", n: 1},
			{remote: "10.0.0.1:1", reason: ReasonRevoked, serial: "ab", n: 1},
		}, refusalAddrBurst + 2},
		{"distinct kinds are bounded per address", []step{
			{remote: "10.0.0.1:1", reason: ReasonUnknownCA, n: 1000}, // serials vary below
		}, refusalDistinct + refusalAddrBurst},
		{"verified refusals are limited per serial, apart", []step{
			{remote: "10.0.0.1:1", reason: ReasonOther, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonRevoked, serial: "ab", verified: true, n: 100},
			{remote: "10.0.0.2:1", reason: ReasonRevoked, serial: "ab", verified: true, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonRevoked, serial: "cd", verified: true, n: 1},
		}, refusalAddrBurst + 1 + refusalAddrBurst + 1 + 1},
		{"other certificates cannot crowd out a revoked one's first refusal", []step{
			{remote: "10.0.0.1:1", reason: ReasonOrigin, serial: "a1", verified: true, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonOrigin, serial: "a2", verified: true, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonOrigin, serial: "a3", verified: true, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonOrigin, serial: "a4", verified: true, n: 100},
			{remote: "10.0.0.1:1", reason: ReasonOrigin, serial: "a5", verified: true, n: 100},
			{remote: "10.0.0.9:1", reason: ReasonRevoked, serial: "ee", verified: true, n: 1},
		}, refusalGlobalBurst + 5 + 1}, // the shared burst, each serial's first, and the revoked one
		{"many addresses: the global cap", []step{
			{remote: "*", reason: ReasonOther, n: 3000},
		}, refusalGlobalBurst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1e9, 0)
			l := newRefusalLimiter(func() time.Time { return now })
			allowed, total := 0, 0
			for _, s := range tt.steps {
				now = now.Add(s.advance)
				for i := range s.n {
					remote, serial := s.remote, s.serial
					if remote == "*" {
						remote = fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)
					}
					if s.reason == ReasonUnknownCA {
						serial = fmt.Sprint(i)
					}
					if ok, ended := l.allow(remote, s.reason, serial, s.verified); ok {
						allowed++
					} else if ended != nil {
						t.Fatal("a window ended without the clock moving a minute")
					}
					total++
				}
			}
			if allowed != tt.wantAllowed {
				t.Errorf("%d of %d recorded, want %d", allowed, total, tt.wantAllowed)
			}
			sum := l.flush()
			suppressed := 0
			for _, c := range sum {
				suppressed += c.total
			}
			if allowed+suppressed != total || len(sum) > refusalMaxSummaries+1 {
				t.Errorf("summary: %d suppressed in %d records; %d recorded of %d", suppressed, len(sum), allowed, total)
			}
			if len(l.addrs) != 0 {
				t.Error("flush did not start a new window")
			}
		})
	}
}

// TestRefusalLimiterWindow: a refusal after the window has ended gets the
// ended window's summary to write, and fresh limits.
func TestRefusalLimiterWindow(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	l := newRefusalLimiter(func() time.Time { return now })
	for range 30 {
		l.allow("10.0.0.1:1", ReasonOther, "", false)
	}
	now = now.Add(refusalWindow)
	ok, ended := l.allow("10.0.0.1:1", ReasonOther, "", false)
	if !ok || len(ended) != 1 || ended[0].total != 30-refusalAddrBurst-1 || ended[0].byReason[ReasonOther] != ended[0].total || ended[0].addr != "10.0.0.1" {
		t.Errorf("after the window: ok %v, ended %+v", ok, ended)
	}
}
