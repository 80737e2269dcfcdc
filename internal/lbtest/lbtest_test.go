package lbtest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoBackend is a TCP server that greets each connection with its name,
// then echoes: a stand-in for a gateway behind the balancer.
type echoBackend struct {
	name string
	l    net.Listener
	wg   sync.WaitGroup
}

func newEcho(t *testing.T, name string) *echoBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, l: l}
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() {
				defer c.Close()
				_, _ = io.WriteString(c, name+"\n")
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(b.close)
	return b
}

func (b *echoBackend) addr() string { return b.l.Addr().String() }

// close stops accepting; connections in progress end when nginx or the
// client closes them.
func (b *echoBackend) close() { b.l.Close() }

// roundTrip dials the balancer, reads the backend's name, and checks that
// a line comes back unchanged through the proxy.
func roundTrip(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the backend's greeting through %s: %v", addr, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Fatalf("echo through %s: %q, %v", addr, echo, err)
	}
	return strings.TrimSpace(name)
}

// TestBalancesAcrossBackends: connections through the balancer reach
// both backends, and bytes pass through unchanged both ways.
func TestBalancesAcrossBackends(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a"), newEcho(t, "b")
	addr := Start(t, []string{a.addr(), b.addr()})
	seen := map[string]int{}
	for range 6 {
		seen[roundTrip(t, addr)]++
	}
	if seen["a"] == 0 || seen["b"] == 0 || len(seen) != 2 {
		t.Errorf("6 connections reached %v, want both a and b", seen)
	}
}

// TestSkipsDeadBackend: with one backend gone (a stopped gateway), every
// new connection still succeeds on the other; nginx retries the next
// upstream when a connect is refused.
func TestSkipsDeadBackend(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a"), newEcho(t, "b")
	addr := Start(t, []string{a.addr(), b.addr()})
	b.close()
	for i := range 6 {
		if got := roundTrip(t, addr); got != "a" {
			t.Fatalf("connection %d reached %q, want a", i, got)
		}
	}
}

// TestHashKeepsClientOnOneBackend: "hash $remote_addr consistent" sends
// every connection from one client address to the same backend, which
// the README recommends so a client's MCP sessions stay on one gateway.
func TestHashKeepsClientOnOneBackend(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a"), newEcho(t, "b")
	lb := New(t, Options{Backends: []string{a.addr(), b.addr()}, Balance: "hash $remote_addr consistent;"})
	first := roundTrip(t, lb.Addr)
	for i := range 5 {
		if got := roundTrip(t, lb.Addr); got != first {
			t.Fatalf("connection %d reached %q, the first reached %q", i+1, got, first)
		}
	}
}

// TestStopCutsAndStartRestores: Stop cuts a connection in progress and
// refuses new ones at the same address; Start serves it again.
func TestStopCutsAndStartRestores(t *testing.T) {
	t.Parallel()
	a := newEcho(t, "a")
	lb := New(t, Options{Backends: []string{a.addr()}})
	c, err := net.DialTimeout("tcp", lb.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	lb.Stop()
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("a connection through the stopped balancer still reads")
	}
	if c2, err := net.DialTimeout("tcp", lb.Addr, time.Second); err == nil {
		c2.Close()
		t.Error("the stopped balancer accepts connections")
	}
	lb.Start()
	if got := roundTrip(t, lb.Addr); got != "a" {
		t.Errorf("after Start: reached %q", got)
	}
}
