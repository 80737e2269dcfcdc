package etcdstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/store/etcdstore"
	"github.com/nefia/nefia/store/etcdstore/fleettest"
)

// TestEtcdMissingStoreFailsClosed: a prefix holding no store marker (never
// created, deleted while the gateway runs, or mistyped) is never read as
// an empty revocation set: the gateway refuses handshakes, well before
// max_staleness, its view says why naming the prefix and the command that
// creates the store, and operations through the store refuse the same way.
func TestEtcdMissingStoreFailsClosed(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{})
	cli := c.Client(t)
	// The fleet's real store, which the "wrong prefix" gateway misses by
	// one transposed letter.
	if _, _, err := etcdstore.New(cli, "/right/").Create(time.Now()); err != nil {
		t.Fatal(err)
	}
	// Far above the bound the refusals are awaited within: they come from
	// the missing marker, not from staleness.
	const maxStale = time.Minute
	tests := []struct {
		name    string
		prefix  string
		create  bool // create the store before the gateway starts
		deleted bool // delete the whole prefix while the gateway runs
	}{
		{name: "never-created prefix", prefix: "/never-created/"},
		{name: "prefix deleted while running", prefix: "/deleted/", create: true, deleted: true},
		{name: "wrong prefix", prefix: "/rigth/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := fleettest.Start(t, c, fleettest.Options{Gateways: 1, MaxStale: maxStale, Prefix: tc.prefix, NoCreate: !tc.create})[0]
			// A certificate of the fleet's CA, issued from the files (the
			// etcd store may not exist).
			files := pki.NewStore(filepath.Dir(m.Store.Path(pki.CACertFile)))
			iss := pkitest.Issue(t, files, "agent", pki.RoleAgent, time.Hour)
			kp := pkitest.KeyPair(t, iss)
			if tc.deleted {
				if err := m.GW.Probe(m.GW.ClientConfig(&kp)); err != nil {
					t.Fatalf("before the deletion: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cli.Delete(ctx, tc.prefix, clientv3.WithPrefix())
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			took := fleettest.WaitFor(t, "handshakes refused", func() bool { return m.GW.Probe(m.GW.ClientConfig(&kp)) != nil })
			if took >= maxStale {
				t.Fatalf("refused only after %s, the staleness bound", took)
			}
			err := m.Watcher.Refresh()
			if !errors.Is(err, etcdstore.ErrNoStore) || !errors.Is(err, pki.ErrRevocationUnavailable) || !strings.Contains(err.Error(), tc.prefix) {
				t.Errorf("view: %v; want ErrNoStore naming %s", err, tc.prefix)
			}
			if !m.Watcher.Stale() {
				t.Error("metrics: the view is not reported stale")
			}
			for _, op := range []struct {
				what string
				err  error
			}{
				{"revoke", func() error { _, err := m.Store.Revoke(iss.Serial, "test"); return err }()},
				{"list", func() error { _, err := m.Store.List(); return err }()},
				{"issue", func() error {
					_, err := m.Store.Issue(pki.IssueRequest{Name: "x", Role: pki.RoleAgent, Duration: time.Hour})
					return err
				}()},
				{"health", m.Store.Records().(*etcdstore.Store).Health()},
			} {
				if !errors.Is(op.err, etcdstore.ErrNoStore) || !strings.Contains(op.err.Error(), tc.prefix) ||
					!strings.Contains(op.err.Error(), "nefia mtls store migrate --to etcd") {
					t.Errorf("%s: %v; want a refusal naming %s and the command that creates the store", op.what, op.err, tc.prefix)
				}
			}
			t.Logf("refused %s after start/deletion: %v", took.Round(time.Millisecond), err)
		})
	}
}
