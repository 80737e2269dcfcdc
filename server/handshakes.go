package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// pendingHandshakes is the handshake budget (GatewayOptions.MaxHandshakes):
// the connections still in their TLS handshake, per remote address, each
// address's oldest first. Nothing about a peer is known before its
// handshake but its address, so when the budget is full the connection cut
// to make room is the oldest of the address holding the most, if it holds
// more than an eighth of the budget, else the oldest of all: a flood from
// one address (or one IPv6 /64) cuts its own handshakes, not another
// client's, and one from many addresses cuts the oldest. While the budget
// has room nothing is cut, so clients that all share one address (the
// default loopback listener, a TCP load balancer in front) keep the whole
// budget, as before addresses were counted.
type pendingHandshakes struct {
	mu     sync.Mutex
	byAddr map[netip.Addr][]*pendingHandshake // each address's, oldest first
	n      int                                // pending in all
	max    int                                // MaxHandshakes
	seq    uint64                             // order of arrival
}

// pendingHandshake is one connection in its TLS handshake, counted in
// pendingHandshakes while it lasts.
type pendingHandshake struct {
	addr    netip.Addr
	seq     uint64
	pending bool // guarded by pendingHandshakes.mu
	cancel  context.CancelCauseFunc
}

// errEvicted is why a pending handshake was cut: the handshake budget was
// full and a newer connection needed the room.
var errEvicted = errors.New("server: handshake cut to admit a newer connection (handshake limit reached)")

func newPendingHandshakes(budget int) *pendingHandshakes {
	return &pendingHandshakes{byAddr: map[netip.Addr][]*pendingHandshake{}, max: budget}
}

// addrKey is the address a connection's handshake counts against: its IP,
// or for IPv6 its /64, which one host is commonly given whole. A
// connection without an IP address (a test's pipe) counts against the
// zero Addr.
func addrKey(a net.Addr) netip.Addr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := tcp.AddrPort().Addr().Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// begin counts a new connection from addr against the budget; when it is
// full, it first cuts one (heaviestLocked): the oldest pending handshake
// of the address that holds the most, if more than an eighth of the
// budget, else the oldest of all. The returned context ends the handshake
// when it is cut, with errEvicted as its cause.
func (p *pendingHandshakes) begin(ctx context.Context, addr netip.Addr) (context.Context, *pendingHandshake) {
	hsCtx, cancel := context.WithCancelCause(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n >= p.max {
		p.cutLocked(p.heaviestLocked())
	}
	p.seq++
	hs := &pendingHandshake{addr: addr, seq: p.seq, pending: true, cancel: cancel}
	p.byAddr[addr] = append(p.byAddr[addr], hs)
	p.n++
	return hsCtx, hs
}

// heaviestLocked returns the pending handshake to cut when the budget is
// full: the oldest of the address that holds the most, if that is more
// than an eighth of the budget (a flood from one address, which so cuts
// only its own); else the oldest of all. Not the heaviest whatever it
// holds: an attacker with many addresses (an IPv6 /48 is 65,536 /64s)
// that fills the budget with one or a few handshakes each would make any
// address with a few more in progress (clients behind one NAT) the
// heaviest, and cut its fresh handshakes one per connection, where the
// oldest of all takes the whole budget's worth within their lifetime. It
// looks at every address, at most MaxHandshakes of them, and only when
// the budget is full.
func (p *pendingHandshakes) heaviestLocked() *pendingHandshake {
	var victim, oldest *pendingHandshake
	most := 0
	for _, q := range p.byAddr {
		if len(q) > most || len(q) == most && q[0].seq < victim.seq {
			victim, most = q[0], len(q)
		}
		if oldest == nil || q[0].seq < oldest.seq {
			oldest = q[0]
		}
	}
	if most <= max(p.max/8, 1) {
		return oldest
	}
	return victim
}

// cutLocked removes hs and ends its handshake with errEvicted: the
// connection is closed when the handshake's context ends, and its own
// goroutine logs and audits the cut.
func (p *pendingHandshakes) cutLocked(hs *pendingHandshake) {
	p.removeLocked(hs)
	hs.cancel(errEvicted)
}

// end removes hs from the budget, if it is still there.
func (p *pendingHandshakes) end(hs *pendingHandshake) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(hs)
}

// removeLocked takes hs out of its address's queue: a handshake ends in
// milliseconds, so it is near the front, where the search starts.
func (p *pendingHandshakes) removeLocked(hs *pendingHandshake) {
	if !hs.pending {
		return
	}
	hs.pending = false
	p.n--
	q := p.byAddr[hs.addr]
	if i := slices.Index(q, hs); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(p.byAddr, hs.addr)
	} else {
		p.byAddr[hs.addr] = q
	}
}

// count returns how many handshakes are pending.
func (p *pendingHandshakes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
