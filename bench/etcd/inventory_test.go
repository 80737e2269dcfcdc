package etcd

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/store/etcdstore"
)

// fillIssued stores n inventory entries (each with its by-name index key,
// as an issuance writes them) under prefix, which Create made a store.
func fillIssued(b *testing.B, cli *clientv3.Client, prefix string, n int) {
	if _, _, err := etcdstore.New(cli, prefix).Create(time.Now()); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for i := 0; i < n; i += 64 {
		var puts []clientv3.Op
		for j := i; j < min(n, i+64); j++ {
			serial := fmt.Sprintf("%x", 0x30000000+j)
			name := fmt.Sprintf("filler-%d", j%1000)
			v := fmt.Sprintf(`{"serial":%q,"name":%q,"role":"agent","not_before":%q,"not_after":%q}`,
				serial, name, now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
			puts = append(puts, clientv3.OpPut(prefix+"issued/"+serial, v), clientv3.OpPut(prefix+"names/"+name+"/"+serial, v))
		}
		if _, err := cli.Txn(context.Background()).Then(puts...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueRevokeInventory (issue 15, fix 2): an operator's issuance
// (ops.Issue, which looks for the name's active certificates) and an
// agent's revocation (ops.Revoke, which looks up the target's role) with
// 10 vs 100,000 certificates already issued, alternated call by call.
// Both must read per key, so the ratio of medians is ~1.
func BenchmarkIssueRevokeInventory(b *testing.B) {
	c := etcdtest.Start(b, etcdtest.Options{})
	cli := c.Client(b)
	small, large := "/inv-10/", "/inv-100k/"
	fillIssued(b, cli, small, 10)
	start := time.Now()
	fillIssued(b, cli, large, 100_000)
	b.Logf("stored 100,000 issued certificates in %s", time.Since(start).Round(time.Millisecond))
	base := pkitest.NewStore(b)
	dir := filepath.Dir(base.Path(pki.CACertFile))
	svc := map[string]*ops.Service{}
	for _, p := range []string{small, large} {
		store := pki.NewStore(dir, pki.WithRecords(etcdstore.New(cli, p)))
		svc[p] = &ops.Service{Store: store, ConfigPath: filepath.Join(b.TempDir(), "nefia.yaml")}
	}
	operator := identity.Agent{Name: "ops", Role: pki.RoleOperator, Transport: identity.TransportCLI}
	agent := identity.Agent{Name: "bot", Serial: "0a", Role: pki.RoleAgent, Transport: identity.TransportStream}
	const n = 60
	issue, revoke := map[string][]time.Duration{}, map[string][]time.Duration{}
	ctx := context.Background()
	for i := range n {
		for _, p := range []string{small, large} {
			t0 := time.Now()
			res, err := svc[p].Issue(ctx, operator, ops.IssueRequest{Name: fmt.Sprintf("agent-%d", i), Duration: "1h", OutDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			issue[p] = append(issue[p], time.Since(t0))
			t0 = time.Now()
			if _, err := svc[p].Revoke(ctx, agent, ops.RevokeRequest{Serial: res.Serial, Reason: "bench"}); err != nil {
				b.Fatal(err)
			}
			revoke[p] = append(revoke[p], time.Since(t0))
		}
	}
	for _, m := range []struct {
		what string
		lat  map[string][]time.Duration
	}{{"issue", issue}, {"revoke", revoke}} {
		s50, l50 := quantile(m.lat[small], .5), quantile(m.lat[large], .5)
		b.ReportMetric(float64(l50)/float64(s50), m.what+"-100k/10")
		b.Logf("%s latency: 10 issued p50 %.2f ms p99 %.2f ms; 100,000 issued p50 %.2f ms p99 %.2f ms; ratio of medians %.3fx",
			m.what, ms(s50), ms(quantile(m.lat[small], .99)), ms(l50), ms(quantile(m.lat[large], .99)), float64(l50)/float64(s50))
	}
}
