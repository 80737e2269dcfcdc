package server_test

import (
	"crypto/tls"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// TestRevocationSeenByNextHandshake (issue 16 item 2): the handshake's
// revocation check answers from the state directory's watch, without a
// stat, while nothing changed; a revocation written to the store (by
// another process: the gateway is not told) before a handshake begins is
// still refused by that very handshake, every time, including while other
// clients keep handshaking and keep the checker's view warm. The
// gateway's poll and its watch are hidden, so only the handshake's own
// check can see the revocation.
func TestRevocationSeenByNextHandshake(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.RevocationPoll = time.Hour
		o.Revocations = struct{ server.Revocations }{o.Revocations} // hides Watch
	})
	bystander := gw.Cert("bystander", pki.RoleAgent)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var warm atomic.Int64
	wg.Add(1)
	go func() { // handshakes all along: the checker's verified view stays fresh
		defer wg.Done()
		cfg := gw.ClientConfig(&bystander)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := gw.Probe(cfg); err != nil {
				t.Errorf("bystander refused: %v", err)
				return
			}
			warm.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	const rounds = 20
	for i := range rounds {
		victim := gw.Issue("victim", pki.RoleAgent, time.Hour)
		kp := pkitest.KeyPair(t, victim)
		cfg := gw.ClientConfig(&kp)
		if err := gw.Probe(cfg); err != nil {
			t.Fatalf("round %d: victim refused before its revocation: %v", i, err)
		}
		if _, err := gw.Store.Revoke(victim.Serial, "test"); err != nil {
			t.Fatal(err)
		}
		if err := gw.Probe(cfg); err == nil {
			t.Fatalf("round %d: the handshake right after the revocation was admitted (%d bystander handshakes so far)", i, warm.Load())
		}
	}
	if warm.Load() == 0 {
		t.Fatal("the bystander never handshook: the view was never warm")
	}
}

// TestCloseSerialCountsWatchClosedOnce (issue 16 item 3): connections the
// revocation watch closed, and that have ended since, are still counted by
// the revoking tool's CloseSerial, each once (the mark is on each tracked
// connection; the side table per serial is gone), a second CloseSerial
// counts none, and a revocation the watch handled with no CloseSerial
// (the CLI's) leaves nothing counted against another serial.
func TestCloseSerialCountsWatchClosedOnce(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.RevocationPoll = time.Hour // the watch alone sees the store change
		o.FirstByteTimeout = time.Minute
	})
	victim := gw.Issue("victim", pki.RoleAgent, time.Hour)
	other := gw.Issue("other", pki.RoleAgent, time.Hour)
	kp, okp := pkitest.KeyPair(t, victim), pkitest.KeyPair(t, other)
	const n = 3
	var conns []*tls.Conn
	for range n {
		conns = append(conns, dialSilent(t, gw, logs, kp, victim.Serial))
	}
	otherConn := dialSilent(t, gw, logs, okp, other.Serial)
	if _, err := gw.Store.Revoke(victim.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if _, err := readUntilClosed(c, waitLimit); err != nil {
			t.Fatalf("connection %d not closed by the watch: %v", i, err)
		}
	}
	waitFor(t, func() bool { return gw.Count() == 1 }) // ended and untracked: only other's
	if got := gw.CloseSerial(victim.Serial); got != n {
		t.Errorf("CloseSerial after the watch closed them = %d, want %d", got, n)
	}
	if got := gw.CloseSerial(victim.Serial); got != 0 {
		t.Errorf("a second CloseSerial = %d, want 0", got)
	}
	if got := gw.CloseSerial(other.Serial); got != 1 {
		t.Errorf("CloseSerial of a live connection = %d, want 1", got)
	}
	if _, err := readUntilClosed(otherConn, waitLimit); err != nil {
		t.Fatal(err)
	}
}
