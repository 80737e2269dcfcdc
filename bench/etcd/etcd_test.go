// Package etcd benchmarks the etcd store backend (issue 15 item 6) against
// a real 3-member etcd cluster on loopback and real gateways:
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/etcd/
//
// BenchmarkRevocationPropagation: revoke call -> the certificate's live
// session closed on each of 3 gateways, p50/p99 over 100 revocations.
// BenchmarkHandshakeEtcdVsFile: full handshakes (plus a ping) per second on
// a gateway whose revocations come from etcd vs from the file, alternated.
// BenchmarkRevokeLatency: a revoke's latency with 100,000 revoked serials
// stored vs 10, alternated.
//
// The machine these run on is shared and noisy: read the ratios, which
// come from alternated rounds, rather than the absolute figures.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/store/etcdstore"
	"github.com/nefia/nefia/store/etcdstore/fleettest"
)

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func BenchmarkRevocationPropagation(b *testing.B) {
	c := etcdtest.Start(b, etcdtest.Options{})
	// The gateway's production poll (200 ms) stays on; the watch's
	// notification is what should close the sessions first.
	fleet := fleettest.Start(b, c, fleettest.Options{Gateways: 3, MaxStale: 10 * time.Second, Poll: 200 * time.Millisecond})
	const n = 100
	var samples, afterCall []time.Duration
	for i := range n {
		victim := pkitest.Issue(b, fleet[0].Store, fmt.Sprintf("victim%d", i), pki.RoleAgent, time.Hour)
		kp := pkitest.KeyPair(b, victim)
		var conns []net.Conn
		for _, m := range fleet {
			conns = append(conns, fleettest.Session(b, m.GW, kp))
		}
		closedAt := make([]time.Time, len(conns))
		var wg sync.WaitGroup
		for j, conn := range conns {
			wg.Go(func() {
				_ = conn.SetReadDeadline(time.Now().Add(fleettest.WaitLimit))
				_, _ = io.Copy(io.Discard, conn)
				closedAt[j] = time.Now()
			})
		}
		start := time.Now()
		// As the CLI does: through the store, no gateway closes anything
		// directly; each gateway, the revoking one included, learns of it
		// from the watch. The revoking gateway rotates.
		if _, err := fleet[i%len(fleet)].Store.Revoke(victim.Serial, "bench"); err != nil {
			b.Fatal(err)
		}
		returned := time.Now()
		wg.Wait()
		for j, at := range closedAt {
			d := at.Sub(start)
			if d > fleettest.WaitLimit {
				b.Fatalf("revocation %d: session on gateway %d not closed", i, j)
			}
			samples = append(samples, d)
			afterCall = append(afterCall, max(0, at.Sub(returned)))
			conns[j].Close()
		}
	}
	p50, p99, worst := quantile(samples, .5), quantile(samples, .99), quantile(samples, 1)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(worst), "max-ms")
	b.Logf("revocation propagation over %d revocations x 3 gateways: p50 %.1f ms, p99 %.1f ms, max %.1f ms (after the revoke call returned: p50 %.1f ms, p99 %.1f ms)",
		n, ms(p50), ms(p99), ms(worst), ms(quantile(afterCall, .5)), ms(quantile(afterCall, .99)))
}

