package server

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// checkPending verifies the invariants of p: every address's queue is
// non-empty, oldest first, and holds only its own pending handshakes;
// their lengths add up to n, which is within the budget.
func checkPending(t *testing.T, p *pendingHandshakes) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := 0
	for a, q := range p.byAddr {
		if len(q) == 0 {
			t.Fatalf("empty queue left for %v", a)
		}
		for i, hs := range q {
			if hs.addr != a || !hs.pending || i > 0 && q[i-1].seq >= hs.seq {
				t.Fatalf("entry %d of %v misfiled, removed or out of order", i, a)
			}
		}
		sum += len(q)
	}
	if sum != p.n || p.n > p.max {
		t.Fatalf("per-address sum %d, n %d, max %d", sum, p.n, p.max)
	}
}

// TestPendingHandshakesStress: concurrent begins and ends (each end twice)
// over a few addresses keep the invariants, and leave nothing behind.
func TestPendingHandshakesStress(t *testing.T) {
	t.Parallel()
	for _, budget := range []int{1, 3, 7, 8, 9, 17, 64} {
		p := newPendingHandshakes(budget)
		addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), {}}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), uint64(budget)))
				var mine []*pendingHandshake
				for range 5000 {
					if len(mine) > 0 && r.IntN(2) == 0 {
						i := r.IntN(len(mine))
						p.end(mine[i])
						p.end(mine[i]) // twice: idempotent
						mine = append(mine[:i], mine[i+1:]...)
						continue
					}
					_, hs := p.begin(context.Background(), addrs[r.IntN(len(addrs))])
					mine = append(mine, hs)
				}
				for _, hs := range mine {
					p.end(hs)
				}
			})
		}
		wg.Wait()
		checkPending(t, p)
		if p.count() != 0 || len(p.byAddr) != 0 {
			t.Fatalf("budget %d: %d pending, %d queues left after every end", budget, p.count(), len(p.byAddr))
		}
	}
}

// TestPendingHandshakesCutTheHeaviest: nothing is cut while the budget has
// room, whatever the address; when it is full, the oldest of the address
// holding the most is, never the lone handshake of another.
func TestPendingHandshakesCutTheHeaviest(t *testing.T) {
	t.Parallel()
	const budget = 16
	p := newPendingHandshakes(budget)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	ctxB, _ := p.begin(context.Background(), b)
	var floodCtx []context.Context
	for range 100 {
		ctx, _ := p.begin(context.Background(), a)
		floodCtx = append(floodCtx, ctx)
		checkPending(t, p)
	}
	if ctxB.Err() != nil {
		t.Fatal("b's lone handshake cut by a's flood")
	}
	for i, ctx := range floodCtx {
		if cut := ctx.Err() != nil; cut != (i < 100-(budget-1)) {
			t.Fatalf("a's handshake %d: cut %v; want the oldest %d cut", i, cut, 100-(budget-1))
		}
	}
	// Equal holdings: the one whose oldest came first is cut.
	p = newPendingHandshakes(2)
	first, _ := p.begin(context.Background(), a)
	second, _ := p.begin(context.Background(), b)
	p.begin(context.Background(), netip.MustParseAddr("10.0.0.3"))
	if first.Err() == nil || second.Err() != nil {
		t.Fatalf("with a tie, cut %v and %v; want the older only", first.Err(), second.Err())
	}
}

func TestAddrKey(t *testing.T) {
	t.Parallel()
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1} }
	same := [][2]string{
		{"192.0.2.1", "::ffff:192.0.2.1"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
	}
	for _, s := range same {
		if addrKey(tcp(s[0])) != addrKey(tcp(s[1])) {
			t.Errorf("%s and %s keyed apart", s[0], s[1])
		}
	}
	z1 := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}
	z2 := &net.TCPAddr{IP: net.ParseIP("fe80::2"), Zone: "eth1"}
	if addrKey(z1) != addrKey(z2) {
		t.Errorf("zones keyed apart: %v %v", addrKey(z1), addrKey(z2))
	}
	if addrKey(tcp("192.0.2.1")) == addrKey(tcp("192.0.2.2")) {
		t.Error("two IPv4 addresses keyed together")
	}
	if addrKey(tcp("2001:db8:1:2::1")) == addrKey(tcp("2001:db8:1:3::1")) {
		t.Error("two IPv6 /64s keyed together")
	}
}

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
