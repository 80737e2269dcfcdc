package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server/servertest"
)

const policyYAML = `version: 1
mcp:
  policy:
    - match: {role: agent}
      allow: [nefia.mtls.status, "fs.read_*", "fs.list_*"]
    - match: {name: "ci-*"}
      allow: ["tickets.*"]
    - match: {role: operator}
      allow: [nefia.mtls.status, nefia.mtls.init]
`

func (c *cli) writeConfig(content string) {
	c.t.Helper()
	if err := os.MkdirAll(filepath.Dir(c.config), 0o700); err != nil {
		c.t.Fatal(err)
	}
	// Replaced, not rewritten in place: a running gateway's reload must
	// not catch the file half written (config.Reload refuses an empty
	// one, TestReloadKeepsRunningOnEmptyOrMissingFile; a torn one may
	// still parse).
	tmp := c.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.config); err != nil {
		c.t.Fatal(err)
	}
}

// TestPolicyCheck: `nefia policy check` explains decisions of the
// configured policy and of the built-in default, exits 0 allowed / 1
// denied / 2 for bad flags or a bad policy, and changes nothing.
func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	configured := newCLI(t)
	configured.writeConfig(policyYAML)
	bare := newCLI(t) // no config file: the built-in default
	badGlob := newCLI(t)
	badGlob.writeConfig("version: 1\nmcp:\n  policy:\n    - match: {role: agent}\n      allow: [\"fs.[read\"]\n")
	typo := newCLI(t)
	typo.writeConfig("version: 1\nmcp:\n  policy:\n    - match: {role: agent}\n      allow: [a]\n    - match: {nmae: ci-*}\n      allow: [b]\n")

	tests := []struct {
		name     string
		c        *cli
		args     []string
		wantCode int
		stdout   []string
		stderr   string
	}{
		{"allowed by role glob", configured, []string{"--name", "bot", "--role", "agent", "--tool", "fs.read_file"}, 0,
			[]string{`allowed: "bot" (role agent) may call fs.read_file`, `rule:   mcp.policy[0] {role: agent}, pattern "fs.read_*"`, "nefia tools it may call: nefia.mtls.status"}, ""},
		{"allowed by name glob", configured, []string{"--name", "ci-build", "--role", "agent", "--tool", "tickets.create"}, 0,
			[]string{`mcp.policy[1] {name: "ci-*"}, pattern "tickets.*"`}, ""},
		{"denied outside the globs", configured, []string{"--name", "bot", "--role", "agent", "--tool", "tickets.create"}, 1,
			[]string{`denied: "bot" (role agent) may not call tickets.create`, `reason: no rule of mcp.policy matching name "bot" with role agent allows tickets.create`}, "tickets.create is denied"},
		{"configured operator narrowed", configured, []string{"--name", "alice", "--role", "operator", "--tool", "nefia.mtls.revoke"}, 1,
			[]string{"nefia tools it may call: nefia.mtls.init, nefia.mtls.status"}, "denied"},
		{"default operator", bare, []string{"--name", "alice", "--role", "operator", "--tool", "nefia.mtls.revoke"}, 0,
			[]string{"policy: built-in default (no config file at", `rule:   default[0] {role: operator}, pattern "*"`}, ""},
		{"default agent status", bare, []string{"--name", "bot", "--role", "agent", "--tool", "nefia.mtls.status"}, 0,
			[]string{`default[1] {role: agent}, pattern "nefia.mtls.status"`}, ""},
		{"default agent init", bare, []string{"--name", "bot", "--role", "agent", "--tool", "nefia.mtls.init"}, 1,
			[]string{"reason: no rule of the built-in default policy matching"}, "denied"},
		{"missing name", configured, []string{"--role", "agent", "--tool", "x"}, 2, nil, "--name is required"},
		{"bad name", configured, []string{"--name", "../x", "--role", "agent", "--tool", "x"}, 2, nil, "--name"},
		{"missing role", configured, []string{"--name", "bot", "--tool", "x"}, 2, nil, `--role "": want agent or operator`},
		{"bad role", configured, []string{"--name", "bot", "--role", "admin", "--tool", "x"}, 2, nil, `--role "admin"`},
		{"role case", configured, []string{"--name", "bot", "--role", "Agent", "--tool", "x"}, 2, nil, "--role"},
		{"missing tool", configured, []string{"--name", "bot", "--role", "agent"}, 2, nil, "--tool is required"},
		{"unknown flag", configured, []string{"--name", "bot", "--role", "agent", "--tool", "x", "--rule", "1"}, 2, nil, "unknown flag"},
		{"malformed glob in config", badGlob, []string{"--name", "bot", "--role", "agent", "--tool", "x"}, 2, nil, `mcp.policy[0].allow[0]: "fs.[read" is not a valid`},
		{"unknown key in a rule", typo, []string{"--name", "bot", "--role", "agent", "--tool", "x"}, 2, nil, `:6: unknown key "mcp.policy[1].match.nmae"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(tt.c.config)
			stdout, stderr, code := tt.c.run(append([]string{"policy", "check"}, tt.args...)...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout, stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q does not contain %q", stdout, w)
				}
			}
			if !strings.Contains(stderr, tt.stderr) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("stderr %q, want one line containing %q", stderr, tt.stderr)
			}
			if after, _ := os.ReadFile(tt.c.config); string(after) != string(before) {
				t.Error("policy check changed the config file")
			}
			if _, err := os.Stat(tt.c.stateDir); err == nil {
				t.Error("policy check created the state directory")
			}
		})
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.writeConfig(policyYAML)
	for _, tt := range []struct {
		tool    string
		code    int
		allowed bool
		rule    int
	}{
		{"tickets.close", 0, true, 1},
		{"nefia.mtls.revoke", 1, false, -1},
	} {
		stdout, _, code := c.run("policy", "check", "--name", "ci-9", "--role", "agent", "--tool", tt.tool, "--json")
		var rep struct {
			Name, Role, Tool, Source, Reason, Pattern string
			Allowed                                   bool
			Rule                                      int
			NefiaTools                                []string `json:"nefia_tools"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", tt.tool, err, stdout)
		}
		if code != tt.code || rep.Allowed != tt.allowed || rep.Rule != tt.rule || rep.Name != "ci-9" || rep.Role != "agent" ||
			rep.Tool != tt.tool || rep.Source != "mcp.policy" || rep.Reason == "" || !slices.Equal(rep.NefiaTools, []string{"nefia.mtls.status"}) {
			t.Errorf("%s: exit %d, report %+v", tt.tool, code, rep)
		}
	}
}

// TestServeStdioUsesConfiguredPolicy: `nefia mcp serve` enforces
// mcp.policy; here it narrows the local operator to two tools.
func TestServeStdioUsesConfiguredPolicy(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.writeConfig(policyYAML)
	mc, ctx := serveStdioBin(t, c)
	list, err := mc.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if !slices.Equal(names, []string{"nefia.mtls.init", "nefia.mtls.status"}) {
		t.Errorf("tools/list under mcp.policy = %v", names)
	}
	res := servertest.CallTool(t, mc, "nefia.mtls.revoke", map[string]any{"serial": "01"})
	if !res.IsError || !strings.Contains(res.Content[0].(mcp.TextContent).Text, "allowed: nefia.mtls.init, nefia.mtls.status") {
		t.Errorf("revoke under mcp.policy = %+v", res.Content)
	}
}
