package server_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// secondAddr is a second loopback address, so that a flood and the clients
// it must not harm can have different addresses.
const secondAddr = "127.0.0.2"

// needSecondAddr skips the test where secondAddr is not an address of this
// host (127.0.0.2 is a loopback address on Linux, not everywhere).
func needSecondAddr(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(secondAddr, "0"))
	if err != nil {
		t.Skipf("no second loopback address here: %v", err)
	}
	ln.Close()
}

// dialFrom dials the gateway at addr from local, an IP address of this
// host; the connection is closed when the test ends.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitLimit, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cutWithin reports whether the gateway closes c within d.
func cutWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestHandshakeFloodFromOneAddressCutsOnlyItsOwn: before a handshake a peer
// is only its address, so one address holds at most an eighth of the
// handshake budget, and a flood from it cuts its own oldest handshakes,
// not another client's. Before, a flood larger than the budget from one
// address cut every other handshake in progress, oldest first.
func TestHandshakeFloodFromOneAddressCutsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	needSecondAddr(t)
	const budget = 16 // MaxHandshakes: 2 per address
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.MaxHandshakes = budget
		o.HandshakeTimeout = time.Minute // only the budget cuts here
	})
	other := dialFrom(t, "127.0.0.1", gw.Addr) // a handshake in progress from another address
	waitFor(t, func() bool { return gw.Count() == 1 })

	flood := make([]net.Conn, budget+4)
	for i := range flood {
		flood[i] = dialFrom(t, secondAddr, gw.Addr)
	}
	// Each connection beyond the address's share cut the address's oldest:
	// all but the last two of the flood are cut, and nothing else.
	for i, c := range flood[:len(flood)-budget/8] {
		if !cutWithin(c, waitLimit) {
			t.Fatalf("flood connection %d of %d was not cut: one address holds more than its share", i+1, len(flood))
		}
	}
	for i, c := range flood[len(flood)-budget/8:] {
		if cutWithin(c, 100*time.Millisecond) {
			t.Fatalf("flood connection %d (one of the newest two) was cut: the share is smaller than MaxHandshakes/8", len(flood)-budget/8+i+1)
		}
	}
	if cutWithin(other, 100*time.Millisecond) {
		t.Fatal("a flood from one address cut another address's handshake in progress")
	}
	if n := gw.Count(); n != 1+budget/8 {
		t.Fatalf("gateway holds %d pending handshakes, want %d (1 + the flood's share)", n, 1+budget/8)
	}
	// The handshake from the other address still completes.
	cert := gw.Cert("other", pki.RoleAgent)
	if err := gw.Probe(gw.ClientConfig(&cert)); err != nil {
		t.Fatalf("a client from another address could not connect after the flood: %v", err)
	}
}

// TestSlotWaitersPerAddress: while every session slot is taken, one
// address holds at most a quarter of the places in which connections wait
// for a slot before their handshake; a client from another address still
// gets one (before, one address's flood took them all and every other
// reconnection was refused at once).
func TestSlotWaitersPerAddress(t *testing.T) {
	t.Parallel()
	needSecondAddr(t)
	const maxHandshakes = 64 // 8 waiting places, 2 per address
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.MaxHandshakes = maxHandshakes
		o.MaxConnections = 1
		o.OperatorReserve = server.NoOperatorReserve
		o.SlotWait = time.Minute // a waiter outlives the test
		o.HandshakeTimeout = time.Minute
	})
	holder := gw.Cert("holder", pki.RoleOperator)
	openRPC(t, gw, holder, 1) // every slot taken

	const flood = 6
	conns := make([]net.Conn, flood)
	for i := range conns {
		conns[i] = dialFrom(t, secondAddr, gw.Addr)
	}
	share := maxHandshakes / 8 / 4
	refused := 0
	for _, c := range conns {
		if cutWithin(c, 200*time.Millisecond) {
			refused++
		}
	}
	if refused != flood-share {
		t.Fatalf("%d of %d connections from one address refused, want %d: it may hold %d waiting places", refused, flood, flood-share, share)
	}
	// Another address still finds a waiting place.
	if c := dialFrom(t, "127.0.0.1", gw.Addr); cutWithin(c, 200*time.Millisecond) {
		t.Fatal("a connection from another address was refused at once: one address took every waiting place")
	}
}
