package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nefia/nefia/pki"
)

// TestIssueClientForceWarnsAndRevokesPrevious: re-issuing a name with
// --force says on stderr which earlier certificates stay active, and
// --revoke-previous revokes them (audited) once the new one is written
// (issue 13 item 5).
func TestIssueClientForceWarnsAndRevokesPrevious(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	issue := func(extra ...string) (serial, stderr string) {
		t.Helper()
		args := append([]string{"mtls", "issue-client", "--name", "bot", "--out-dir", c.outDir(), "--json"}, extra...)
		out, errOut, code := c.run(args...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var v struct{ Serial string }
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		return v.Serial, errOut
	}
	first, stderr := issue()
	if stderr != "" {
		t.Errorf("first issuance warned: %q", stderr)
	}
	second, stderr := issue("--force")
	if !strings.Contains(stderr, "warning") || !strings.Contains(stderr, first) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q: want one warning line naming %s", stderr, first)
	}
	third, stderr := issue("--force", "--revoke-previous")
	if stderr != "" {
		t.Errorf("stderr %q after --revoke-previous", stderr)
	}
	store := pki.NewStore(c.stateDir)
	for serial, want := range map[string]pki.CertState{first: pki.StateRevoked, second: pki.StateRevoked, third: pki.StateActive} {
		if got, _, _ := store.Lookup(serial); got.State != want {
			t.Errorf("%s is %s, want %s", serial, got.State, want)
		}
	}
	revoked := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(c.mustRun("audit", "tail", "-n", "50", "--json")), "\n") {
		var r struct {
			Event, Outcome string
			Args           map[string]any
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.Event == "mtls.revoke" && r.Outcome == "ok" {
			revoked[r.Args["serial"].(string)] = true
		}
	}
	if !revoked[first] || !revoked[second] || len(revoked) != 2 {
		t.Errorf("audited revocations %v, want %s and %s", revoked, first, second)
	}
}
