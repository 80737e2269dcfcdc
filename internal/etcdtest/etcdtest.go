package etcdtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options shape a test cluster. The zero value is a 3-member plain-HTTP
// cluster.
type Options struct {
	// Members is the cluster size; 0 means 3, the smallest cluster that
	// survives losing a member.
	Members int
	// TLS serves clients over TLS and requires client certificates signed
	// by the cluster's CA (Cluster.CA, Cluster.TLSFiles), as a production
	// etcd does. Peers still talk plain HTTP on loopback.
	TLS bool
	// Binary is the etcd server; empty means etcd on PATH or /usr/bin/etcd.
	Binary string
	// StartTimeout bounds every wait for the cluster to be ready; 0 means
	// 60s, generous because CI machines are shared.
	StartTimeout time.Duration
	// HeartbeatInterval and ElectionTimeout are etcd's raft timings; 0
	// means etcd's defaults, 100ms and 1s. Shorter elections make
	// quorum-loss tests faster but flap on a loaded machine.
	HeartbeatInterval, ElectionTimeout time.Duration
}

// Cluster is a running etcd cluster owned by one test. Its methods fail
// the test that started it on error, so call them from that test's
// goroutine (or its subtests'), except Compact and CompactNow, which
// return errors and may run anywhere.
type Cluster struct {
	tb    testing.TB
	bin   string
	opts  Options
	dir   string
	token string

	ca          *CA
	serverFiles TLSFiles
	clientFiles TLSFiles
	clientTLS   *tls.Config

	mu      sync.Mutex // guards members' processes and ids
	members []*member
	ids     map[uint64]int // raft member ID -> index, learned from Status
	admin   *clientv3.Client
}

// Start starts a cluster of opts.Members members and waits until every
// member serves with a leader elected. t.Cleanup kills the members.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Members <= 0 {
		opts.Members = 3
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	if opts.ElectionTimeout <= 0 {
		opts.ElectionTimeout = time.Second
	}
	c := &Cluster{tb: t, bin: findBinary(t, opts.Binary), opts: opts, dir: t.TempDir()}
	scheme := "http"
	if opts.TLS {
		scheme = "https"
		c.setupTLS(t)
	}
	t.Cleanup(c.cleanup)

	// A free port can be taken by another process before etcd binds it:
	// try again with new ports (and a new cluster) a few times.
	var err error
	for attempt := range 3 {
		if err = c.launch(attempt, scheme); err == nil {
			break
		}
		if !c.portRace() {
			break
		}
		t.Logf("etcdtest: a port was taken before etcd bound it; retrying: %v", err)
		c.killAll()
	}
	if err != nil {
		c.fatal(err)
	}
	return c
}

// launch lays out and starts a fresh cluster and waits for it.
func (c *Cluster) launch(attempt int, scheme string) error {
	dir := filepath.Join(c.dir, fmt.Sprintf("try%d", attempt))
	ms, err := newMembers(dir, c.opts.Members, scheme)
	if err != nil {
		return err
	}
	c.token = "etcdtest-" + randomHex()
	c.mu.Lock()
	c.members = ms
	c.ids = map[uint64]int{}
	for i := range ms {
		if err := ms[i].start(c.bin, c.args(i)); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	if c.admin != nil {
		c.admin.Close()
	}
	c.admin, err = clientv3.New(c.ClientConfig())
	if err != nil {
		return fmt.Errorf("etcdtest: admin client: %w", err)
	}
	return c.waitReady(allIndexes(len(ms)))
}

// setupTLS makes the CA, the members' server certificate and a client
// certificate.
func (c *Cluster) setupTLS(t testing.TB) {
	t.Helper()
	c.ca = newCA(t, t.TempDir())
	// etcd 3.4's own gRPC gateway dials the member with the server
	// certificate as a client certificate when --client-cert-auth is on,
	// so it carries both usages.
	server := c.ca.Sign(t, Leaf{
		CN:          "etcdtest member",
		EKU:         []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	c.serverFiles = c.ca.WritePair(t, "server", server)
	client := c.ca.Sign(t, Leaf{CN: "nefia"})
	c.clientFiles = c.ca.WritePair(t, "client", client)
	c.clientTLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      c.ca.Pool(),
		Certificates: []tls.Certificate{client},
	}
}

// Endpoints are the members' client URLs, in member order, as a gateway's
// mcp.mtls.store.etcd.endpoints would list them.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL
	}
	return eps
}

