package tools_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name      string
		opts      []envOpt
		live      int
		wantConns *int
	}{
		{name: "gateway", live: 3, wantConns: ptr(3)},
		{name: "gateway without connections", live: 0, wantConns: ptr(0)},
		{name: "stdio omits connections", opts: []envOpt{stdioMode()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts...)
			if e.sessions != nil {
				e.sessions.count = tt.live
			}
			iss := pkitest.Issue(t, e.store, "a", pki.RoleAgent, time.Hour)
			pkitest.Issue(t, e.store, "b", pki.RoleAgent, time.Hour)
			if _, err := e.store.Revoke(iss.Serial, ""); err != nil {
				t.Fatal(err)
			}

			// Agents may read the status; the tool itself needs no identity.
			r := e.callCtx(as(t, agent), tools.NameStatus, map[string]any{})
			var got tools.StatusReport
			e.wantOK(tools.NameStatus, r, &got)

			// Exactly the CLI's `nefia mtls status --json`, plus connections.
			cfg, err := config.Load(e.configPath)
			if err != nil {
				t.Fatal(err)
			}
			want := tools.BuildStatus(e.store, cfg, nil)
			want.StateDir, want.ConfigFile = "", "" // operators only
			want.Connections = tt.wantConns
			want.Caller = &agent
			if a, b := mustJSON(t, got), mustJSON(t, want); a != b {
				t.Errorf("status =\n%s\nwant\n%s", a, b)
			}
			if got.Clients == nil || *got.Clients != (pki.ClientCounts{Issued: 2, Active: 1, Revoked: 1}) {
				t.Errorf("clients = %+v", got.Clients)
			}
			if _, present := structuredMap(t, r)["connections"]; present != (tt.wantConns != nil) {
				t.Errorf("connections present = %v, want %v", present, tt.wantConns != nil)
			}
		})
	}
}

// TestStatusBrokenConfig: a configuration that does not load is reported as
// a problem alongside the rest of the report, not as a failed call.
func TestStatusBrokenConfig(t *testing.T) {
	e := newEnv(t)
	mkdir(t, filepath.Dir(e.configPath))
	writeFile(t, e.configPath, "version: 1\nmcp:\n  mtls:\n    listen_adr: x\n")
	r := e.call(tools.NameStatus, nil)
	var got tools.StatusReport
	e.wantOK(tools.NameStatus, r, &got)
	if got.CA == nil {
		t.Error("CA missing from the report")
	}
	if len(got.Problems) == 0 {
		t.Error("the broken configuration is not reported")
	}
}

func TestStatusBadInput(t *testing.T) {
	e := newEnv(t)
	r := e.call(tools.NameStatus, map[string]any{"verbose": true})
	e.wantRefused(tools.NameStatus, r, `unknown argument "verbose"`, "takes no arguments")
}

func ptr[T any](v T) *T { return &v }

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func structuredMap(t *testing.T, r result) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(mustJSON(t, r.StructuredContent)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStatusFollowsChanges checks that the cached report never hides a
// change: each state change shows in the very next call.
func TestStatusFollowsChanges(t *testing.T) {
	e := newEnv(t)
	counts := func() pki.ClientCounts {
		var got tools.StatusReport
		e.wantOK(tools.NameStatus, e.callCtx(as(t, agent), tools.NameStatus, map[string]any{}), &got)
		if got.Clients == nil {
			t.Fatalf("clients unknown: %s", got.ClientsError)
		}
		return *got.Clients
	}
	if c := counts(); c.Issued != 0 {
		t.Fatalf("fresh store counts %+v", c)
	}
	iss := pkitest.Issue(t, e.store, "a", pki.RoleAgent, time.Hour)
	if c := counts(); c != (pki.ClientCounts{Issued: 1, Active: 1}) {
		t.Fatalf("after issue: %+v", c)
	}
	if _, err := e.store.Revoke(iss.Serial, ""); err != nil {
		t.Fatal(err)
	}
	if c := counts(); c != (pki.ClientCounts{Issued: 1, Revoked: 1}) {
		t.Fatalf("after revoke: %+v", c)
	}
}

// TestStatusHidesHostPathsFromAgents (issue 10, item 15): where the gateway
// keeps its state and configuration on its host is for operators. An agent
// (or a caller of unknown role) gets neither path, in the structured content
// or the text, and no absolute path in a problem.
func TestStatusHidesHostPathsFromAgents(t *testing.T) {
	tests := []struct {
		name      string
		ctx       func(t *testing.T) context.Context
		seesPaths bool
	}{
		{name: "operator", ctx: func(t *testing.T) context.Context { return as(t, operator) }, seesPaths: true},
		{name: "stdio local operator", ctx: func(t *testing.T) context.Context {
			return as(t, identity.LocalOperator(identity.TransportStdio))
		}, seesPaths: true},
		{name: "agent", ctx: func(t *testing.T) context.Context { return as(t, agent) }},
		{name: "no identity", ctx: func(t *testing.T) context.Context { return t.Context() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			// A configuration that does not load: its error names the file.
			mkdir(t, filepath.Dir(e.configPath))
			writeFile(t, e.configPath, "version: 1\nmcp:\n  mtls:\n    listen_adr: x\n")
			r := e.callCtx(tt.ctx(t), tools.NameStatus, map[string]any{})
			var got tools.StatusReport
			e.wantOK(tools.NameStatus, r, &got)
			m := structuredMap(t, r)
			_, hasDir := m["state_dir"]
			_, hasCfg := m["config_file"]
			if hasDir != tt.seesPaths || hasCfg != tt.seesPaths {
				t.Errorf("state_dir present %v, config_file present %v; want %v", hasDir, hasCfg, tt.seesPaths)
			}
			if tt.seesPaths {
				if got.StateDir != e.store.Dir() || got.ConfigFile != e.configPath {
					t.Errorf("operator sees state_dir %q, config_file %q", got.StateDir, got.ConfigFile)
				}
				return
			}
			for _, dir := range []string{e.store.Dir(), filepath.Dir(e.configPath)} {
				if strings.Contains(r.raw, dir) {
					t.Errorf("the result names %s:\n%s", dir, r.raw)
				}
			}
			if !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.Contains(p, filepath.Base(e.configPath)) }) {
				t.Errorf("problems %q do not say which file is broken", got.Problems)
			}
		})
	}
}
