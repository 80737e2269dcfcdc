package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
)

func parseCRLBytes(t *testing.T, data []byte, wantPEM bool) *x509.RevocationList {
	t.Helper()
	der := data
	if wantPEM {
		b, rest := pem.Decode(data)
		if b == nil || b.Type != "X509 CRL" || strings.TrimSpace(string(rest)) != "" {
			t.Fatalf("not one PEM X509 CRL:\n%.300s", data)
		}
		der = b.Bytes
	} else if strings.HasPrefix(string(data), "-----") {
		t.Fatal("--der wrote PEM")
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	return crl
}

// TestMTLSCRLCommand: 'nefia mtls crl' prints the CA-signed CRL listing the
// revoked serial (PEM by default, DER with --der), and --out writes it
// atomically, replacing an earlier CRL (issue 13 item 6).
func TestMTLSCRLCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	var iss struct{ Serial string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "gone", "--out-dir", c.outDir(), "--json")), &iss); err != nil {
		t.Fatal(err)
	}
	c.mustRun("mtls", "issue-client", "--name", "kept", "--out-dir", c.outDir())
	c.mustRun("mtls", "revoke", "--serial", iss.Serial)
	ca, _, err := pki.NewStore(c.stateDir).LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, crl *x509.RevocationList) {
		t.Helper()
		if err := crl.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("CRL not signed by the CA: %v", err)
		}
		if len(crl.RevokedCertificateEntries) != 1 || pki.FormatSerial(crl.RevokedCertificateEntries[0].SerialNumber) != iss.Serial {
			t.Fatalf("CRL lists %d serials, want exactly %s", len(crl.RevokedCertificateEntries), iss.Serial)
		}
	}
	out := filepath.Join(c.work, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		file    string // where the CRL lands; "" for stdout
		wantPEM bool
	}{
		{"stdout PEM", nil, "", true},
		{"stdout DER", []string{"--der"}, "", false},
		{"out PEM", []string{"--out", filepath.Join(out, "nefia.crl")}, filepath.Join(out, "nefia.crl"), true},
		{"out PEM again replaces it", []string{"--out", filepath.Join(out, "nefia.crl")}, filepath.Join(out, "nefia.crl"), true},
		{"out DER", []string{"--der", "--out", filepath.Join(out, "nefia.der")}, filepath.Join(out, "nefia.der"), false},
		{"out DER over the PEM", []string{"--der", "--out", filepath.Join(out, "nefia.crl")}, filepath.Join(out, "nefia.crl"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout := c.mustRun(append([]string{"mtls", "crl"}, tt.args...)...)
			data := []byte(stdout)
			if tt.file != "" {
				if !strings.Contains(stdout, "Wrote CRL number") {
					t.Errorf("stdout %q does not say what was written", stdout)
				}
				var err error
				if data, err = os.ReadFile(tt.file); err != nil {
					t.Fatal(err)
				}
				if fi, _ := os.Stat(tt.file); fi.Mode().Perm() != 0o644 {
					t.Errorf("mode %v, want 0644", fi.Mode())
				}
			}
			check(t, parseCRLBytes(t, data, tt.wantPEM))
		})
	}

	// A missing CRL is re-signed first, with a higher number.
	before, err := os.ReadFile(c.stateDir + "/" + pki.CRLFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(c.stateDir, pki.CRLFile)); err != nil {
		t.Fatal(err)
	}
	crl := parseCRLBytes(t, []byte(c.mustRun("mtls", "crl")), true)
	check(t, crl)
	if old := parseCRLBytes(t, before, true); crl.Number.Cmp(old.Number) <= 0 {
		t.Errorf("re-signed CRL number %v not above %v", crl.Number, old.Number)
	}
}

// TestMTLSCRLBadInput: bad input to 'nefia mtls crl' is exit 2 with one
// line naming the flag, and changes nothing.
func TestMTLSCRLBadInput(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	notCRL := filepath.Join(c.work, "notes.txt")
	if err := os.WriteFile(notCRL, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	stateLink := filepath.Join(c.work, "state-link")
	if err := os.Symlink(c.stateDir, stateLink); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, wantMsg string
		args          []string
	}{
		{"out empty", "--out", []string{"--out", ""}},
		{"out a directory", "--out", []string{"--out", c.work}},
		{"out the CA key", "--out", []string{"--out", filepath.Join(c.stateDir, pki.CAKeyFile)}},
		{"out the state dir's CRL", "--out", []string{"--out", filepath.Join(c.stateDir, pki.CRLFile)}},
		{"out through a link into the state dir", "--out", []string{"--der", "--out", filepath.Join(stateLink, pki.CAKeyFile)}},
		{"out in a missing directory", "--out", []string{"--out", filepath.Join(c.work, "nope", "crl.pem")}},
		{"out over a file that is not a CRL", "--out", []string{"--out", notCRL}},
		{"unknown flag", "unknown flag", []string{"--pem"}},
		{"positional argument", "crl", []string{"extra"}},
	}
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, dir := range []string{c.stateDir, c.work} {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				m[filepath.Join(dir, e.Name())] = string(data)
			}
		}
		return m
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot()
			stdout, stderr, code := c.run(append([]string{"mtls", "crl"}, tt.args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want 2; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, tt.wantMsg) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("stderr %q: want one line mentioning %q", stderr, tt.wantMsg)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			after := snapshot()
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s changed", k)
				}
			}
			if len(after) != len(before) {
				t.Errorf("files appeared or vanished: %d -> %d", len(before), len(after))
			}
		})
	}
	t.Run("no CA", func(t *testing.T) {
		_, stderr, code := newCLI(t).run("mtls", "crl")
		if code != exitUsage || !strings.Contains(stderr, "mtls init") {
			t.Errorf("exit %d %q; want 2 pointing at 'nefia mtls init'", code, stderr)
		}
	})
}

// TestGatewayRefreshesCRL: the refresh the gateway runs re-signs a missing
// CRL at once and again on its ticker (issue 13 item 6).
func TestGatewayRefreshesCRL(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	store := pki.NewStore(c.stateDir)
	path := store.Path(pki.CRLFile)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	startCRLRefresh(context.Background(), store, log, time.Hour)()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the first refresh did not re-sign the CRL: %v", err)
	}
	stop := startCRLRefresh(context.Background(), store, log, 5*time.Millisecond)
	defer stop()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ticker did not re-sign the removed CRL within 10s")
		}
		<-time.After(5 * time.Millisecond)
	}
}
