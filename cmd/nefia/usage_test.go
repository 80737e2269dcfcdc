package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/nefia/nefia/pki"
)

// TestCobraErrorsAreTyped: every usage mistake cobra itself catches comes
// back as a usageError (exit 2) found with errors.As, naming what was wrong,
// without any matching of cobra's message text.
func TestCobraErrorsAreTyped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown command", args: []string{"bogus"}, want: `unknown command "bogus" for "nefia"`},
		{name: "unknown subcommand", args: []string{"mtls", "bogus"}, want: `unknown command "bogus" for "nefia mtls"`},
		{name: "unknown flag", args: []string{"mtls", "list", "--bogus"}, want: "unknown flag: --bogus"},
		{name: "flag without value", args: []string{"mtls", "list", "--state-dir"}, want: "flag needs an argument"},
		{name: "bad flag value", args: []string{"audit", "tail", "-n", "x"}, want: `invalid argument "x"`},
		{name: "extra argument", args: []string{"mtls", "list", "extra"}, want: `unknown command "extra" for "nefia mtls list"`},
		{name: "required flag", args: []string{"mtls", "issue-client"}, want: "--name is required"},
		{name: "one of several flags", args: []string{"mtls", "revoke"}, want: "give exactly one of --serial, --name or --cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t)
			var stdout, stderr strings.Builder
			getenv := func(k string) string {
				return map[string]string{"NEFIA_STATE_DIR": c.stateDir, "NEFIA_CONFIG": c.config}[k]
			}
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, clock: pki.SystemClock{}, getenv: getenv}
			err := e.run(t.Context(), tt.args)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("nefia %s: error %v (%T), want a usageError", strings.Join(tt.args, " "), err, err)
			}
			if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("nefia %s: exit %d, %q; want exit 2 and %q", strings.Join(tt.args, " "), exitCode(err), err, tt.want)
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	stdout, stderr, code := c.run("--version")
	if code != 0 || !strings.HasPrefix(stdout, "nefia ") || !strings.Contains(stdout, "commit ") {
		t.Errorf("nefia --version: exit %d, stdout %q, stderr %q; want exit 0 and 'nefia VERSION, commit ...'", code, stdout, stderr)
	}
}
