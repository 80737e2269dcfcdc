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

// TestHandshakeFloodFromOneAddressCutsOnlyItsOwn: before a handshake a
// peer is only its address, so when the handshake budget is full the
// handshake cut is the oldest of the address holding the most: a flood
// from one address cuts its own, not another client's handshake in
// progress (before, the oldest of all was cut, whoever's it was). While
// there is room nothing is cut, whatever the address.
func TestHandshakeFloodFromOneAddressCutsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	needSecondAddr(t)
	const budget = 16
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.MaxHandshakes = budget
		o.HandshakeTimeout = time.Minute // only the budget cuts here
	})
	other := dialFrom(t, "127.0.0.1", gw.Addr) // the oldest handshake in progress, from another address
	waitFor(t, func() bool { return gw.Count() == 1 })

	const extra = 5
	flood := make([]net.Conn, budget-1+extra)
	for i := range flood {
		flood[i] = dialFrom(t, secondAddr, gw.Addr)
		if i == budget-2 {
			// The budget just filled up, from both addresses: nothing
			// was cut to get here.
			waitFor(t, func() bool { return gw.Count() == budget })
		}
	}
	// Each of the last extra connections found the budget full and cut
	// the flood's oldest.
	for i, c := range flood[:extra] {
		if !cutWithin(c, waitLimit) {
			t.Fatalf("flood connection %d of %d was not cut to make room", i+1, len(flood))
		}
	}
	for i, c := range flood[extra:] {
		if cutWithin(c, 50*time.Millisecond) {
			t.Fatalf("flood connection %d was cut, beyond the %d the budget needed", extra+i+1, extra)
		}
	}
	if cutWithin(other, 100*time.Millisecond) {
		t.Fatal("a flood from one address cut another address's handshake in progress")
	}
	if n := gw.Count(); n != budget {
		t.Fatalf("gateway holds %d pending handshakes, want the budget, %d", n, budget)
	}
	// A client from the other address gets in while the flood holds the
	// rest of the budget: its handshake cuts the flood's oldest.
	cert := gw.Cert("other", pki.RoleAgent)
	if err := gw.Probe(gw.ClientConfig(&cert)); err != nil {
		t.Fatalf("a client from another address could not connect during the flood: %v", err)
	}
	if cutWithin(other, 50*time.Millisecond) {
		t.Fatal("the other address's stalled handshake was cut by the flood's newest")
	}
}
