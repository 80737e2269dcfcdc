package etcdtest

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, cli *clientv3.Client, k, v string) *clientv3.PutResponse {
	t.Helper()
	resp, err := cli.Put(ctxT(t, 10*time.Second), k, v)
	if err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
	return resp
}

func get(t *testing.T, cli *clientv3.Client, k string) string {
	t.Helper()
	resp, err := cli.Get(ctxT(t, 10*time.Second), k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) != 1 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestClusterServesKVTxnWatch: three members start, and the 3.7 client
// does what the store backend needs against the 3.4 server: KV, a
// create-only transaction, and a watch.
func TestClusterServesKVTxnWatch(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := Start(t, Options{})
	t.Logf("3 members ready in %v", time.Since(start).Round(time.Millisecond))
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("endpoints: got %d, want 3", got)
	}
	cli := c.Client(t)
	if got := cli.Endpoints(); !slices.Equal(got, c.Endpoints()) {
		t.Errorf("client endpoints %v, want exactly %v", got, c.Endpoints())
	}

	ctx := ctxT(t, 30*time.Second)
	wch := cli.Watch(ctx, "/nefia/revoked/", clientv3.WithPrefix())
	rev := put(t, cli, "/nefia/revoked/01", "r1").Header.Revision

	// Create-if-absent, as issuance claims a serial: the second one loses.
	create := func(k string) bool {
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, "x")).
			Commit()
		if err != nil {
			t.Fatalf("txn %s: %v", k, err)
		}
		return resp.Succeeded
	}
	if !create("/nefia/issued/aa") {
		t.Error("first create of a new key failed")
	}
	if create("/nefia/issued/aa") {
		t.Error("second create of the same key succeeded")
	}

	select {
	case wr := <-wch:
		if err := wr.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "/nefia/revoked/01" || wr.Events[0].Kv.ModRevision != rev {
			t.Errorf("watch events %v, want the put at revision %d", wr.Events, rev)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}

	// A progress request answers with a revision and no events: how a
	// watcher learns it is current while nothing changes (etcd >= 3.4).
	// The revision is the serving member's, which may lag a write just
	// acknowledged by the leader; and etcd 3.4.23 (Debian's) may send it
	// ahead of events still queued for an unsynced watcher (etcd issue
	// 15220, fixed in 3.4.24/3.5.8): only an event seen on the watch
	// proves everything before it was delivered.
	if err := cli.RequestProgress(ctx); err != nil {
		t.Fatalf("request progress: %v", err)
	}
	select {
	case wr := <-wch:
		if !wr.IsProgressNotify() || wr.Header.Revision < rev {
			t.Errorf("after RequestProgress: progress %v at revision %d, want a progress notification at >= %d", wr.IsProgressNotify(), wr.Header.Revision, rev)
		}
	case <-ctx.Done():
		t.Fatal("no progress notification")
	}
	for i := range c.Members() {
		if !c.Running(i) {
			t.Errorf("member %d not running", i)
		}
	}
}

// TestMemberLossKeepsQuorum: killing one member (the leader, the worst
// case) leaves the cluster writable; restarted with its data, it catches
// up with what was written meanwhile.
func TestMemberLossKeepsQuorum(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{})
	cli := c.Client(t)
	leader := c.Leader(ctxT(t, 10*time.Second))
	if leader < 0 {
		t.Fatal("no leader")
	}
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatal("killed member still running")
	}
	// A write issued in the election window may time out (etcd answers
	// "request timed out" after ~7s); a store backend retries it. Here,
	// wait for the new leader.
	c.WaitReady()
	if got := c.Leader(ctxT(t, 10*time.Second)); got == leader || got < 0 {
		t.Fatalf("leader after killing member %d: %d", leader, got)
	}
	put(t, cli, "k", "written while a member was down")
	c.Start(leader)

	// Read through the restarted member alone.
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(leader)}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if got := get(t, one, "k"); got != "written while a member was down" {
		t.Errorf("restarted member reads %q", got)
	}
}

