package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// renewFixture is a CLI state with an agent certificate "bot" in
// c.outDir() and a real gateway over that state.
func renewFixture(t *testing.T, lifetime string, opts ...servertest.Option) (*cli, *servertest.Gateway, string) {
	t.Helper()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	var v struct{ Serial string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "bot", "--duration", lifetime, "--out-dir", c.outDir(), "--json")), &v); err != nil {
		t.Fatal(err)
	}
	gw := servertest.StartWithStore(t, pki.NewStore(c.stateDir), opts...)
	return c, gw, v.Serial
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func snapshotFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = string(data)
	}
	return out
}

// TestRenewCLI renews over real mTLS against a running gateway: a new key
// (0600) and a matching certificate with the same name and role, a new
// serial and the original lifetime; the serial it renews stays active, the
// older ones of the chain are revoked. It logs the renewal latency
// (command start to files written).
func TestRenewCLI(t *testing.T) {
	t.Parallel()
	c, gw, oldSerial := renewFixture(t, "2h")
	crt, key := filepath.Join(c.outDir(), "bot.crt"), filepath.Join(c.outDir(), "bot.key")
	oldKey, _ := os.ReadFile(key)
	var lat []time.Duration
	serial, prevSerial := oldSerial, ""
	for i := range 5 {
		start := time.Now()
		out := c.mustRun("mtls", "renew", "--cert-dir", c.outDir(), "--name", "bot", "--addr", gw.Addr, "--json")
		lat = append(lat, time.Since(start))
		var res struct {
			Serial, Renews, Name, Role string
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("renew %d: %v: %s", i, err, out)
		}
		if res.Renews != serial || res.Serial == serial || res.Name != "bot" || res.Role != "agent" {
			t.Fatalf("renew %d = %+v, want a renewal of %s", i, res, serial)
		}
		prevSerial, serial = serial, res.Serial
	}
	slices.Sort(lat)
	t.Logf("renewal latency over real TLS (CLI start to files written), 5 runs: min %s, median %s, max %s", lat[0], lat[2], lat[4])
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatalf("key and certificate do not match: %v", err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %o, want 600", fi.Mode().Perm())
	}
	if newKey, _ := os.ReadFile(key); string(newKey) == string(oldKey) {
		t.Error("the key was not replaced")
	}
	cert := readCert(t, crt)
	if pki.FormatSerial(cert.SerialNumber) != serial || cert.Subject.CommonName != "bot" || cert.Subject.OrganizationalUnit[0] != "agent" {
		t.Errorf("NAME.crt = %s %v, want serial %s", pki.FormatSerial(cert.SerialNumber), cert.Subject, serial)
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got != 2*time.Hour+time.Minute {
		t.Errorf("lifetime %s, want the original 2h (+1m)", got)
	}
	// The certificate renewed last stays active; the chain keeps no more
	// (issue 13: a renewal revokes the rest of its chain as superseded).
	if prev, ok, _ := gw.Store.Lookup(prevSerial); !ok || prev.State != pki.StateActive {
		t.Errorf("the renewed certificate is %s, want active", prev.State)
	}
	if first, ok, _ := gw.Store.Lookup(oldSerial); !ok || first.State != pki.StateRevoked {
		t.Errorf("the first certificate of the chain is %s, want revoked (superseded)", first.State)
	}
	if _, err := os.Stat(crt + pendingSuffix); err == nil {
		t.Error("a staged certificate was left behind")
	}
}

// TestRenewCLIRevokePrevious: --revoke-previous revokes the serial the
// command connected with, reason "renewed". The revocation poll runs every
// 2 ms, so it sees the revocation while the call is running: the answer
// must still arrive (see TestRenewToolRevokePrevious).
func TestRenewCLIRevokePrevious(t *testing.T) {
	t.Parallel()
	c, gw, oldSerial := renewFixture(t, "1h", func(o *server.GatewayOptions) { o.RevocationPoll = 2 * time.Millisecond })
	c.mustRun("mtls", "renew", "--cert-dir", c.outDir(), "--name", "bot", "--addr", gw.Addr, "--revoke-previous")
	revs, err := gw.Store.Revocations()
	if err != nil || len(revs) != 1 || revs[0].Serial != oldSerial || revs[0].Reason != "renewed" {
		t.Fatalf("revocations = %+v, %v", revs, err)
	}
	// The renewed files connect.
	kp, err := tls.LoadX509KeyPair(filepath.Join(c.outDir(), "bot.crt"), filepath.Join(c.outDir(), "bot.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Probe(gw.ClientConfig(&kp)); err != nil {
		t.Errorf("the renewed certificate is refused: %v", err)
	}
}

// TestRenewCLIRefusals: bad flags exit 2 naming the flag; a revoked
// certificate or an unreachable gateway exit 1; nothing in the
// certificate directory changes in any case.
func TestRenewCLIRefusals(t *testing.T) {
	t.Parallel()
	c, gw, oldSerial := renewFixture(t, "1h")
	revoked := newCLI(t)
	revoked.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	tests := []struct {
		name     string
		args     []string
		before   func(t *testing.T)
		wantCode int
		wantMsg  string
	}{
		{name: "name missing", args: []string{"--cert-dir", c.outDir()}, wantCode: 2, wantMsg: "--name"},
		{name: "name invalid", args: []string{"--name", "../x", "--cert-dir", c.outDir()}, wantCode: 2, wantMsg: "--name"},
		{name: "no such certificate", args: []string{"--name", "nobody", "--cert-dir", c.outDir(), "--addr", gw.Addr}, wantCode: 2, wantMsg: "--name nobody"},
		{name: "cert dir missing", args: []string{"--name", "bot", "--cert-dir", filepath.Join(c.work, "none"), "--addr", gw.Addr}, wantCode: 2, wantMsg: "--name bot"},
		{name: "addr without port", args: []string{"--name", "bot", "--cert-dir", c.outDir(), "--addr", "127.0.0.1"}, wantCode: 2, wantMsg: "--addr"},
		{name: "ca not a certificate", args: []string{"--name", "bot", "--cert-dir", c.outDir(), "--addr", gw.Addr, "--ca", filepath.Join(c.outDir(), "bot.key")}, wantCode: 2, wantMsg: "--ca"},
		{name: "unknown flag", args: []string{"--name", "bot", "--serial", oldSerial}, wantCode: 2, wantMsg: "--serial"},
		{name: "gateway unreachable", args: []string{"--name", "bot", "--cert-dir", c.outDir(), "--addr", "127.0.0.1:1"}, wantCode: 1, wantMsg: "connect"},
		{name: "revoked", args: []string{"--name", "bot", "--cert-dir", c.outDir(), "--addr", gw.Addr}, wantCode: 1, wantMsg: "refused",
			before: func(t *testing.T) {
				if _, err := gw.Store.Revoke(oldSerial, "lost"); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests { // in order: "revoked" is last
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before(t)
			}
			files := snapshotFiles(t, c.outDir())
			inv, _ := gw.Store.List()
			_, stderr, code := c.run(append([]string{"mtls", "renew"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantMsg) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want exit %d, one line containing %q", code, stderr, tt.wantCode, tt.wantMsg)
			}
			if after := snapshotFiles(t, c.outDir()); !mapsEqual(after, files) {
				t.Error("the certificate directory changed")
			}
			if after, _ := gw.Store.List(); len(after) != len(inv) {
				t.Error("a certificate was issued")
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRenewCLIFinishesAnInterruptedRenewal: a crash after the key was
// replaced leaves NAME.crt.renew; the next renew completes it first (and
// then renews with the completed pair).
func TestRenewCLIFinishesAnInterruptedRenewal(t *testing.T) {
	t.Parallel()
	c, gw, _ := renewFixture(t, "1h")
	crt, key := filepath.Join(c.outDir(), "bot.crt"), filepath.Join(c.outDir(), "bot.key")
	// Simulate the crash: a newer pair for bot, its key in place, its
	// certificate only staged.
	iss := gw.Issue("bot", pki.RoleAgent, time.Hour)
	if err := os.WriteFile(crt+pendingSuffix, iss.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out := c.mustRun("mtls", "renew", "--cert-dir", c.outDir(), "--name", "bot", "--addr", gw.Addr, "--json")
	var res struct{ Renews string }
	_ = json.Unmarshal([]byte(out), &res)
	if res.Renews != iss.Serial {
		t.Errorf("renewed %s, want the staged certificate %s (the interrupted renewal completed first)", res.Renews, iss.Serial)
	}
	if _, err := os.Stat(crt + pendingSuffix); err == nil {
		t.Error("the staged certificate is still there")
	}
}