// Endpoint is member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.members[i].clientURL }

// Members is the cluster size.
func (c *Cluster) Members() int { return len(c.members) }

// Quorum is the number of members that must run for writes to commit.
func (c *Cluster) Quorum() int { return len(c.members)/2 + 1 }

// CA is the cluster's CA when started with Options.TLS, else nil.
func (c *Cluster) CA() *CA { return c.ca }

// TLSFiles are the CA and a client certificate the members accept, for a
// gateway's ca_file, cert_file and key_file; zero without Options.TLS.
func (c *Cluster) TLSFiles() TLSFiles { return c.clientFiles }

// ClientConfig dials exactly Endpoints, with the client certificate under
// Options.TLS. It sets no AutoSyncInterval (a synced client would wander
// off to the members' advertised URLs) and no RejectOldCluster (the 3.7
// client rejects the 3.4 server).
func (c *Cluster) ClientConfig() clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if c.clientTLS != nil {
		cfg.TLS = c.clientTLS.Clone()
	}
	return cfg
}

// Client is a new client of ClientConfig, closed by t.Cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(c.ClientConfig())
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Running reports whether member i's process runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].running()
}

// running lists the indexes of running members.
func (c *Cluster) running() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var idx []int
	for i, m := range c.members {
		if m.running() {
			idx = append(idx, i)
		}
	}
	return idx
}

// Stop stops member i gracefully (SIGTERM, then SIGKILL after 10s) and
// waits for it to exit. Its data stays for Start.
func (c *Cluster) Stop(i int) { c.stopMember(i, syscall.SIGTERM, stopGrace) }

// Kill kills member i (SIGKILL, a crash) and waits for it to exit. Its
// data stays for Start.
func (c *Cluster) Kill(i int) { c.stopMember(i, syscall.SIGKILL, 0) }

// stopMember waits without holding the lock, so StopQuorum's stops run
// in parallel.
func (c *Cluster) stopMember(i int, sig os.Signal, grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.members[i].cmd, c.members[i].done
	c.mu.Unlock()
	stop(cmd, done, sig, grace)
}

// Pause freezes member i (SIGSTOP): its connections stay open but nothing
// answers, like a hung host or a partition that drops packets, which a
// client notices only by timeouts. Resume undoes it; Stop and Kill work on
// a paused member.
func (c *Cluster) Pause(i int) {
	c.tb.Helper()
	c.signal(i, sigStop)
	if err := waitStopped(c.members[i].cmd.Process.Pid); err != nil {
		c.fatal(err)
	}
}

// Resume continues member i after Pause.
func (c *Cluster) Resume(i int) {
	c.tb.Helper()
	c.signal(i, sigCont)
}

func (c *Cluster) signal(i int, sig syscall.Signal) {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if !m.running() {
		c.tb.Fatalf("etcdtest: signal %v: member %d is not running", sig, i)
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		c.tb.Fatalf("etcdtest: signal %v to member %d: %v", sig, i, err)
	}
}

// Start restarts stopped member i with its data. When a quorum then runs,
// it waits until every running member is ready; otherwise it returns once
// the process is started, because no member serves clients without a
// quorum (start more members, or use StartStopped).
func (c *Cluster) Start(i int) {
	c.tb.Helper()
	c.startMembers([]int{i})
}

