package pki_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestOpenSSLVerifies checks our certificates with a tool no one here wrote.
func TestOpenSSLVerifies(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: skipping the independent verification")
	}
	s := pki.NewStore(t.TempDir())
	if _, err := s.Init(pki.InitOptions{Hosts: []string{"localhost", "10.99.0.1"}}); err != nil {
		t.Fatal(err)
	}
	iss := pkitest.Issue(t, s, "claude-agent", pki.RoleOperator, 24*time.Hour)
	dir := t.TempDir()
	paths, err := pki.WriteBundle(dir, iss, false)
	if err != nil {
		t.Fatal(err)
	}
	ca := s.Path(pki.CACertFile)

	tests := []struct {
		name, cert, purpose string
		want                []string
	}{
		{"client", paths.Cert, "sslclient", []string{
			"Public Key Algorithm: id-ecPublicKey", "NIST CURVE: P-256",
			"TLS Web Client Authentication", "CN = claude-agent", "OU = operator",
		}},
		{"server", s.Path(pki.ServerCertFile), "sslserver", []string{
			"NIST CURVE: P-256", "TLS Web Server Authentication", "DNS:localhost", "IP Address:10.99.0.1",
			"X509v3 Authority Key Identifier",
		}},
		{"ca", ca, "", []string{"CA:TRUE, pathlen:0", "Certificate Sign, CRL Sign", "X509v3 Subject Key Identifier"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"verify", "-CAfile", ca}
			if tt.purpose != "" {
				args = append(args, "-purpose", tt.purpose)
			}
			out, err := exec.Command("openssl", append(args, tt.cert)...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": OK") {
				t.Fatalf("openssl verify: %v\n%s", err, out)
			}
			text, err := exec.Command("openssl", "x509", "-in", tt.cert, "-noout", "-text").CombinedOutput()
			if err != nil {
				t.Fatalf("openssl x509: %v\n%s", err, text)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(text), w) {
					t.Errorf("openssl x509 -text lacks %q", w)
				}
			}
		})
	}
	t.Run("client has no server EKU", func(t *testing.T) {
		out, _ := exec.Command("openssl", "verify", "-CAfile", ca, "-purpose", "sslserver", paths.Cert).CombinedOutput()
		if strings.Contains(string(out), ": OK") {
			t.Fatalf("client certificate verified as a server certificate:\n%s", out)
		}
	})
	t.Run("client validity is 24h plus the minute of skew", func(t *testing.T) {
		out, err := exec.Command("openssl", "x509", "-in", paths.Cert, "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601").CombinedOutput()
		if err != nil {
			t.Skipf("openssl too old for -dateopt: %s", out)
		}
		var start, end time.Time
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			ts, err := time.Parse("2006-01-02 15:04:05Z", v)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			if k == "notBefore" {
				start = ts
			} else {
				end = ts
			}
		}
		if got := end.Sub(start); got != 24*time.Hour+time.Minute {
			t.Errorf("openssl sees validity %v, want 24h1m", got)
		}
	})
	if fi, err := os.Stat(filepath.Join(dir, "claude-agent.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode: %v %v", fi.Mode(), err)
	}
}
