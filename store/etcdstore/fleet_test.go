package etcdstore_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/store/etcdstore/fleettest"
)

// TestRevocationThroughOneGatewayClosesSessionsOnAll: three gateways on a
// 3-member etcd cluster; a revocation through one gateway's tool closes the
// certificate's live session on every gateway, and every gateway refuses
// its next handshake (issue 15 item 5).
func TestRevocationThroughOneGatewayClosesSessionsOnAll(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	// An hour-long Poll: only the watch's notification can close them.
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 3, MaxStale: 5 * time.Second, Poll: time.Hour})
	victim := pkitest.Issue(t, fleet[0].Store, "victim", pki.RoleAgent, time.Hour)
	kp := pkitest.KeyPair(t, victim)
	var conns []net.Conn
	for _, m := range fleet {
		conns = append(conns, fleettest.Session(t, m.GW, kp))
	}
	op := fleet[0].GW.Client(fleet[0].GW.Cert("ops", pki.RoleOperator))
	res := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial})
	if res.IsError {
		t.Fatalf("revoke: %+v", res.Content)
	}
	for i, conn := range conns {
		took, err := fleettest.Closed(conn, 5*time.Second)
		if err != nil {
			t.Fatalf("gateway %d: %v", i, err)
		}
		t.Logf("gateway %d closed the session %v after the revoke returned", i, took)
	}
	for i, m := range fleet {
		if err := m.GW.Probe(m.GW.ClientConfig(&kp)); err == nil {
			t.Errorf("gateway %d still admits the revoked certificate", i)
		}
	}
}

// TestOneMemberDownChangesNothing: killing one of three etcd members (the
// leader, the worst one) leaves every gateway current: no refused
// handshake, and revocations still reach every gateway.
func TestOneMemberDownChangesNothing(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	// Long enough to ride out the leader election on a loaded machine
	// (the README's advice), short enough to be crossed within the test.
	const maxStale = 4 * time.Second
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 3, MaxStale: maxStale})
	agent := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].Store, "agent", pki.RoleAgent, time.Hour))
	victim := pkitest.Issue(t, fleet[0].Store, "victim", pki.RoleAgent, time.Hour)
	vkp := pkitest.KeyPair(t, victim)
	conn := fleettest.Session(t, fleet[2].GW, vkp)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	leader := c.Leader(ctx)
	cancel()
	if leader < 0 {
		t.Fatal("no leader")
	}
	c.Kill(leader)
	// For longer than max_staleness, every gateway stays current.
	deadline := time.Now().Add(maxStale + 2*time.Second)
	for time.Now().Before(deadline) {
		for i, m := range fleet {
			if err := m.Watcher.Refresh(); err != nil {
				t.Fatalf("gateway %d went stale with one member down: %v", i, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, m := range fleet {
		if err := m.GW.Probe(m.GW.ClientConfig(&agent)); err != nil {
			t.Errorf("gateway %d refused a valid handshake with one member down: %v", i, err)
		}
	}
	if _, err := fleet[1].Store.Revoke(victim.Serial, "one member down"); err != nil {
		t.Fatal(err)
	}
	if _, err := fleettest.Closed(conn, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestQuorumLossFailsClosedAndRecovers: with two of three members stopped,
// every gateway refuses new handshakes once max_staleness has passed
// (live sessions are kept), says why, and when the quorum is back accepts
// again by itself, with the revocation made right then applied: the
// victim's live session, kept through the outage, is closed.
func TestQuorumLossFailsClosedAndRecovers(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	const maxStale = 2 * time.Second
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 3, MaxStale: maxStale})
	agent := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].Store, "agent", pki.RoleAgent, time.Hour))
	victim := pkitest.Issue(t, fleet[0].Store, "victim", pki.RoleAgent, time.Hour)
	vkp := pkitest.KeyPair(t, victim)
	var live []net.Conn
	for _, m := range fleet {
		live = append(live, fleettest.Session(t, m.GW, vkp))
	}

	stopped := time.Now()
	c.StopQuorum()
	for i, m := range fleet {
		fleettest.WaitFor(t, fmt.Sprintf("gateway %d stale", i), func() bool { return m.Watcher.Refresh() != nil })
		t.Logf("gateway %d stale %v after the quorum stopped", i, time.Since(stopped))
		why := m.Watcher.Refresh()
		err := m.GW.Probe(m.GW.ClientConfig(&agent))
		if err == nil {
			t.Errorf("gateway %d admitted a handshake without a current view", i)
		}
		// The gateway logs the reason when its text changes: it must not
		// change from one poll to the next while the outage lasts (it
		// named the age, and the log had a line every 200 ms).
		if again := m.Watcher.Refresh(); again == nil || again.Error() != why.Error() {
			t.Errorf("gateway %d: the stale view's reason changed while nothing happened: %q, then %q", i, why, again)
		}
		if st := m.Store.Status(); !strings.Contains(strings.Join(st.Problems, "\n"), "not confirmed current") {
			t.Errorf("gateway %d status does not say why it refuses: %q", i, st.Problems)
		}
	}
	if since := time.Since(stopped); since < maxStale/2 {
		t.Errorf("gateways went stale %v after the quorum stopped, before max_staleness could have passed", since)
	}
	for i, conn := range live {
		if err := fleettest.Ping(conn); err != nil {
			t.Errorf("gateway %d dropped a live session while stale: %v", i, err)
		}
	}

	c.StartStopped()
	if _, err := fleet[0].Store.Revoke(victim.Serial, "while recovering"); err != nil {
		t.Fatal(err)
	}
	for i, m := range fleet {
		fleettest.WaitFor(t, fmt.Sprintf("gateway %d current again", i), func() bool { return m.Watcher.Refresh() == nil })
		if err := m.GW.Probe(m.GW.ClientConfig(&agent)); err != nil {
			t.Errorf("gateway %d still refuses after recovery: %v", i, err)
		}
		if _, err := fleettest.Closed(live[i], 5*time.Second); err != nil {
			t.Errorf("gateway %d: the victim's session: %v", i, err)
		}
		if err := m.GW.Probe(m.GW.ClientConfig(&vkp)); err == nil {
			t.Errorf("gateway %d admits the certificate revoked during recovery", i)
		}
	}
}

