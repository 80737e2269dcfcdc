package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestInitCoversListenAddr: init --hosts without the listen address's host
// used to leave it out (every README example dialing 127.0.0.1 failed);
// now it is always among the SANs (issue 13 item 3).
func TestInitCoversListenAddr(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	var res struct {
		Server struct{ SANs []string }
	}
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "init", "--hosts", "localhost,10.99.0.1", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Server.SANs, []string{"localhost", "10.99.0.1", "127.0.0.1"}) {
		t.Errorf("SANs = %v, want localhost, 10.99.0.1 and the listen host 127.0.0.1", res.Server.SANs)
	}
}

// TestRenewServerCLI: renew-server keeps the names by default, takes new
// ones with --hosts, and status reports a listen address the server
// certificate does not cover until it is renewed for it.
func TestRenewServerCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "localhost")
	type result struct {
		Server struct {
			Serial string
			SANs   []string
		}
		Previous struct{ Serial string }
	}
	var first result
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "renew-server", "--json")), &first); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.Server.SANs, []string{"localhost", "127.0.0.1"}) || first.Previous.Serial == "" || first.Previous.Serial == first.Server.Serial {
		t.Errorf("renew-server = %+v, want the same names and a new serial", first)
	}
	if err := config.Set(c.config, "mcp.mtls.listen_addr", "10.1.2.3:19821"); err != nil {
		t.Fatal(err)
	}
	status := func() []string {
		var st struct{ Problems []string }
		if err := json.Unmarshal([]byte(c.mustRun("mtls", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Problems
	}
	if p := status(); !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "does not cover the listen address host 10.1.2.3") }) {
		t.Errorf("status problems %q: want the uncovered listen address", p)
	}
	var second result
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "renew-server", "--hosts", "gw.lan", "--json")), &second); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(second.Server.SANs, []string{"gw.lan", "10.1.2.3"}) {
		t.Errorf("SANs = %v, want gw.lan and the listen host", second.Server.SANs)
	}
	if p := status(); slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "listen address") }) {
		t.Errorf("status still reports the listen address: %q", p)
	}
	for _, tt := range []struct {
		name, flag string
		args       []string
	}{
		{name: "bad host", flag: "--hosts", args: []string{"--hosts", "bad_host"}},
		{name: "empty hosts", flag: "--hosts", args: []string{"--hosts", " , "}},
		{name: "unspecified address", flag: "--hosts", args: []string{"--hosts", "0.0.0.0"}},
		{name: "positional", flag: "unknown command", args: []string{"extra"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := c.mustRun("mtls", "status", "--json")
			_, stderr, code := c.run(append([]string{"mtls", "renew-server"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.flag) {
				t.Errorf("exit %d, stderr %q; want 2 naming %s", code, stderr, tt.flag)
			}
			if after := c.mustRun("mtls", "status", "--json"); after != before {
				t.Error("a refused renew-server changed the state")
			}
		})
	}
}

// TestStatusListsExpiringClientsCLI: status names a client certificate
// with less than mcp.mtls.expiry_warning (72h) left and past two thirds of
// its life, and not a fresh one (issue 13 item 4).
func TestStatusListsExpiringClientsCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	// Issued 47 hours ago for 48 hours: one hour left.
	past := pki.NewStore(c.stateDir, pki.WithClock(pkitest.NewClock(time.Now().Add(-47*time.Hour))))
	soon := pkitest.Issue(t, past, "soon", pki.RoleAgent, 48*time.Hour).Serial
	var v struct{ Serial string }
	_ = json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "fresh", "--out-dir", c.outDir(), "--json")), &v)
	out := c.mustRun("mtls", "status")
	if !strings.Contains(out, soon) || strings.Contains(out, v.Serial) {
		t.Errorf("status:\n%s\nwant %s (1h left) listed and the fresh %s not", out, soon, v.Serial)
	}
}
