package server

import (
	"context"
	"net/netip"
	"testing"
)

// v6 returns the /64 key number i of the attacker's 2001:db8:1::/48.
func v6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 0})
}

// TestPendingHandshakesManyAddressesCutALegitimateAddress: an attacker
// with an IPv6 /48 (65,536 /64s) keeps the budget full with one stalled
// handshake per /64. A legitimate address with two handshakes in progress
// (two clients behind one NAT, or one client opening two connections) is
// then the lone heaviest, so the attacker's very next connection cuts a
// legitimate handshake that is milliseconds old, while every stalled
// handshake of the attacker is older and its addresses each hold fewer.
// With the oldest of all cut, the attacker needed the whole budget (512
// connections) within the legitimate handshake's lifetime.
func TestPendingHandshakesManyAddressesCutALegitimateAddress(t *testing.T) {
	t.Parallel()
	const budget = DefaultMaxHandshakes
	p := newPendingHandshakes(budget)
	for i := range budget - 2 {
		p.begin(context.Background(), v6(i)) // stalled, one per /64
	}
	nat := netip.MustParseAddr("192.0.2.10")
	legit1, _ := p.begin(context.Background(), nat)
	legit2, _ := p.begin(context.Background(), nat)
	// One more connection from a fresh /64 of the attacker's /48.
	p.begin(context.Background(), v6(budget))
	checkPending(t, p)
	if legit1.Err() != nil || legit2.Err() != nil {
		t.Fatalf("one attacker connection cut a legitimate handshake (%v, %v) although %d stalled attacker handshakes are older and each of its addresses holds one",
			legit1.Err(), legit2.Err(), budget-2)
	}
}

// BenchmarkPendingHandshakesFullDistinct: begin and end with the budget
// full of handshakes from distinct addresses, so every begin scans them all.
func BenchmarkPendingHandshakesFullDistinct(b *testing.B) {
	p := newPendingHandshakes(DefaultMaxHandshakes)
	for i := range DefaultMaxHandshakes {
		p.begin(context.Background(), v6(i))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, hs := p.begin(context.Background(), v6(DefaultMaxHandshakes+i%60000))
		_ = hs
	}
}

// BenchmarkPendingHandshakesFullOneAddress: one address holds the whole
// budget and its newest handshakes end first (found at the back).
func BenchmarkPendingHandshakesFullOneAddress(b *testing.B) {
	p := newPendingHandshakes(DefaultMaxHandshakes)
	a := v6(1)
	for range DefaultMaxHandshakes {
		p.begin(context.Background(), a)
	}
	b.ResetTimer()
	for b.Loop() {
		_, hs := p.begin(context.Background(), a)
		p.end(hs)
	}
}
