package etcdstore_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/store/etcdstore"
	"github.com/nefia/nefia/store/etcdstore/fleettest"
)

func readCRLFile(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: not PEM", path)
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func lists(crl *x509.RevocationList, serial string) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if pki.FormatSerial(e.SerialNumber) == serial {
			return true
		}
	}
	return false
}

// TestEtcdCRLFromCAHoldingGateways: with the etcd backend, a revocation
// made through a gateway without the CA key (as its host's CLI would)
// reaches the CRL of every gateway holding the key within a bound;
// OpenSSL verifies the CRL and refuses the revoked certificate with it;
// CRL numbers never repeat across gateways and only increase; the
// keyless gateway signs nothing and says so once (issue 15 fix 3, issue
// 13 item 6).
func TestEtcdCRLFromCAHoldingGateways(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is required (installed by .ci/run)")
	}
	c := etcdtest.Start(t, etcdtest.Options{})
	fleet := fleettest.Start(t, c, fleettest.Options{Gateways: 3, MaxStale: 5 * time.Second, NoCAKey: map[int]bool{1: true}})
	holders := []int{0, 2}
	for i, m := range fleet {
		running, stop := etcdstore.KeepCRL(context.Background(), m.Watcher, m.Store,
			etcdstore.CRLTimings{Debounce: time.Second, Check: time.Hour}, slog.New(slog.DiscardHandler))
		t.Cleanup(stop)
		if want := i != 1; running != want {
			t.Fatalf("gateway %d: CRL loop running %v, want %v", i, running, want)
		}
	}
	initial := map[int]int64{}
	for _, i := range holders {
		path := fleet[i].Store.Path(pki.CRLFile)
		fleettest.WaitFor(t, "initial CRL", func() bool { return readCRLFile(t, path) != nil })
		initial[i] = readCRLFile(t, path).Number.Int64()
	}
	if initial[0] == initial[2] {
		t.Errorf("two gateways signed CRL number %d", initial[0])
	}
	victim := pkitest.Issue(t, fleet[0].Store, "victim", pki.RoleAgent, time.Hour)
	start := time.Now()
	if _, err := fleet[1].Store.Revoke(victim.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	const bound = 5 * time.Second
	numbers := map[int64]bool{}
	for _, i := range holders {
		path := fleet[i].Store.Path(pki.CRLFile)
		fleettest.WaitFor(t, "CRL listing the revoked serial", func() bool {
			crl := readCRLFile(t, path)
			return crl != nil && lists(crl, victim.Serial)
		})
		took := time.Since(start)
		if took > bound {
			t.Errorf("gateway %d: CRL listed the revocation after %s, bound %s", i, took, bound)
		}
		crl := readCRLFile(t, path)
		n := crl.Number.Int64()
		if n <= max(initial[0], initial[2]) || numbers[n] {
			t.Errorf("gateway %d: CRL number %d after %v (initial %v)", i, n, numbers, initial)
		}
		numbers[n] = true
		t.Logf("gateway %d: CRL number %d lists the revocation %s after the revoke call", i, n, took.Round(time.Millisecond))

		ca := fleet[i].Store.Path(pki.CACertFile)
		out, err := exec.Command("openssl", "crl", "-in", path, "-CAfile", ca, "-noout").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "verify OK") {
			t.Errorf("openssl crl -verify: %v: %s", err, out)
		}
		certFile := filepath.Join(t.TempDir(), "victim.crt")
		if err := os.WriteFile(certFile, victim.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err = exec.Command("openssl", "verify", "-crl_check", "-CAfile", ca, "-CRLfile", path, certFile).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "revoked") {
			t.Errorf("openssl verify -crl_check admitted the revoked certificate: %v: %s", err, out)
		}
	}
	if _, err := fleet[1].Store.RefreshCRL(true); !errors.Is(err, pki.ErrNoCAKey) {
		t.Errorf("CRL on the keyless gateway: %v, want ErrNoCAKey", err)
	}
}
