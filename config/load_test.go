package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeFile writes content to nefia.yaml in a fresh directory and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nefia.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const fullFile = `version: 1
mcp:
  mtls:
    enabled: true
    listen_addr: 0.0.0.0:8443
    ca_cert_file: /etc/nefia/ca.crt
    cert_file: server.crt
    key_file: "/etc/nefia/server.key"
    max_connections: 200
`

const policyFile = `version: 1
mcp:
  policy:
    - match: {role: agent}
      allow: [nefia.mtls.status, "fs.read_*", "fs.list_*"]
    # CI certificates also use the tickets upstream.
    - match:
        name: "ci-*"
      allow:
        - "tickets.*"
    - match: {role: operator}
      allow: ["*"]
`

func withPolicy(rules []PolicyRule) Config {
	c := Default()
	c.MCP.Policy = rules
	return c
}

func TestLoad(t *testing.T) {
	partial := Default()
	partial.MCP.MTLS.Enabled = true
	tests := []struct {
		name    string
		content string
		want    Config
	}{
		{
			name:    "full",
			content: fullFile,
			want: Config{Version: 1, MCP: MCP{MTLS: MTLS{
				Enabled:                 true,
				ListenAddr:              "0.0.0.0:8443",
				CACertFile:              "/etc/nefia/ca.crt",
				CertFile:                "server.crt",
				KeyFile:                 "/etc/nefia/server.key",
				MaxConnections:          200,
				MaxConnectionsPerClient: DefaultMaxConnectionsPerClient, OperatorReserve: DefaultOperatorReserve,
				IdleTimeout: DefaultIdleTimeout, ClientMaxDuration: DefaultClientMaxDuration, ExpiryWarning: DefaultExpiryWarning, Store: Store{Backend: StoreFile, MaxStaleness: DefaultMaxStaleness},
			}}, Audit: Audit{MaxSizeMB: 100}},
		},
		{name: "empty", content: "", want: Default()},
		{name: "whitespace", content: "\n  \n", want: Default()},
		{name: "comments only", content: "# nothing yet\n", want: Default()},
		{name: "version only", content: "version: 1\n", want: Default()},
		{name: "partial keeps defaults", content: "version: 1\nmcp:\n  mtls:\n    enabled: true\n", want: partial},
		{name: "null section", content: "version: 1\nmcp:\n", want: Default()},
		{name: "policy", content: policyFile, want: withPolicy(examplePolicy())},
		{name: "empty policy", content: "version: 1\nmcp:\n  policy: []\n", want: withPolicy([]PolicyRule{})},
		{name: "null policy", content: "version: 1\nmcp:\n  policy:\n", want: Default()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			got, err := Load(path)
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if !reflect.DeepEqual(got.Config, tt.want) || !got.Exists || got.Path != path {
				t.Errorf("Load() = %+v, want %+v, Exists true, Path %s", got, tt.want, path)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "nefia.yaml")
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if !reflect.DeepEqual(got.Config, Default()) || got.Exists || got.Path != path {
		t.Errorf("Load() = %+v, want defaults, Exists false, Path %s", got, path)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		is      error
		want    string // after "config: <path>"
	}{
		{name: "unknown top-level key", content: "version: 1\nlisten: x\n", is: ErrUnknownKey, want: `:2: unknown key "listen"`},
		{
			name:    "unknown nested key",
			content: "version: 1\nmcp:\n  mtls:\n    listen_adr: 127.0.0.1:1\n",
			is:      ErrUnknownKey,
			want:    `:4: unknown key "mcp.mtls.listen_adr"`,
		},
		{name: "unknown section", content: "version: 1\nmcpp:\n  mtls: {}\n", is: ErrUnknownKey, want: `:2: unknown key "mcpp"`},
		{name: "unknown key in flow mapping", content: "version: 1\nmcp: {mtls: {x: 1}}\n", is: ErrUnknownKey, want: `unknown key "mcp.mtls.x"`},
		{name: "unknown key in policy match", content: policyFile + "    - match: {nmae: x}\n      allow: [a]\n", is: ErrUnknownKey, want: `:13: unknown key "mcp.policy[3].match.nmae"`},
		{name: "unknown key in policy rule", content: "version: 1\nmcp:\n  policy:\n    - match:\n        role: agent\n      alow: [a]\n", is: ErrUnknownKey, want: `:6: unknown key "mcp.policy[0].alow"`},
		{name: "malformed policy glob", content: "version: 1\nmcp:\n  policy:\n    - match: {role: agent}\n      allow: [\"fs.[\"]\n", is: ErrInvalid, want: `mcp.policy[0].allow[0]: "fs.[" is not a valid`},
		{name: "policy is a mapping", content: "version: 1\nmcp:\n  policy: {role: agent}\n", is: ErrMalformed, want: ":3:"},
		{name: "unclosed flow", content: "version: 1\nmcp: [\n", is: ErrMalformed, want: ":2:"},
		{name: "bad indentation", content: "version: 1\n mcp: 1\n", is: ErrMalformed, want: ": malformed YAML: "},
		{name: "duplicate key", content: "version: 1\nversion: 1\n", is: ErrMalformed, want: ":2:1: malformed YAML: "},
		{name: "wrong type", content: "version: 1\nmcp:\n  mtls:\n    enabled: maybe\n", is: ErrMalformed, want: `:4:14: malformed YAML: mcp.mtls.enabled: cannot use "maybe" as bool`},
		{name: "wrong type at top", content: "version: one\n", is: ErrMalformed, want: `:1:10: malformed YAML: version: cannot use "one" as int`},
		{name: "section is scalar", content: "version: 1\nmcp: 3\n", is: ErrMalformed, want: ":2:"},
		{name: "top level list", content: "- version: 1\n", is: ErrMalformed, want: "top level must be a mapping"},
		{name: "two documents", content: "version: 1\n---\nversion: 1\n", is: ErrMalformed, want: "more than one document"},
		{name: "missing version", content: "mcp:\n  mtls:\n    enabled: true\n", is: ErrVersion, want: `: version: missing; add "version: 1"`},
		{name: "wrong version", content: "version: 2\n", is: ErrVersion, want: ": version: must be 1, got 2"},
		{name: "invalid value", content: "version: 1\nmcp:\n  mtls:\n    max_connections: 0\n", is: ErrInvalid, want: ": mcp.mtls.max_connections: must be between 1 and 10000, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load() error = nil")
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load() error = %q, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: "+path) {
				t.Errorf("Load() error = %q, want it to start with the file name", err)
			}
			if strings.Contains(err.Error(), "\n") && tt.is != ErrInvalid {
				t.Errorf("Load() error spans several lines: %q", err)
			}
		})
	}
}

func TestLoadReportsAllUnknownKeys(t *testing.T) {
	path := writeFile(t, "version: 1\nfoo: 1\nmcp:\n  mtls:\n    bar: 2\n")
	_, err := Load(path)
	for _, want := range []string{`unknown key "foo"`, `unknown key "mcp.mtls.bar"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load() error = %v, want it to contain %s", err, want)
		}
	}
}