// TestCompactionDuringDisconnectResyncs: a gateway whose only etcd
// endpoint is down misses revocations made through the others; etcd then
// compacts past the revision its watch needs. When its member returns,
// the gateway reads the set again (a full resync) and loses nothing.
func TestCompactionDuringDisconnectResyncs(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 2, MaxStale: 2 * time.Second, Endpoints: func(i int) []string {
		if i == 1 {
			return []string{c.Endpoint(2)}
		}
		return []string{c.Endpoint(0), c.Endpoint(1)}
	}})
	var victims []*pki.Issued
	var conns []net.Conn
	for i := range 5 {
		v := pkitest.Issue(t, fleet[0].Store, fmt.Sprintf("victim%d", i), pki.RoleAgent, time.Hour)
		victims = append(victims, v)
		conns = append(conns, fleettest.Session(t, fleet[1].GW, pkitest.KeyPair(t, v)))
	}
	resyncs := fleet[1].Watcher.Resyncs()
	c.Stop(2)
	for _, v := range victims {
		if _, err := fleet[0].Store.Revoke(v.Serial, "during the disconnect"); err != nil {
			t.Fatal(err)
		}
	}
	fleettest.WaitFor(t, "the disconnected gateway stale", func() bool { return fleet[1].Watcher.Refresh() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	rev, err := c.CompactNow(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted at revision %d", rev)
	c.Start(2)
	fleettest.WaitFor(t, "the disconnected gateway current again", func() bool { return fleet[1].Watcher.Refresh() == nil })
	if got := fleet[1].Watcher.Resyncs(); got <= resyncs {
		t.Errorf("resyncs %d -> %d: no full resync after the compaction", resyncs, got)
	}
	// Current again means every revocation is in: none may be missing.
	if n := fleet[1].Watcher.Len(); n != len(victims) {
		t.Errorf("the gateway's view holds %d revocations once current, want %d", n, len(victims))
	}
	for i, conn := range conns {
		if _, err := fleettest.Closed(conn, 5*time.Second); err != nil {
			t.Errorf("victim %d: %v", i, err)
		}
	}
}

// TestConcurrentIssuanceNeverCollides: two gateways issue at once; every
// serial is recorded once, and a serial two issuers try to record at the
// same moment goes to exactly one of them (the CreateRevision==0 txn).
func TestConcurrentIssuanceNeverCollides(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 2, MaxStale: 5 * time.Second})
	const each = 20
	errs := make(chan error, 2*each)
	serials := make(chan string, 2*each)
	for g := range 2 {
		for i := range each {
			go func() {
				iss, err := fleet[g].Store.Issue(pki.IssueRequest{Name: fmt.Sprintf("gw%d-%d", g, i), Duration: time.Hour})
				if err != nil {
					errs <- err
					return
				}
				serials <- iss.Serial
				errs <- nil
			}()
		}
	}
	for range 2 * each {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(serials)
	seen := map[string]bool{}
	for s := range serials {
		if seen[s] {
			t.Errorf("serial %s issued twice", s)
		}
		seen[s] = true
	}
	list, err := fleet[1].Store.List()
	if err != nil || len(list) != 2*each {
		t.Fatalf("inventory: %d entries, %v; want %d", len(list), err, 2*each)
	}

	// The same serial from two gateways at the same moment, 20 times.
	for i := range 20 {
		rec := pki.IssuedCert{Serial: fmt.Sprintf("c0ffee%02x", i+1), Name: "race", Role: pki.RoleAgent}
		res := make(chan error, 2)
		for g := range 2 {
			go func() { res <- fleet[g].Store.Records().AddIssued(rec) }()
		}
		e1, e2 := <-res, <-res
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("serial %s: both or neither recorded it: %v, %v", rec.Serial, e1, e2)
		}
	}
}

// TestGatewayWithoutCAKeyRefusesIssuance: a gateway deployed without the
// CA key, or without either CA file in its state directory (its CA
// certificate configured from elsewhere), serves, checks and revokes, but
// its issue tool says clearly why it cannot issue, and does not suggest
// creating a CA of its own (issue 15 item 2).
func TestGatewayWithoutCAKeyRefusesIssuance(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 3, MaxStale: 5 * time.Second,
		NoCAKey: map[int]bool{1: true}, NoCA: map[int]bool{2: true}})
	opCert := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].Store, "ops", pki.RoleOperator, time.Hour))
	for _, i := range []int{1, 2} {
		// The client trusts the CA from gateway 0's files: gateway 2's
		// state directory has none to read it from.
		via := *fleet[i].GW
		via.Store = fleet[0].Store
		op := via.Client(opCert)
		res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": fmt.Sprintf("new-agent-%d", i)})
		text := fmt.Sprint(res.Content)
		if !res.IsError || !strings.Contains(text, "holds no CA key") || strings.Contains(text, "nefia.mtls.init") {
			t.Errorf("issue on gateway %d: error=%v %s", i, res.IsError, text)
		}
	}
}
