package etcdstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/store/etcdstore"
)

// TestEtcdOperationsReadPerKey: issuing (with its look-up of the name's
// active certificates), an agent's revocation (with its look-up of the
// target's role), a renewal's revocation check and revoke --name's
// selection read the keys they need, never the whole inventory: an
// unreadable entry of another certificate, which any read of everything
// trips over, leaves them working (issue 15, fix 2; the figures are
// BenchmarkIssueRevokeInventory's).
func TestEtcdOperationsReadPerKey(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	cli := c.Client(t)
	const prefix = "/perkey/"
	es := etcdstore.New(cli, prefix)
	if _, _, err := es.Create(time.Now()); err != nil {
		t.Fatal(err)
	}
	base := pkitest.NewStore(t)
	store := pki.NewStore(filepath.Dir(base.Path(pki.CACertFile)), pki.WithRecords(es))
	svc := &ops.Service{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml")}
	ctx := context.Background()
	operator := identity.Agent{Name: "ops", Role: pki.RoleOperator, Transport: identity.TransportCLI}
	first, err := svc.Issue(ctx, operator, ops.IssueRequest{Name: "a", Duration: "1h", OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's entry, unreadable.
	for _, key := range []string{prefix + "issued/ffff", prefix + "names/other/ffff", prefix + "revoked/ffff"} {
		if _, err := cli.Put(ctx, key, "{not json"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.List(); err == nil {
		t.Fatal("List read past the unreadable entry: the test proves nothing")
	}
	if _, err := store.Revocations(); err == nil {
		t.Fatal("Revocations read past the unreadable revocation: the test proves nothing")
	}
	second, err := svc.Issue(ctx, operator, ops.IssueRequest{Name: "a", Duration: "1h", OutDir: t.TempDir(), Force: true})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if len(second.PreviousActive) != 1 || second.PreviousActive[0] != first.Serial {
		t.Errorf("issue-client --force warning: previous active %v, want [%s]", second.PreviousActive, first.Serial)
	}
	named, err := store.ListNamed("a")
	if err != nil || len(named) != 2 {
		t.Fatalf("ListNamed(a): %d, %v; want both certificates", len(named), err)
	}
	agent := identity.Agent{Name: "bot", Serial: "0a", Role: pki.RoleAgent, Transport: identity.TransportStream}
	if _, err := svc.Revoke(ctx, agent, ops.RevokeRequest{Serial: first.Serial, Reason: "test"}); err != nil {
		t.Fatalf("agent revoke: %v", err)
	}
	if _, revoked, err := store.RevocationOf(first.Serial); err != nil || !revoked {
		t.Errorf("RevocationOf(%s): %v, %v; want revoked", first.Serial, revoked, err)
	}
	got, ok, err := store.Lookup(first.Serial)
	if err != nil || !ok || got.State != pki.StateRevoked || got.Name != "a" {
		t.Errorf("Lookup(%s): %+v %v %v; want a, revoked", first.Serial, got, ok, err)
	}
	// ListNamed is in key (serial) order, and serials are random: judge
	// each certificate by its serial, not its place.
	named, err = store.ListNamed("a")
	states := map[string]pki.CertState{}
	for _, c := range named {
		states[c.Serial] = c.State
	}
	if err != nil || len(named) != 2 || states[first.Serial] != pki.StateRevoked || states[second.Serial] != pki.StateActive {
		t.Errorf("ListNamed(a) after the revocation: %+v, %v; want %s revoked and %s active", named, err, first.Serial, second.Serial)
	}
}
