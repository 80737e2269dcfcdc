package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

func TestTermSafe(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"plain", "ops-1.example", "ops-1.example"},
		{"other scripts", "ünïcode 日本", "ünïcode 日本"},
		{"ESC sequence", "a\x1b[2Jb", `a\x1b[2Jb`},
		{"CR and LF", "a\r\nb", `a\x0d\x0ab`},
		{"DEL and C1 CSI", "a\x7f\u009b31m", `a\x7f\x9b31m`},
		{"bidi override and isolate", "a\u202eb\u2066c", `a\u202eb\u2066c`},
		{"not UTF-8", "a\xffb", `a\xffb`},
	}
	for _, tt := range tests {
		if got := termSafe(tt.in); got != tt.want {
			t.Errorf("%s: termSafe(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestHumanOutputEscapesPeerStrings: a CN with ESC, CR and a newline once
// forged a line of `nefia audit tail` in the operator's terminal (issue 10
// item 13). Every human output that prints such a string escapes it: audit
// tail, mtls list and the revoke message (names from state files).
func TestHumanOutputEscapesPeerStrings(t *testing.T) {
	t.Parallel()
	const evil = "x\x1b[2K\r2026-01-01T00:00:00.000Z  mtls.revoke  ok  forged\n\u202egnp.exe"
	c := newCLI(t)
	c.mustRun("mtls", "init")
	out := c.mustRun("mtls", "issue-client", "--name", "victim", "--out-dir", c.outDir(), "--json")
	serial := issueOut(t, out).Serial

	trail, err := audit.Open(filepath.Join(c.stateDir, "audit"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := trail.Append(audit.Record{Event: audit.EventConnectionRejected, Outcome: audit.OutcomeDenied, RemoteAddr: evil,
		Agent: &audit.Agent{Name: evil, Serial: evil, Unverified: true}, Reason: evil, Error: evil}, true); err != nil {
		t.Fatal(err)
	}
	trail.Close()

	// The inventory is a file anyone with access to the state dir can edit.
	inv := filepath.Join(c.stateDir, "mtls_issued.json")
	data, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inv, []byte(strings.Replace(string(data), `"victim"`, `"victim\u001b[2K\r\nforged"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		args  []string
		lines int
	}{
		{"audit tail", []string{"audit", "tail", "-n", "1"}, 1},
		{"mtls list", []string{"mtls", "list"}, 2}, // the header and victim
		{"mtls revoke", []string{"mtls", "revoke", "--serial", serial}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := c.run(tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if strings.ContainsAny(stdout, "\x1b\r\u202e") {
				t.Errorf("raw control characters in the output: %q", stdout)
			}
			if !strings.Contains(stdout, `\x1b[2K\x0d`) {
				t.Errorf("the escaped string is not shown: %q", stdout)
			}
			if got := strings.Count(stdout, "\n"); got != tt.lines {
				t.Errorf("%d lines, want %d (a newline in a name forged one): %q", got, tt.lines, stdout)
			}
		})
	}
}
