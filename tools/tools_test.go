package tools_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/tools"
)

func TestNames(t *testing.T) {
	want := []string{"nefia.mtls.init", "nefia.mtls.issue_client", "nefia.mtls.status", "nefia.mtls.revoke", "nefia.mtls.renew", "nefia.mtls.renew_server"}
	got := tools.Names()
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	got[0] = "changed"
	if tools.Names()[0] != want[0] {
		t.Fatal("Names returned its internal slice")
	}
}

func TestRegister(t *testing.T) {
	store := pkitest.NewStore(t)
	cfg := filepath.Join(t.TempDir(), "nefia.yaml")
	tests := []struct {
		name    string
		deps    tools.Deps
		prepare func(*server.MCPServer)
		wantErr bool
	}{
		{name: "ok", deps: tools.Deps{Store: store, ConfigPath: cfg}},
		{name: "no store", deps: tools.Deps{ConfigPath: cfg}, wantErr: true},
		{name: "no config path", deps: tools.Deps{Store: store}, wantErr: true},
		{
			name: "name taken",
			deps: tools.Deps{Store: store, ConfigPath: cfg},
			prepare: func(s *server.MCPServer) {
				s.AddTool(mcp.NewTool(tools.NameRevoke), func(ctx context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					return nil, nil
				})
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server.NewMCPServer("t", "0")
			if tt.prepare != nil {
				tt.prepare(srv)
			}
			err := tools.Register(srv, tt.deps)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Register() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if got := srv.GetTool(tools.NameInit); got != nil {
					t.Error("a refused Register added tools")
				}
				return
			}
			for _, name := range tools.Names() {
				if srv.GetTool(name) == nil {
					t.Errorf("%s not registered", name)
				}
			}
		})
	}
}

// TestAnnotations pins the hints clients use to decide what needs a human's
// confirmation: they must tell the truth about every tool.
func TestAnnotations(t *testing.T) {
	e := newEnv(t)
	list, err := e.client.ListTools(t.Context(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type hints struct{ readOnly, destructive, idempotent bool }
	want := map[string]hints{
		tools.NameInit:        {readOnly: false, destructive: true, idempotent: false},
		tools.NameIssueClient: {readOnly: false, destructive: true, idempotent: false},
		tools.NameStatus:      {readOnly: true, destructive: false, idempotent: true},
		tools.NameRevoke:      {readOnly: false, destructive: true, idempotent: true},
		tools.NameRenew:       {readOnly: false, destructive: false, idempotent: false},
		tools.NameRenewServer: {readOnly: false, destructive: true, idempotent: false},
	}
	if len(list.Tools) != len(want) {
		t.Fatalf("tools/list has %d tools, want %d", len(list.Tools), len(want))
	}
	for _, tl := range list.Tools {
		t.Run(tl.Name, func(t *testing.T) {
			w, ok := want[tl.Name]
			if !ok {
				t.Fatalf("unexpected tool %s", tl.Name)
			}
			a := tl.Annotations
			for _, h := range []struct {
				name string
				got  *bool
				want bool
			}{
				{"readOnlyHint", a.ReadOnlyHint, w.readOnly},
				{"destructiveHint", a.DestructiveHint, w.destructive},
				{"idempotentHint", a.IdempotentHint, w.idempotent},
				{"openWorldHint", a.OpenWorldHint, false},
			} {
				if h.got == nil || *h.got != h.want {
					t.Errorf("%s = %v, want %v", h.name, fmt.Sprint(deref(h.got)), h.want)
				}
			}
			if a.Title == "" || tl.Description == "" {
				t.Error("missing title or description")
			}
			if tl.OutputSchema.Type != "object" {
				t.Error("missing output schema")
			}
		})
	}
}

func deref(b *bool) any {
	if b == nil {
		return "unset"
	}
	return *b
}

// TestDefaultAgentToolsAreReadOnly: the built-in policy grants agents only
// tools that exist and say they change nothing, so a renamed or new
// state-changing tool cannot slip into the agents' default. The one
// exception is named here: nefia.mtls.renew changes state but acts only on
// the caller's own certificate, with no more authority (issue 13).
func TestDefaultAgentToolsAreReadOnly(t *testing.T) {
	store := pkitest.NewStore(t)
	srv := server.NewMCPServer("t", "0")
	if err := tools.Register(srv, tools.Deps{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml")}); err != nil {
		t.Fatal(err)
	}
	selfScoped := map[string]bool{tools.NameRenew: true}
	for _, name := range policy.DefaultAgentTools {
		st := srv.GetTool(name)
		if selfScoped[name] {
			if st == nil || st.Tool.Annotations.DestructiveHint == nil || *st.Tool.Annotations.DestructiveHint {
				t.Errorf("default agent tool %s is missing or destructive", name)
			}
			continue
		}
		if st == nil {
			t.Errorf("default agent tool %s is not registered", name)
			continue
		}
		if ro := st.Tool.Annotations.ReadOnlyHint; ro == nil || !*ro {
			t.Errorf("default agent tool %s is not read-only", name)
		}
		if _, changes := tools.StateEvent(name); changes {
			t.Errorf("default agent tool %s changes state", name)
		}
	}
}