// TestQuorumLossFailsWrites: with a quorum stopped, a Put fails within its
// deadline instead of succeeding on the minority; once the members are
// back, writes succeed again and nothing was lost.
func TestQuorumLossFailsWrites(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{})
	cli := c.Client(t)
	put(t, cli, "before", "1")
	// A watch that requires a leader ends when the quorum is gone: what a
	// gateway watches to notice that its view can no longer be confirmed.
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(t.Context()))
	defer wcancel()
	wch := cli.Watch(wctx, "/nefia/", clientv3.WithPrefix())
	stopped := c.StopQuorum()
	lost := time.Now()
	if len(stopped) != 2 {
		t.Fatalf("StopQuorum stopped %v, want 2 members", stopped)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := cli.Put(ctx, "during", "x")
	if err == nil {
		t.Fatal("put without a quorum succeeded")
	}
	t.Logf("put without a quorum failed after %v: %v", time.Since(begin).Round(time.Millisecond), err)

	select {
	case wr, ok := <-wch:
		if ok && !errors.Is(wr.Err(), rpctypes.ErrNoLeader) {
			t.Errorf("leader-requiring watch without a quorum: %v, want ErrNoLeader", wr.Err())
		}
		t.Logf("leader-requiring watch ended %v after the quorum stopped (open %v): %v", time.Since(lost).Round(time.Millisecond), ok, wr.Err())
	case <-time.After(30 * time.Second):
		t.Error("leader-requiring watch still open 30s after the quorum stopped")
	}

	c.StartStopped()
	put(t, cli, "after", "1")
	if got := get(t, cli, "before"); got != "1" {
		t.Errorf("before: %q", got)
	}
}

// TestCompactNow: after CompactNow, older revisions are gone for reads
// and for a watch resuming from one, which sees ErrCompacted: the signal
// that makes a gateway resync fully.
func TestCompactNow(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{Members: 1})
	cli := c.Client(t)
	old := put(t, cli, "k", "1").Header.Revision
	put(t, cli, "k", "2")
	ctx := ctxT(t, 30*time.Second)
	rev, err := c.CompactNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev <= old {
		t.Fatalf("compacted at %d, not after %d", rev, old)
	}
	if _, err := cli.Get(ctx, "k", clientv3.WithRev(old)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("get at a compacted revision: %v, want ErrCompacted", err)
	}
	wr := <-cli.Watch(ctx, "k", clientv3.WithRev(old))
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) || wr.CompactRevision != rev {
		t.Errorf("watch from a compacted revision: err %v, compact revision %d; want ErrCompacted at %d", wr.Err(), wr.CompactRevision, rev)
	}
	// Compacting again at the same revision is not an error for CompactNow.
	if _, err := c.CompactNow(ctx); err != nil {
		t.Errorf("second CompactNow: %v", err)
	}
}

// TestTLSCluster: with Options.TLS, members require a client certificate
// from the cluster's CA: the one in TLSFiles works, none is refused.
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{Members: 1, TLS: true})
	f := c.TLSFiles()
	for _, p := range []string{f.CAFile, f.CertFile, f.KeyFile} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TLS file: %v", err)
		}
	}
	put(t, c.Client(t), "k", "v")

	cfg := c.ClientConfig()
	cfg.TLS.Certificates = nil
	cli, err := clientv3.New(cfg)
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err = cli.Put(ctx, "k", "without a client certificate")
	}
	if err == nil {
		t.Error("put without a client certificate succeeded")
	}
}

// TestPausedMemberTimesOut: a paused single member leaves its client
// connected but unanswered, so a Put ends by its deadline; resumed, it
// serves again. Stop works on a paused member.
func TestPausedMemberTimesOut(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{Members: 1})
	cli := c.Client(t)
	put(t, cli, "k", "1")
	c.Pause(0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("put to a paused member: %v, want context.DeadlineExceeded", err)
	}
	c.Resume(0)
	put(t, cli, "k", "3")
	c.Pause(0)
	c.Stop(0)
	if c.Running(0) {
		t.Error("paused member still running after Stop")
	}
}

// TestPrefix: prefixes are distinct per call and carry the test's name
// without path separators inside it.
func TestPrefix(t *testing.T) {
	t.Parallel()
	t.Run("sub test", func(t *testing.T) {
		a, b := Prefix(t), Prefix(t)
		if a == b {
			t.Errorf("two prefixes are equal: %s", a)
		}
		if !strings.HasPrefix(a, "/etcdtest/TestPrefix_sub_test-") || !strings.HasSuffix(a, "/") || strings.Count(a, "/") != 3 {
			t.Errorf("prefix %q", a)
		}
	})
}
