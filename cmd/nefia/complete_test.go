package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nefia/nefia/pki"
)

// completions runs cobra's hidden __complete command in-process and returns
// the completed values (descriptions dropped) and the directive line.
func (c *cli) completions(args ...string) ([]string, string) {
	c.t.Helper()
	out, errOut, code := c.run(append([]string{"__complete"}, args...)...)
	if code != 0 {
		c.t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
	}
	var values []string
	directive := ""
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if strings.HasPrefix(line, ":") {
			directive = line
			continue
		}
		if line != "" {
			values = append(values, strings.SplitN(line, "\t", 2)[0])
		}
	}
	return values, directive
}

// TestCompletionCompletesFlagValues (issue 14 item 4): Tab completes flag
// values, fixed ones and serials and names from the inventory, and a broken
// inventory completes nothing rather than failing.
func TestCompletionCompletesFlagValues(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	keep := c.issueJSON("--name", "claude-agent")
	gone := c.issueJSON("--name", "old-laptop")
	c.mustRun("mtls", "revoke", "--serial", gone)

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "role", args: []string{"mtls", "issue-client", "--role", ""}, want: []string{"agent", "operator"}},
		{name: "role prefix", args: []string{"mtls", "issue-client", "--role", "op"}, want: []string{"operator"}},
		{name: "log-level", args: []string{"mtls", "list", "--log-level", ""}, want: []string{"debug", "info", "warn", "error"}},
		{name: "log-format", args: []string{"--log-format", ""}, want: []string{"text", "json"}},
		{name: "list state", args: []string{"mtls", "list", "--state", ""}, want: []string{"active", "expired", "revoked", "not_yet_valid"}},
		{name: "list name: every name", args: []string{"mtls", "list", "--name", ""}, want: []string{"claude-agent", "old-laptop"}},
		{name: "revoke name: revocable only", args: []string{"mtls", "revoke", "--name", ""}, want: []string{"claude-agent"}},
		{name: "revoke serial: revocable only", args: []string{"mtls", "revoke", "--serial", ""}, want: []string{keep}},
		{name: "revoke serial prefix", args: []string{"mtls", "revoke", "--serial", strings.ToUpper(keep[:3])}, want: []string{keep}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, directive := c.completions(tt.args...)
			if !slices.Equal(got, tt.want) {
				t.Errorf("completions %v = %v, want %v", tt.args, got, tt.want)
			}
			if directive != ":4" { // ShellCompDirectiveNoFileComp
				t.Errorf("directive %q, want :4 (no file completion)", directive)
			}
		})
	}

	t.Run("broken inventory completes nothing, quietly", func(t *testing.T) {
		b := newCLI(t)
		if err := os.MkdirAll(b.stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.stateDir, pki.IssuedFile), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := b.run("__complete", "mtls", "revoke", "--serial", "")
		if code != 0 || strings.TrimSpace(out) != ":4" || strings.Contains(errOut, "nefia") || strings.Contains(errOut, "level=") {
			t.Fatalf("exit %d, stdout %q, stderr %q; want only the directive and no log line", code, out, errOut)
		}
	})
}
