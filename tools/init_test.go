package tools_test

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

func TestInit(t *testing.T) {
	e := newEnv(t, withoutCA())
	r := e.call(tools.NameInit, map[string]any{"hosts": []string{"gw.example.test", "10.0.0.1"}})
	var out tools.InitOutput
	e.wantOK(tools.NameInit, r, &out)

	if out.Archived {
		t.Error("archived = true on a fresh state directory")
	}
	if out.ConfigFile != e.configPath {
		t.Errorf("config_file = %q, want %q", out.ConfigFile, e.configPath)
	}
	// The host of the configured listen address (127.0.0.1 by default) is
	// always added: clients dial it (issue 13 item 3).
	if !slices.Equal(out.Server.SANs, []string{"gw.example.test", "10.0.0.1", "127.0.0.1"}) {
		t.Errorf("server SANs = %v", out.Server.SANs)
	}
	st := e.store.Status()
	if st.CA == nil || st.CA.Fingerprint != out.CA.Fingerprint || st.Server.Fingerprint != out.Server.Fingerprint {
		t.Errorf("result does not describe the certificates on disk: %+v vs %+v", out, st)
	}
	cfg, err := config.Load(e.configPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MCP.MTLS.Enabled {
		t.Error("mcp.mtls.enabled not set in nefia.yaml")
	}
	if strings.Contains(r.raw, e.store.Dir()) {
		t.Errorf("result reveals the state directory: %s", r.raw)
	}
}

func TestInitExistingCA(t *testing.T) {
	e := newEnv(t)
	before := e.store.Status().CA.Fingerprint
	issued := e.call(tools.NameIssueClient, map[string]any{"name": "old-client"})
	e.wantOK(tools.NameIssueClient, issued, nil)

	r := e.call(tools.NameInit, map[string]any{"hosts": []string{"localhost"}})
	e.wantRefused(tools.NameInit, r, "already exists", "force=true", "1 client certificates", "stops working")
	if got := e.store.Status().CA.Fingerprint; got != before {
		t.Fatal("a refused init replaced the CA")
	}
	if len(e.inventory()) != 1 {
		t.Fatal("a refused init touched the inventory")
	}

	r = e.call(tools.NameInit, map[string]any{"hosts": []string{"localhost"}, "force": true})
	var out tools.InitOutput
	e.wantOK(tools.NameInit, r, &out)
	if !out.Archived {
		t.Error("archived = false after replacing a CA")
	}
	if out.CA.Fingerprint == before {
		t.Error("force did not create a new CA")
	}
	if len(e.inventory()) != 0 {
		t.Error("the new CA inherited the old inventory")
	}
	if strings.Contains(r.raw, e.store.Dir()) {
		t.Errorf("result reveals the state directory: %s", r.raw)
	}
}

func TestInitBadInput(t *testing.T) {
	tests := []struct {
		name string
		args any
		want []string
	}{
		{"no arguments", nil, []string{`"hosts" is required`}},
		{"empty object", map[string]any{}, []string{`"hosts" is required`}},
		{"empty hosts", map[string]any{"hosts": []string{}}, []string{`"hosts" is required`}},
		{"only blank hosts", map[string]any{"hosts": []string{" ", ""}}, []string{`"hosts"`, "at least one"}},
		{"hosts is a string", map[string]any{"hosts": "localhost"}, []string{`"hosts" must be an array of strings`}},
		{"hosts holds a number", map[string]any{"hosts": []any{"localhost", 7}}, []string{`"hosts" must be an array of strings`}},
		{"invalid host", map[string]any{"hosts": []string{"bad host!"}}, []string{`"hosts"`, "bad host!"}},
		{"too many hosts", map[string]any{"hosts": slices.Repeat([]string{"a.test"}, 101)}, []string{"at most 100"}},
		{"force is a string", map[string]any{"hosts": []string{"localhost"}, "force": "yes"}, []string{`"force" must be a boolean`}},
		{"unknown argument", map[string]any{"hosts": []string{"localhost"}, "host": "x"}, []string{`unknown argument "host"`, "accepts force, hosts"}},
		{"wrong case", map[string]any{"Hosts": []string{"localhost"}}, []string{`unknown argument "Hosts"`}},
		{"arguments not an object", []any{"localhost"}, []string{"must be a JSON object", "force, hosts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withoutCA())
			e.wantRefused(tools.NameInit, e.call(tools.NameInit, tt.args), tt.want...)
			if _, err := os.Stat(e.store.Path(pki.CACertFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Error("a refused init created a CA")
			}
			if _, err := os.Stat(e.configPath); !errors.Is(err, fs.ErrNotExist) {
				t.Error("a refused init wrote nefia.yaml")
			}
		})
	}
}

// TestInitConfigFailure covers the one partial outcome: certificates made,
// configuration not updated. The caller must learn both, and not to retry.
func TestInitConfigFailure(t *testing.T) {
	e := newEnv(t, withoutCA())
	if err := os.MkdirAll(e.configPath, 0o700); err != nil { // a directory where the file should be
		t.Fatal(err)
	}
	r := e.call(tools.NameInit, map[string]any{"hosts": []string{"localhost"}})
	e.wantRefused(tools.NameInit, r, "were created", "mcp.mtls.enabled", "nefia.yaml", "do not call init again")
	if e.store.Status().CA == nil {
		t.Error("no CA although the message says it was created")
	}
}
