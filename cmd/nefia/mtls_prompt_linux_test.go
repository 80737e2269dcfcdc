package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRevokeByNamePromptsOnTerminal (issue 14 item 3): with a terminal on
// stdin (a pseudo-terminal from util-linux script(1) here), 'revoke --name'
// asks after listing the certificates; anything but y/yes revokes nothing.
func TestRevokeByNamePromptsOnTerminal(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) not installed: no pseudo-terminal to test the prompt with")
	}
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	serial := c.issueJSON("--name", "laptop")
	tests := []struct {
		name, answer, want, state string
	}{
		{name: "no", answer: "n\n", want: "nothing revoked", state: "active"},
		{name: "empty answer", answer: "\n", want: "nothing revoked", state: "active"},
		{name: "yes", answer: "yes\n", want: "Revoked " + serial, state: "revoked"},
	}
	for _, tt := range tests { // in order: the last one revokes
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("script", "-qec", nefiaBin+" mtls revoke --name laptop", "/dev/null")
			cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
			cmd.Stdin = strings.NewReader(tt.answer)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), "Revoke these 1? [y/N]") || !strings.Contains(string(out), serial) || !strings.Contains(string(out), tt.want) {
				t.Fatalf("output %q; want the list, the question and %q", out, tt.want)
			}
			if st := c.states(); st[serial] != tt.state {
				t.Fatalf("after answering %q: %s, want %s", tt.answer, st[serial], tt.state)
			}
		})
	}
}
