package etcdstore_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/store/etcdstore"
)

const (
	testPrefix = "/nefia-test/"
	waitLimit  = 15 * time.Second
)

// member is one nefia gateway of a fleet sharing an etcd store.
type member struct {
	gw      *servertest.Gateway
	store   *pki.Store
	watcher *etcdstore.Watcher
}

type fleetOptions struct {
	gateways int
	// maxStale is mcp.mtls.store.max_staleness.
	maxStale time.Duration
	// endpoints, when set, gives gateway i its etcd endpoints (default:
	// every member).
	endpoints func(i int) []string
	// noCAKey lists gateways deployed without the CA key.
	noCAKey map[int]bool
	// poll is the gateway's revocation poll; the watch notifies it at
	// once, so tests set it long to prove the notification does the work.
	poll time.Duration
}

// startFleet starts gateways sharing one CA (files copied, as a
// deployment distributes them) and one etcd store.
func startFleet(t *testing.T, c *etcdtest.Cluster, o fleetOptions) []member {
	t.Helper()
	if o.poll == 0 {
		o.poll = 200 * time.Millisecond
	}
	base := pkitest.NewStore(t)
	var out []member
	for i := range o.gateways {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile} {
			if f == pki.CAKeyFile && o.noCAKey[i] {
				continue
			}
			copyFile(t, base.Path(f), filepath.Join(dir, f))
		}
		eps := c.Endpoints()
		if o.endpoints != nil {
			eps = o.endpoints(i)
		}
		cli, err := etcdstore.Dial(config.Etcd{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		es := etcdstore.New(cli, testPrefix)
		store := pki.NewStore(dir, pki.WithRecords(es))
		w := etcdstore.NewWatcher(cli, testPrefix, o.maxStale, testLogger(t, fmt.Sprintf("gw%d", i)))
		es.Attach(w) // status reports the view's staleness, as on a gateway
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		waitFor(t, "gateway's view loaded", func() bool { return w.Refresh() == nil })
		gw := servertest.StartWithStore(t, store, func(g *server.GatewayOptions) {
			g.Revocations = w
			g.RevocationPoll = o.poll
		})
		out = append(out, member{gw: gw, store: store, watcher: w})
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("gateway", name, "test", t.Name())
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitLimit {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// session opens a raw MCP session and proves it live with a ping.
func session(t *testing.T, gw *servertest.Gateway, kp tls.Certificate) net.Conn {
	t.Helper()
	conn, err := gw.Dial(gw.ClientConfig(&kp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := ping(conn); err != nil {
		t.Fatalf("session on %s not live: %v", gw.Addr, err)
	}
	return conn
}

func ping(conn net.Conn) error {
	if _, err := fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	_, err := bufio.NewReader(conn).ReadString('\n')
	return err
}

// closed waits until the peer closes conn and says how long that took.
func closed(conn net.Conn, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, fmt.Errorf("session still open after %s", limit)
	}
	return time.Since(start), nil
}

// TestRevocationThroughOneGatewayClosesSessionsOnAll: three gateways on a
// 3-member etcd cluster; a revocation through one gateway's tool closes the
// certificate's live session on every gateway, and every gateway refuses
// its next handshake (issue 15 item 5).
func TestRevocationThroughOneGatewayClosesSessionsOnAll(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	// An hour-long poll: only the watch's notification can close them.
	fleet := startFleet(t, c, fleetOptions{gateways: 3, maxStale: 5 * time.Second, poll: time.Hour})
	victim := pkitest.Issue(t, fleet[0].store, "victim", pki.RoleAgent, time.Hour)
	kp := pkitest.KeyPair(t, victim)
	var conns []net.Conn
	for _, m := range fleet {
		conns = append(conns, session(t, m.gw, kp))
	}
	op := fleet[0].gw.Client(fleet[0].gw.Cert("ops", pki.RoleOperator))
	res := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial})
	if res.IsError {
		t.Fatalf("revoke: %+v", res.Content)
	}
	for i, conn := range conns {
		took, err := closed(conn, 5*time.Second)
		if err != nil {
			t.Fatalf("gateway %d: %v", i, err)
		}
		t.Logf("gateway %d closed the session %v after the revoke returned", i, took)
	}
	for i, m := range fleet {
		if err := m.gw.Probe(m.gw.ClientConfig(&kp)); err == nil {
			t.Errorf("gateway %d still admits the revoked certificate", i)
		}
	}
}

// TestOneMemberDownChangesNothing: killing one of three etcd members (the
// leader, the worst one) leaves every gateway current: no refused
// handshake, and revocations still reach every gateway.
func TestOneMemberDownChangesNothing(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	const maxStale = 2 * time.Second
	fleet := startFleet(t, c, fleetOptions{gateways: 3, maxStale: maxStale})
	agent := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].store, "agent", pki.RoleAgent, time.Hour))
	victim := pkitest.Issue(t, fleet[0].store, "victim", pki.RoleAgent, time.Hour)
	vkp := pkitest.KeyPair(t, victim)
	conn := session(t, fleet[2].gw, vkp)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	leader := c.Leader(ctx)
	cancel()
	if leader < 0 {
		t.Fatal("no leader")
	}
	c.Kill(leader)
	// For twice max_staleness, every gateway stays current and admits.
	deadline := time.Now().Add(2 * maxStale)
	for time.Now().Before(deadline) {
		for i, m := range fleet {
			if err := m.watcher.Refresh(); err != nil {
				t.Fatalf("gateway %d went stale with one member down: %v", i, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, m := range fleet {
		if err := m.gw.Probe(m.gw.ClientConfig(&agent)); err != nil {
			t.Errorf("gateway %d refused a valid handshake with one member down: %v", i, err)
		}
	}
	if _, err := fleet[1].store.Revoke(victim.Serial, "one member down"); err != nil {
		t.Fatal(err)
	}
	if _, err := closed(conn, 5*time.Second); err != nil {
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
	fleet := startFleet(t, c, fleetOptions{gateways: 3, maxStale: maxStale})
	agent := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].store, "agent", pki.RoleAgent, time.Hour))
	victim := pkitest.Issue(t, fleet[0].store, "victim", pki.RoleAgent, time.Hour)
	vkp := pkitest.KeyPair(t, victim)
	var live []net.Conn
	for _, m := range fleet {
		live = append(live, session(t, m.gw, vkp))
	}

	stopped := time.Now()
	c.StopQuorum()
	for i, m := range fleet {
		waitFor(t, fmt.Sprintf("gateway %d stale", i), func() bool { return m.watcher.Refresh() != nil })
		t.Logf("gateway %d stale %v after the quorum stopped", i, time.Since(stopped))
		err := m.gw.Probe(m.gw.ClientConfig(&agent))
		if err == nil {
			t.Errorf("gateway %d admitted a handshake without a current view", i)
		}
		if st := m.store.Status(); !strings.Contains(strings.Join(st.Problems, "\n"), "not confirmed current") {
			t.Errorf("gateway %d status does not say why it refuses: %q", i, st.Problems)
		}
	}
	if since := time.Since(stopped); since < maxStale/2 {
		t.Errorf("gateways went stale %v after the quorum stopped, before max_staleness could have passed", since)
	}
	for i, conn := range live {
		if err := ping(conn); err != nil {
			t.Errorf("gateway %d dropped a live session while stale: %v", i, err)
		}
	}

	c.StartStopped()
	if _, err := fleet[0].store.Revoke(victim.Serial, "while recovering"); err != nil {
		t.Fatal(err)
	}
	for i, m := range fleet {
		waitFor(t, fmt.Sprintf("gateway %d current again", i), func() bool { return m.watcher.Refresh() == nil })
		if err := m.gw.Probe(m.gw.ClientConfig(&agent)); err != nil {
			t.Errorf("gateway %d still refuses after recovery: %v", i, err)
		}
		if _, err := closed(live[i], 5*time.Second); err != nil {
			t.Errorf("gateway %d: the victim's session: %v", i, err)
		}
		if err := m.gw.Probe(m.gw.ClientConfig(&vkp)); err == nil {
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
	fleet := startFleet(t, c, fleetOptions{gateways: 2, maxStale: 2 * time.Second, endpoints: func(i int) []string {
		if i == 1 {
			return []string{c.Endpoint(2)}
		}
		return []string{c.Endpoint(0), c.Endpoint(1)}
	}})
	var victims []*pki.Issued
	var conns []net.Conn
	for i := range 5 {
		v := pkitest.Issue(t, fleet[0].store, fmt.Sprintf("victim%d", i), pki.RoleAgent, time.Hour)
		victims = append(victims, v)
		conns = append(conns, session(t, fleet[1].gw, pkitest.KeyPair(t, v)))
	}
	resyncs := fleet[1].watcher.Resyncs()
	c.Stop(2)
	for _, v := range victims {
		if _, err := fleet[0].store.Revoke(v.Serial, "during the disconnect"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the disconnected gateway stale", func() bool { return fleet[1].watcher.Refresh() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	rev, err := c.CompactNow(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted at revision %d", rev)
	c.Start(2)
	waitFor(t, "the disconnected gateway current again", func() bool { return fleet[1].watcher.Refresh() == nil })
	if got := fleet[1].watcher.Resyncs(); got <= resyncs {
		t.Errorf("resyncs %d -> %d: no full resync after the compaction", resyncs, got)
	}
	// Current again means every revocation is in: none may be missing.
	if n := fleet[1].watcher.Len(); n != len(victims) {
		t.Errorf("the gateway's view holds %d revocations once current, want %d", n, len(victims))
	}
	for i, conn := range conns {
		if _, err := closed(conn, 5*time.Second); err != nil {
			t.Errorf("victim %d: %v", i, err)
		}
	}
}

// TestConcurrentIssuanceNeverCollides: two gateways issue at once; every
// serial is recorded once, and a serial two issuers try to record at the
// same moment goes to exactly one of them (the CreateRevision==0 txn).
func TestConcurrentIssuanceNeverCollides(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	fleet := startFleet(t, c, fleetOptions{gateways: 2, maxStale: 5 * time.Second})
	const each = 20
	errs := make(chan error, 2*each)
	serials := make(chan string, 2*each)
	for g := range 2 {
		for i := range each {
			go func() {
				iss, err := fleet[g].store.Issue(pki.IssueRequest{Name: fmt.Sprintf("gw%d-%d", g, i), Duration: time.Hour})
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
	list, err := fleet[1].store.List()
	if err != nil || len(list) != 2*each {
		t.Fatalf("inventory: %d entries, %v; want %d", len(list), err, 2*each)
	}

	// The same serial from two gateways at the same moment, 20 times.
	for i := range 20 {
		rec := pki.IssuedCert{Serial: fmt.Sprintf("c0ffee%02x", i+1), Name: "race", Role: pki.RoleAgent}
		res := make(chan error, 2)
		for g := range 2 {
			go func() { res <- fleet[g].store.Records().AddIssued(rec) }()
		}
		e1, e2 := <-res, <-res
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("serial %s: both or neither recorded it: %v, %v", rec.Serial, e1, e2)
		}
	}
}

// TestGatewayWithoutCAKeyRefusesIssuance: a gateway deployed without the
// CA key serves, checks and revokes, but its issue tool says clearly why it
// cannot issue.
func TestGatewayWithoutCAKeyRefusesIssuance(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	fleet := startFleet(t, c, fleetOptions{gateways: 2, maxStale: 5 * time.Second, noCAKey: map[int]bool{1: true}})
	opCert := pkitest.KeyPair(t, pkitest.Issue(t, fleet[0].store, "ops", pki.RoleOperator, time.Hour))
	op := fleet[1].gw.Client(opCert)
	res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "new-agent"})
	text := fmt.Sprint(res.Content)
	if !res.IsError || !strings.Contains(text, "holds no CA key") {
		t.Fatalf("issue on a gateway without the CA key: error=%v %s", res.IsError, text)
	}
}
