package server

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
)

// pendingHandshakes is the handshake budget (GatewayOptions.MaxHandshakes):
// the connections still in their TLS handshake, oldest first, overall and
// per remote address. Nothing about a peer is known before its handshake
// but its address, so the address is what bounds it: one address holds at
// most maxPerAddr of the places, and a connection from an address at its
// share cuts that address's own oldest handshake, never another's. A flood
// from one address (or one IPv6 /64) therefore cuts only its own
// connections; it takes eight of them to reach the overall budget, where
// the oldest pending handshake is cut as before.
type pendingHandshakes struct {
	mu         sync.Mutex
	all        list.List // of *pendingHandshake, oldest first
	byAddr     map[netip.Addr]*list.List
	max        int // places in all
	maxPerAddr int // places one address may hold
}

// pendingHandshake is one connection in its TLS handshake, an element of
// pendingHandshakes while it lasts.
type pendingHandshake struct {
	elem     *list.Element // in all; nil once removed (guarded by pendingHandshakes.mu)
	addrElem *list.Element // in byAddr[addr]
	addr     netip.Addr
	cancel   context.CancelCauseFunc
}

// errEvicted is why a pending handshake was cut: the handshake budget (the
// whole, or its address's share) was full and a newer connection needed
// the room.
var errEvicted = errors.New("server: handshake cut to admit a newer connection (handshake limit reached)")

func newPendingHandshakes(budget int) *pendingHandshakes {
	return &pendingHandshakes{byAddr: map[netip.Addr]*list.List{}, max: budget, maxPerAddr: max(budget/8, 1)}
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

// begin counts a new connection from addr against the budget, cutting
// first the oldest pending handshake of addr if addr holds its share, else
// the oldest of all if the budget is full. The returned context ends the
// handshake when it is cut, with errEvicted as its cause.
func (p *pendingHandshakes) begin(ctx context.Context, addr netip.Addr) (context.Context, *pendingHandshake) {
	hsCtx, cancel := context.WithCancelCause(ctx)
	hs := &pendingHandshake{addr: addr, cancel: cancel}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byAddr[addr]; l != nil && l.Len() >= p.maxPerAddr {
		p.cutLocked(l.Front().Value.(*pendingHandshake))
	} else if p.all.Len() >= p.max {
		p.cutLocked(p.all.Front().Value.(*pendingHandshake))
	}
	l := p.byAddr[addr]
	if l == nil {
		l = list.New()
		p.byAddr[addr] = l
	}
	hs.elem = p.all.PushBack(hs)
	hs.addrElem = l.PushBack(hs)
	return hsCtx, hs
}

// cutLocked removes hs and ends its handshake with errEvicted: crypto/tls
// closes the connection when the handshake's context ends, and its own
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

func (p *pendingHandshakes) removeLocked(hs *pendingHandshake) {
	if hs.elem == nil {
		return
	}
	p.all.Remove(hs.elem)
	l := p.byAddr[hs.addr]
	l.Remove(hs.addrElem)
	if l.Len() == 0 {
		delete(p.byAddr, hs.addr)
	}
	hs.elem, hs.addrElem = nil, nil
}

// count returns how many handshakes are pending.
func (p *pendingHandshakes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.Len()
}
