package pki_test

import (
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
)

// These benchmarks use only the public API that the base of issue 16 has
// too, so bench/store16.sh can run the same file against both and
// alternate them (the machine is shared: only ratios mean anything).

// seedStore initializes a state directory holding certs issued
// certificates and revs revocations (of other serials), written in one
// ImportRecords call rather than certs issuances.
func seedStore(b *testing.B, certs, revs int) *pki.Store {
	b.Helper()
	s := pki.NewStore(filepath.Join(b.TempDir(), "state"))
	if _, err := s.Init(pki.InitOptions{Hosts: []string{"localhost"}}); err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	inv := make([]pki.IssuedCert, certs)
	for i := range inv {
		inv[i] = pki.IssuedCert{Serial: benchSerial(b), Name: fmt.Sprintf("seed-%d", i), Role: pki.RoleAgent,
			NotBefore: at, NotAfter: at.Add(24 * time.Hour), Fingerprint: "00"}
	}
	rv := make([]pki.Revocation, revs)
	for i := range rv {
		rv[i] = pki.Revocation{Serial: benchSerial(b), RevokedAt: at, Reason: "benchmark", Name: "bench"}
	}
	if _, _, err := s.ImportRecords(inv, rv); err != nil {
		b.Fatal(err)
	}
	if revs > 0 {
		if _, err := s.RefreshCRL(true); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func benchSerial(b *testing.B) string {
	n, err := pki.NewSerial()
	if err != nil {
		b.Fatal(err)
	}
	return pki.FormatSerial(n)
}

// BenchmarkIssueConcurrent is issuance by 8 concurrent operators of one
// gateway (one Store), every inventory write durable, with n certificates
// already issued; it reports issuances per second (issue 16, "Issuance").
func BenchmarkIssueConcurrent(b *testing.B) {
	for _, n := range []int{1000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("issued=%d", n), func(b *testing.B) {
			s := seedStore(b, n, 0)
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Issue(pki.IssueRequest{Name: fmt.Sprintf("op-%d", w), Duration: time.Hour}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "issues/s")
		})
	}
}

// BenchmarkRevokeToRefusal is the time from the start of a revocation to
// the first refusal by a gateway's RevocationChecker (already loaded, as a
// serving gateway's is), with n serials already revoked: "cli" revokes
// through a fresh Store each time (a new process), "tool" through the
// gateway's long-lived Store. A goroutine asks the checker every 100 µs,
// as handshakes would. Reported: ms to refusal and ms until Revoke
// returned (the CRL is signed before it returns).
func BenchmarkRevokeToRefusal(b *testing.B) {
	for _, n := range []int{100_000} {
		for _, path := range []string{"cli", "tool"} {
			b.Run(fmt.Sprintf("revoked=%d/%s", n, path), func(b *testing.B) {
				s := seedStore(b, 0, n)
				checker := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
				if err := checker.Refresh(); err != nil {
					b.Fatal(err)
				}
				var refusal, ret time.Duration
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					serial := benchSerial(b)
					sn, _ := new(big.Int).SetString(serial, 16)
					b.StartTimer()
					start := time.Now()
					seen := awaitRefusal(checker, sn, start)
					st := s
					if path == "cli" {
						st = pki.NewStore(s.Dir())
					}
					if _, err := st.Revoke(serial, "benchmark"); err != nil {
						b.Fatal(err)
					}
					ret += time.Since(start)
					refusal += <-seen
				}
				b.ReportMetric(float64(refusal.Microseconds())/1000/float64(b.N), "ms-to-refusal")
				b.ReportMetric(float64(ret.Microseconds())/1000/float64(b.N), "ms-to-return")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkRevokeCLIToRefusal is BenchmarkRevokeToRefusal through the real
// CLI: 'nefia mtls revoke' as its own process (start, config, audit
// record, CRL) against n revoked serials, the binary named by NEFIA_BIN
// (bench/store16.sh builds one per side); skipped without it.
func BenchmarkRevokeCLIToRefusal(b *testing.B) {
	bin := os.Getenv("NEFIA_BIN")
	if bin == "" {
		b.Skip("NEFIA_BIN not set")
	}
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("revoked=%d", n), func(b *testing.B) {
			s := seedStore(b, 0, n)
			checker := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
			if err := checker.Refresh(); err != nil {
				b.Fatal(err)
			}
			var refusal, ret time.Duration
			b.ResetTimer()
			for range b.N {
				serial := benchSerial(b)
				sn, _ := new(big.Int).SetString(serial, 16)
				start := time.Now()
				seen := awaitRefusal(checker, sn, start)
				cmd := exec.Command(bin, "--state-dir", s.Dir(), "--config", filepath.Join(s.Dir(), "none.yaml"), "mtls", "revoke", "--serial", serial)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				ret += time.Since(start)
				refusal += <-seen
			}
			b.ReportMetric(float64(refusal.Microseconds())/1000/float64(b.N), "ms-to-refusal")
			b.ReportMetric(float64(ret.Microseconds())/1000/float64(b.N), "ms-to-return")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// awaitRefusal reports, once, how long after start the checker first
// refuses sn (it looks every 100 µs, as a handshake would find it).
func awaitRefusal(checker *pki.RevocationChecker, sn *big.Int, start time.Time) <-chan time.Duration {
	seen := make(chan time.Duration, 1)
	go func() {
		for {
			if r, err := checker.IsRevoked(sn); err == nil && r {
				seen <- time.Since(start)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return seen
}