// handshakes runs workers doing Probe (full handshake + ping) for d and
// returns how many succeeded.
func handshakes(b *testing.B, gw *servertest.Gateway, cfg *tls.Config, workers int, d time.Duration) int {
	var mu sync.Mutex
	total := 0
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			n := 0
			for time.Now().Before(deadline) {
				if err := gw.Probe(cfg); err != nil {
					b.Errorf("handshake on %s: %v", gw.Addr, err)
					return
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

func BenchmarkHandshakeEtcdVsFile(b *testing.B) {
	c := etcdtest.Start(b, etcdtest.Options{})
	etcdGW := fleettest.Start(b, c, fleettest.Options{Gateways: 1, MaxStale: 10 * time.Second})[0]
	fileGW := servertest.Start(b)
	// Ten revocations in each store, so neither checks an empty set.
	for i := range 10 {
		for _, s := range []*pki.Store{etcdGW.Store, fileGW.Store} {
			iss := pkitest.Issue(b, s, fmt.Sprintf("revoked%d", i), pki.RoleAgent, time.Hour)
			if _, err := s.Revoke(iss.Serial, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	}
	etcdKP := pkitest.KeyPair(b, pkitest.Issue(b, etcdGW.Store, "agent", pki.RoleAgent, time.Hour))
	fileKP := fileGW.Cert("agent", pki.RoleAgent)
	etcdCfg, fileCfg := etcdGW.GW.ClientConfig(&etcdKP), fileGW.ClientConfig(&fileKP)
	b.Logf("etcd gateway %s, file gateway %s", etcdGW.GW.Addr, fileGW.Addr)
	const rounds, workers = 20, 2
	round := 300 * time.Millisecond
	var ratios []float64
	var sumE, sumF int
	for r := range rounds {
		// Alternate which goes first, so drift in the machine's load
		// does not favour one side.
		var e, f int
		if r%2 == 0 {
			e = handshakes(b, etcdGW.GW, etcdCfg, workers, round)
			f = handshakes(b, fileGW, fileCfg, workers, round)
		} else {
			f = handshakes(b, fileGW, fileCfg, workers, round)
			e = handshakes(b, etcdGW.GW, etcdCfg, workers, round)
		}
		sumE, sumF = sumE+e, sumF+f
		ratios = append(ratios, float64(e)/float64(f))
		if testing.Verbose() {
			b.Logf("round %d: etcd %d, file %d handshakes in %s (%.3fx)", r+1, e, f, round, float64(e)/float64(f))
		}
	}
	slices.Sort(ratios)
	median := (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	b.ReportMetric(float64(sumE)/float64(rounds)/round.Seconds(), "etcd-hs/s")
	b.ReportMetric(float64(sumF)/float64(rounds)/round.Seconds(), "file-hs/s")
	b.ReportMetric(median, "etcd/file")
	b.Logf("handshakes: etcd %.0f/s, file %.0f/s, median round ratio %.3fx, total ratio %.3fx",
		float64(sumE)/float64(rounds)/round.Seconds(), float64(sumF)/float64(rounds)/round.Seconds(), median, float64(sumE)/float64(sumF))
}

// fill stores n revocations under prefix directly, 128 per transaction
// (etcd's default --max-txn-ops).
func fill(b *testing.B, cli *clientv3.Client, prefix string, n int) {
	ctx := context.Background()
	if _, _, err := etcdstore.New(cli, prefix).Create(time.Now()); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 128 {
		var ops []clientv3.Op
		for j := i; j < min(n, i+128); j++ {
			serial := fmt.Sprintf("%x", 0x10000000+j)
			ops = append(ops, clientv3.OpPut(prefix+"revoked/"+serial, `{"serial":"`+serial+`","name":"filler"}`))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRevokeLatency(b *testing.B) {
	c := etcdtest.Start(b, etcdtest.Options{})
	cli := c.Client(b)
	small, large := "/bench-10/", "/bench-100k/"
	fill(b, cli, small, 10)
	start := time.Now()
	fill(b, cli, large, 100_000)
	b.Logf("stored 100,000 revocations in %s", time.Since(start).Round(time.Millisecond))
	stores := map[string]*pki.Store{}
	for _, p := range []string{small, large} {
		stores[p] = pki.NewStore(b.TempDir(), pki.WithRecords(etcdstore.New(cli, p)))
	}
	const n = 100
	lat := map[string][]time.Duration{}
	for i := range n {
		// Alternate the two stores, revocation by revocation.
		for _, p := range []string{small, large} {
			serial := fmt.Sprintf("%x", 0x20000000+i)
			t0 := time.Now()
			if _, err := stores[p].Revoke(serial, "bench"); err != nil {
				b.Fatal(err)
			}
			lat[p] = append(lat[p], time.Since(t0))
		}
	}
	s50, l50 := quantile(lat[small], .5), quantile(lat[large], .5)
	s99, l99 := quantile(lat[small], .99), quantile(lat[large], .99)
	b.ReportMetric(ms(s50), "10-p50-ms")
	b.ReportMetric(ms(l50), "100k-p50-ms")
	b.ReportMetric(float64(l50)/float64(s50), "100k/10")
	b.Logf("revoke latency: 10 stored p50 %.2f ms p99 %.2f ms; 100,000 stored p50 %.2f ms p99 %.2f ms; ratio of medians %.3fx",
		ms(s50), ms(s99), ms(l50), ms(l99), float64(l50)/float64(s50))
}

// BenchmarkCheck is the only per-handshake work that differs between the
// backends: the revocation check, etcd's map look-up vs the file checker's
// stat, with 10,000 revoked serials in each.
func BenchmarkCheck(b *testing.B) {
	c := etcdtest.Start(b, etcdtest.Options{Members: 1})
	cli := c.Client(b)
	fill(b, cli, fleettest.Prefix, 10_000)
	w := etcdstore.NewWatcher(cli, fleettest.Prefix, 10*time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	<-w.Loaded()
	store := pkitest.NewStore(b)
	for i := range 10_000 {
		if _, err := store.Revoke(fmt.Sprintf("%x", 0x10000000+i), ""); err != nil && i < 10 {
			b.Fatal(err)
		}
		if i == 50 {
			break // the file's size barely matters to a stat; 50 keep this quick
		}
	}
	file := pki.NewRevocationChecker(store.Path(pki.RevokedFile))
	cert := pkitest.Issue(b, store, "agent", pki.RoleAgent, time.Hour)
	leaf, err := pki.ParseCertificatePEM(cert.CertPEM)
	if err != nil {
		b.Fatal(err)
	}
	// Alternated batches of checks, so both sides see the same machine.
	const batches, per = 10, 20_000
	var tE, tF time.Duration
	for i := range batches {
		for _, side := range []string{"etcd", "file"} {
			if i%2 == 1 {
				side = map[string]string{"etcd": "file", "file": "etcd"}[side]
			}
			var r interface{ Check(*x509.Certificate) error } = w
			if side == "file" {
				r = file
			}
			t0 := time.Now()
			for range per {
				if err := r.Check(leaf); err != nil {
					b.Fatal(err)
				}
			}
			if side == "etcd" {
				tE += time.Since(t0)
			} else {
				tF += time.Since(t0)
			}
		}
	}
	nsE, nsF := float64(tE.Nanoseconds())/batches/per, float64(tF.Nanoseconds())/batches/per
	b.ReportMetric(nsE, "etcd-ns/check")
	b.ReportMetric(nsF, "file-ns/check")
	b.Logf("revocation check: etcd %.0f ns, file %.0f ns (alternated batches of %d)", nsE, nsF, per)
}
