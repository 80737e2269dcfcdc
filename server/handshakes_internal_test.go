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
		if len(q.q) == 0 {
			t.Fatalf("empty queue left for %v", a)
		}
		for i, hs := range q.q {
			if hs.addr != a || !hs.pending || i > 0 && q.q[i-1].seq >= hs.seq {
				t.Fatalf("entry %d of %v misfiled, removed or out of order", i, a)
			}
		}
		sum += len(q.q)
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