// StopQuorum stops the last Quorum() members (for 3 members: 1 and 2), so
// the remaining ones cannot commit anything, and returns their indexes.
func (c *Cluster) StopQuorum() []int {
	n := len(c.members)
	idx := allIndexes(n)[n-c.Quorum():]
	var wg sync.WaitGroup
	for _, i := range idx {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
	return idx
}

// StartStopped restarts every stopped member and waits until all are ready.
func (c *Cluster) StartStopped() {
	c.tb.Helper()
	var idx []int
	for i := range c.members {
		if !c.Running(i) {
			idx = append(idx, i)
		}
	}
	c.startMembers(idx)
}

func (c *Cluster) startMembers(idx []int) {
	c.tb.Helper()
	c.mu.Lock()
	for _, i := range idx {
		if c.members[i].running() {
			c.mu.Unlock()
			c.tb.Fatalf("etcdtest: Start(%d): member %d is running", i, i)
		}
		if err := c.members[i].start(c.bin, c.args(i)); err != nil {
			c.mu.Unlock()
			c.fatal(err)
		}
	}
	c.mu.Unlock()
	if run := c.running(); len(run) >= c.Quorum() {
		if err := c.waitReady(run); err != nil {
			c.fatal(err)
		}
	}
}

// WaitReady waits until every running member serves and follows a
// running leader: after Kill or Stop of the leader, the cluster has
// elected a new one.
func (c *Cluster) WaitReady() {
	c.tb.Helper()
	if err := c.waitReady(c.running()); err != nil {
		c.fatal(err)
	}
}

// Leader is the index of the member that is the raft leader, by asking
// the running members; -1 when none knows a leader. A paused member holds
// it up to ctx's deadline.
func (c *Cluster) Leader(ctx context.Context) int {
	for _, i := range c.running() {
		st, err := c.admin.Status(ctx, c.Endpoint(i))
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// Compact compacts the keyspace at rev (physically, so a watch from an
// older revision fails with ErrCompacted right after).
func (c *Cluster) Compact(ctx context.Context, rev int64) error {
	if _, err := c.admin.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("etcdtest: compacting at %d: %w", rev, err)
	}
	return nil
}

// CompactNow compacts at the current revision, which it returns: every
// older revision is gone, as after etcd's auto-compaction during a long
// disconnect.
func (c *Cluster) CompactNow(ctx context.Context) (int64, error) {
	resp, err := c.admin.Get(ctx, "etcdtest/compact-probe")
	if err != nil {
		return 0, fmt.Errorf("etcdtest: reading the current revision: %w", err)
	}
	rev := resp.Header.Revision
	if err := c.Compact(ctx, rev); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return 0, err
	}
	return rev, nil
}

// waitReady polls until each member in idx answers Status with a leader and
// a linearizable read through the cluster succeeds, or StartTimeout passes,
// or a member exits.
func (c *Cluster) waitReady(idx []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// Every pass checks every member: which leader each one follows can
		// change until all agree.
		pending := slices.Clone(idx)
		for _, i := range pending {
			if !c.Running(i) {
				return fmt.Errorf("%w: %s:\n%s", errExited, c.members[i].name, c.members[i].logTail(30))
			}
		}
		pending = slices.DeleteFunc(pending, func(i int) bool {
			err := c.ready(ctx, i)
			if err != nil {
				last = err
			}
			return err == nil
		})
		if len(pending) == 0 {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			_, err := c.admin.Get(rctx, "etcdtest/ready")
			rcancel()
			if err == nil {
				return nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdtest: members %v not ready after %v: %w", pending, c.opts.StartTimeout, last)
		case <-tick.C:
		}
	}
}

// ready checks member i once: it answers, and the leader it follows is a
// running member (right after the leader is killed, followers still name
// it for up to an election timeout, and writes through them time out).
func (c *Cluster) ready(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := c.admin.Status(ctx, c.Endpoint(i))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.ids[st.Header.MemberId] = i
	leader, known := c.ids[st.Leader]
	leaderUp := known && c.members[leader].running()
	c.mu.Unlock()
	switch {
	case st.Leader == 0:
		return fmt.Errorf("etcdtest: %s knows no leader", c.members[i].name)
	case !leaderUp:
		return fmt.Errorf("etcdtest: %s follows a leader that is not a running member", c.members[i].name)
	case len(st.Errors) > 0:
		return fmt.Errorf("etcdtest: %s: %v", c.members[i].name, st.Errors)
	}
	return nil
}

// portRace reports whether a member exited because its port was taken.
func (c *Cluster) portRace() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if !m.running() && m.done != nil && m.portTaken() {
			return true
		}
	}
	return false
}

func (c *Cluster) killAll() {
	for i := range c.members {
		c.Kill(i)
	}
}

// cleanup kills every member, logging their logs' tails if the test failed.
func (c *Cluster) cleanup() {
	if c.admin != nil {
		c.admin.Close()
	}
	c.killAll()
	if c.tb.Failed() {
		for _, m := range c.members {
			c.tb.Logf("etcdtest: last lines of %s (%s):\n%s", m.name, m.logPath, m.logTail(15))
		}
	}
}

// fatal fails the test with err; cleanup then logs the members' logs.
func (c *Cluster) fatal(err error) {
	c.tb.Helper()
	c.tb.Fatal(err)
}

// Prefix is a key prefix no other test uses, "/etcdtest/<test name>-<random>/",
// so tests can share one cluster (started once, in a parent test) and
// still see only their own keys and watch events.
func Prefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, t.Name())
	return "/etcdtest/" + name + "-" + randomHex() + "/"
}

func allIndexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
