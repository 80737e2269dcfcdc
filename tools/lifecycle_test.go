package tools_test

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

func hasProblem(problems []string, sub string) bool {
	return slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, sub) })
}

// TestStatusExpiryWarnings: status lists active client certificates
// expiring within mcp.mtls.expiry_warning (72h by default) unless an active
// renewal replaced them, the server certificate within 30 days and the CA
// within a year (issue 13 item 4).
func TestStatusExpiryWarnings(t *testing.T) {
	t.Parallel()
	start := time.Now()
	clock := pkitest.NewClock(start)
	store := pkitest.NewStore(t, pki.WithClock(clock))
	soon := pkitest.Issue(t, store, "soon", pki.RoleAgent, 30*24*time.Hour)
	later := pkitest.Issue(t, store, "later", pki.RoleAgent, 32*24*time.Hour)
	renewedOld := pkitest.Issue(t, store, "renewed", pki.RoleAgent, 30*24*time.Hour)
	revoked := pkitest.Issue(t, store, "gone", pki.RoleAgent, 30*24*time.Hour)
	if _, err := store.Revoke(revoked.Serial, "lost"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(28 * 24 * time.Hour) // 48h left for the 30-day ones
	// Renewed: its predecessor's expiry is expected.
	csr, _ := pkitest.CSR(t, pkix.Name{})
	if _, err := store.Issue(pki.IssueRequest{Name: "renewed", Role: pki.RoleAgent, Duration: 30 * 24 * time.Hour, CSRPEM: csr, Renews: renewedOld.Serial}); err != nil {
		t.Fatal(err)
	}
	// Less than 72h left, but young: renewal is not due yet.
	fresh := pkitest.Issue(t, store, "fresh", pki.RoleAgent, 24*time.Hour)
	cfgPath := filepath.Join(t.TempDir(), "nefia.yaml")
	build := func() []string {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		return tools.BuildStatus(store, cfg, nil).Problems
	}

	p := build()
	if !hasProblem(p, soon.Serial) {
		t.Errorf("problems %q: want %s (48h left, window 72h)", p, soon.Serial)
	}
	for _, s := range []string{later.Serial, renewedOld.Serial, revoked.Serial, fresh.Serial} {
		if hasProblem(p, s) {
			t.Errorf("problems %q name %s, which must not be listed", p, s)
		}
	}
	if hasProblem(p, "CA certificate expires") || hasProblem(p, "server certificate expires") {
		t.Errorf("fresh CA or server certificate reported: %q", p)
	}

	// A narrower window drops it.
	if err := os.WriteFile(cfgPath, []byte("version: 1\nmcp:\n  mtls:\n    expiry_warning: 24h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p := build(); hasProblem(p, soon.Serial) {
		t.Errorf("window 24h still lists a certificate with 48h left: %q", p)
	}

	// The server certificate (one year) 20 days before its end.
	clock.Set(start.Add(pki.ServerValidity - 20*24*time.Hour))
	if p := build(); !hasProblem(p, "server certificate expires in 19 days") && !hasProblem(p, "server certificate expires in 20 days") {
		t.Errorf("problems %q: want the server certificate's expiry", p)
	}
	// The CA (ten years) 200 days before its end.
	clock.Set(start.Add(pki.CAValidity - 200*24*time.Hour))
	if p := build(); !hasProblem(p, "CA certificate expires in") {
		t.Errorf("problems %q: want the CA's expiry within a year", p)
	}
}

// TestExpiryWarningConfig: mcp.mtls.expiry_warning defaults to 72h and is
// validated.
func TestExpiryWarningConfig(t *testing.T) {
	t.Parallel()
	if got := config.Default().MCP.MTLS.ExpiryWarning; got != 72*time.Hour {
		t.Errorf("default %s", got)
	}
	c := config.Default()
	c.MCP.MTLS.ExpiryWarning = time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "mcp.mtls.expiry_warning") {
		t.Errorf("1s window: %v", err)
	}
}

// TestStatusToolListsExpiringClients: the status tool over a real gateway
// reports the same expiry problems as the CLI.
func TestStatusToolListsExpiringClients(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	old := pki.NewStore(gw.Store.Dir(), pki.WithClock(pkitest.NewClock(time.Now().Add(-47*time.Hour))))
	soon := pkitest.Issue(t, old, "soon", pki.RoleAgent, 48*time.Hour) // 1h left
	c := gw.Client(gw.Cert("bot", pki.RoleAgent))
	st := servertest.CallOK(t, c, tools.NameStatus, nil)
	problems, _ := st["problems"].([]any)
	found := false
	for _, p := range problems {
		if s, _ := p.(string); strings.Contains(s, soon.Serial) {
			found = true
		}
	}
	if !found {
		t.Errorf("status problems %v: want %s (1h left)", problems, soon.Serial)
	}
}
