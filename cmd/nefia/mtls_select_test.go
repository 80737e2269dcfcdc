package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// runAt runs nefia like cli.run, with the store's clock at now.
func (c *cli) runAt(now time.Time, args ...string) (string, string, int) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, clock: pkitest.NewClock(now), getenv: func(k string) string {
		switch k {
		case "NEFIA_STATE_DIR":
			return c.stateDir
		case "NEFIA_CONFIG":
			return c.config
		}
		return ""
	}}
	if err := e.run(context.Background(), args); err != nil {
		stderr.WriteString("nefia: " + errorLine(err) + "\n")
		return stdout.String(), stderr.String(), exitCode(err)
	}
	return stdout.String(), stderr.String(), 0
}

// issueJSON issues a certificate into the test's out dir and returns its
// serial.
func (c *cli) issueJSON(args ...string) string {
	c.t.Helper()
	var v struct{ Serial string }
	out := c.mustRun(append([]string{"mtls", "issue-client", "--out-dir", c.outDir(), "--force", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Serial == "" {
		c.t.Fatalf("issue-client %v: %q %v", args, out, err)
	}
	return v.Serial
}

// states maps serial to state as 'nefia mtls list --json' reports them.
func (c *cli) states() map[string]string {
	c.t.Helper()
	var list []struct{ Serial, State string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "list", "--json")), &list); err != nil {
		c.t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range list {
		m[l.Serial] = l.State
	}
	return m
}

// TestRevokeByNameCLI (issue 14 item 3): --name revokes every active
// certificate of that name and no other, after listing them on stderr; it
// refuses without --yes when stdin is not a terminal, changing nothing.
func TestRevokeByNameCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	a1 := c.issueJSON("--name", "laptop")
	a2 := c.issueJSON("--name", "laptop", "--duration", "48h")
	other := c.issueJSON("--name", "laptop-2")

	_, errOut, code := c.run("mtls", "revoke", "--name", "laptop")
	if code != 2 || !strings.Contains(errOut, "--yes") || !strings.Contains(errOut, a1) || !strings.Contains(errOut, a2) {
		t.Fatalf("without --yes, stdin not a terminal: exit %d, stderr %q; want 2 naming --yes after listing both", code, errOut)
	}
	if st := c.states(); st[a1] != "active" || st[a2] != "active" {
		t.Fatalf("refused revoke changed something: %v", st)
	}

	out, errOut, code := c.run("mtls", "revoke", "--name", "laptop", "--yes", "--reason", "stolen", "--json")
	if code != 0 {
		t.Fatalf("revoke --name --yes: exit %d: %s", code, errOut)
	}
	var res []struct {
		Serial, Name   string
		AlreadyRevoked bool `json:"already_revoked"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 2 {
		t.Fatalf("--json: %q, %v; want a list of 2", out, err)
	}
	if st := c.states(); st[a1] != "revoked" || st[a2] != "revoked" || st[other] != "active" {
		t.Fatalf("after revoke --name laptop: %v; want both laptop revoked, laptop-2 active", st)
	}

	// Nothing active is left by that name.
	_, errOut, code = c.run("mtls", "revoke", "--name", "laptop", "--yes")
	if code != 2 || !strings.Contains(errOut, "--name") {
		t.Fatalf("second revoke --name: exit %d, %q; want 2 naming --name", code, errOut)
	}
}

// TestRevokeByCertFileCLI (issue 14 item 3): --cert revokes the serial of
// the certificate in a PEM file; one from another CA is revoked too (any
// serial is), with a warning.
func TestRevokeByCertFileCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	serial := c.issueJSON("--name", "desktop")
	out, errOut, code := c.run("mtls", "revoke", "--cert", filepath.Join(c.outDir(), "desktop.crt"))
	if code != 0 || !strings.Contains(out, serial) || strings.Contains(errOut, "warning") {
		t.Fatalf("revoke --cert: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if st := c.states(); st[serial] != "revoked" {
		t.Fatalf("state after revoke --cert: %q", st[serial])
	}

	foreign := pkitest.Issue(t, pkitest.NewStore(t), "stranger", pki.RoleAgent, time.Hour)
	file := filepath.Join(c.work, "foreign.crt")
	if err := os.WriteFile(file, foreign.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = c.run("mtls", "revoke", "--cert", file)
	if code != 0 || !strings.Contains(errOut, "not issued by this CA") || !strings.Contains(out, foreign.Serial) {
		t.Fatalf("revoke --cert of another CA: exit %d, stdout %q, stderr %q; want revoked with a warning", code, out, errOut)
	}
}

// TestRevokeSelectorFlagsExit2 (issue 14 item 3): exactly one of --serial,
// --name, --cert; anything else is exit 2 naming the flags, nothing revoked.
func TestRevokeSelectorFlagsExit2(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	serial := c.issueJSON("--name", "keep")
	notPEM := filepath.Join(c.work, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "none", args: nil, want: []string{"--serial", "--name", "--cert"}},
		{name: "serial and name", args: []string{"--serial", serial, "--name", "keep"}, want: []string{"--serial and --name"}},
		{name: "name and cert", args: []string{"--name", "keep", "--cert", notPEM}, want: []string{"--name and --cert"}},
		{name: "all three", args: []string{"--serial", serial, "--name", "keep", "--cert", notPEM}, want: []string{"exactly one"}},
		{name: "cert missing", args: []string{"--cert", filepath.Join(c.work, "nope.crt")}, want: []string{"--cert"}},
		{name: "cert not PEM", args: []string{"--cert", notPEM}, want: []string{"--cert", "no PEM"}},
		{name: "cert is the CA", args: []string{"--cert", filepath.Join(c.outDir(), "ca.crt")}, want: []string{"--cert", "CA certificate"}},
		{name: "unknown name", args: []string{"--name", "nobody", "--yes"}, want: []string{"--name"}},
		{name: "empty name", args: []string{"--name", "", "--yes"}, want: []string{"--name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := c.run(append([]string{"mtls", "revoke"}, tt.args...)...)
			if code != 2 || strings.Count(errOut, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not name %q", errOut, w)
				}
			}
			if st := c.states(); st[serial] != "active" {
				t.Fatalf("refused revoke changed the store: %v", st)
			}
		})
	}
}

// TestListFiltersCLI (issue 14 item 3): --state, --expiring and --name
// select, and combine.
func TestListFiltersCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	a := c.issueJSON("--name", "claude-a", "--duration", "24h")
	b := c.issueJSON("--name", "claude-b", "--duration", "30d")
	r := c.issueJSON("--name", "claude-c", "--duration", "30d")
	o := c.issueJSON("--name", "ops", "--role", "operator", "--duration", "10d")
	c.mustRun("mtls", "revoke", "--serial", r)
	now := time.Now()
	tests := []struct {
		name string
		at   time.Time
		args []string
		want []string
	}{
		{name: "no filter", at: now, want: []string{a, b, r, o}},
		{name: "active", at: now, args: []string{"--state", "active"}, want: []string{a, b, o}},
		{name: "revoked", at: now, args: []string{"--state", "REVOKED"}, want: []string{r}},
		{name: "two states", at: now.Add(48 * time.Hour), args: []string{"--state", "expired,revoked"}, want: []string{a, r}},
		{name: "expired later", at: now.Add(48 * time.Hour), args: []string{"--state", "expired"}, want: []string{a}},
		{name: "expiring 72h", at: now, args: []string{"--expiring", "72h"}, want: []string{a}},
		{name: "expiring 3d, a week on", at: now.Add(8 * 24 * time.Hour), args: []string{"--expiring", "3d"}, want: []string{o}},
		{name: "name glob", at: now, args: []string{"--name", "claude-*"}, want: []string{a, b, r}},
		{name: "glob and state", at: now, args: []string{"--name", "claude-?", "--state", "active"}, want: []string{a, b}},
		{name: "nothing matches", at: now, args: []string{"--name", "zzz"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := c.runAt(tt.at, append([]string{"mtls", "list", "--json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var list []struct{ Serial string }
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range list {
				got = append(got, l.Serial)
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("list %v = %v, want %v", tt.args, got, want)
			}
		})
	}
	if out := c.mustRun("mtls", "list", "--name", "zzz"); !strings.Contains(out, "no client certificate matches") {
		t.Errorf("empty filtered table: %q", out)
	}
}

// TestListBadFlagsExit2 (issue 14 item 3): a bad filter is exit 2 naming
// the flag, before anything is read.
func TestListBadFlagsExit2(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{name: "unknown state", args: []string{"--state", "valid"}, flag: "--state"},
		{name: "one bad state of two", args: []string{"--state", "active,gone"}, flag: "--state"},
		{name: "only commas", args: []string{"--state", ","}, flag: "--state"},
		{name: "expiring not a duration", args: []string{"--expiring", "soon"}, flag: "--expiring"},
		{name: "expiring zero", args: []string{"--expiring", "0s"}, flag: "--expiring"},
		{name: "expiring negative", args: []string{"--expiring", "-72h"}, flag: "--expiring"},
		{name: "bad glob", args: []string{"--name", "claude-["}, flag: "--name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := c.run(append([]string{"mtls", "list"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.flag+` "`) || strings.Count(errOut, "\n") != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and one line naming %s", code, out, errOut, tt.flag)
			}
		})
	}
}
