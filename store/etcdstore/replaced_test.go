package etcdstore_test

import (
	"context"
	"errors"
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

// TestEtcdReplacedStoreFailsClosed: a store deleted and created again under
// the same prefix (a new store id, no revocations) is not read as "nothing
// is revoked": the gateway refuses handshakes, the revoked certificate
// among them, and says the store was replaced. Before, it logged the
// deletion, resynced from the new, empty store and admitted the revoked
// certificate.
func TestEtcdReplacedStoreFailsClosed(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{})
	cli := c.Client(t)
	const prefix = "/replaced/"
	m := fleettest.Start(t, c, fleettest.Options{Gateways: 1, MaxStale: time.Minute, Prefix: prefix})[0]
	iss := pkitest.Issue(t, m.Store, "stolen", pki.RoleAgent, time.Hour)
	kp := pkitest.KeyPair(t, iss)
	if _, err := m.Store.Revoke(iss.Serial, "stolen"); err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, "the revocation refused", func() bool {
		return errors.Is(m.Watcher.Check(kp.Leaf), pki.ErrRevoked)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, created, err := etcdstore.New(cli, prefix).Create(time.Now()); err != nil || !created {
		t.Fatalf("create the store again: created %v, %v", created, err)
	}
	fleettest.WaitFor(t, "the replaced store refused", func() bool {
		err := m.Watcher.Refresh()
		return err != nil && strings.Contains(err.Error(), "was replaced")
	})
	if err := m.Watcher.Check(kp.Leaf); !errors.Is(err, pki.ErrRevocationUnavailable) && !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("check of the revoked certificate after the store was replaced: %v, want a refusal", err)
	}
	if err := m.GW.Probe(m.GW.ClientConfig(&kp)); err == nil {
		t.Error("the revoked certificate was admitted by a gateway whose store was replaced")
	}
}
