package main

import (
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// toolSide is `nefia mcp serve` in stdio mode, in-process: the nefia MCP
// server (policy, audit hooks, tools) over a pipe, the local operator as
// the caller, its own state directory, configuration and audit trail.
type toolSide struct {
	stateDir, config string
	trail            *audit.Logger
	c                *client.Client
}

func newToolSide(t *testing.T) *toolSide {
	t.Helper()
	root := t.TempDir()
	ts := &toolSide{stateDir: filepath.Join(root, "state"), config: filepath.Join(root, "config", "nefia.yaml")}
	var err error
	if ts.trail, err = audit.Open(filepath.Join(ts.stateDir, "audit"), audit.Options{}); err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewMCPServerWithPolicy(tools.Deps{Store: pki.NewStore(ts.stateDir), ConfigPath: ts.config}, nil, nil, ts.trail, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer, conn := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	op := identity.LocalOperator(identity.TransportStdio)
	go func() {
		done <- server.ServeStream(ctx, conn, srv, server.StreamOptions{
			ContextFunc: func(ctx context.Context) context.Context { return identity.WithAgent(ctx, op) },
		})
	}()
	ts.c = client.NewClient(transport.NewIO(pipeEOF{peer}, peer, io.NopCloser(strings.NewReader(""))))
	t.Cleanup(func() { ts.c.Close(); cancel(); peer.Close(); <-done; ts.trail.Close() })
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if err := ts.c.Start(cctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.c.Initialize(cctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	return ts
}

// call returns the tool's result text and whether it was an error.
func (ts *toolSide) call(t *testing.T, tool string, args map[string]any) (map[string]any, string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = tool, args
	res, err := ts.c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	text := ""
	if len(res.Content) > 0 {
		text = res.Content[0].(mcp.TextContent).Text
	}
	structured, _ := res.StructuredContent.(map[string]any)
	return structured, text, res.IsError
}

type pipeEOF struct{ net.Conn }

func (p pipeEOF) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if errors.Is(err, io.ErrClosedPipe) {
		err = io.EOF
	}
	return n, err
}

// sideState is what one run left behind, minus what differs by nature
// (serials, times, fingerprints, hashes, ids, the transport).
type sideState struct {
	Inventory   []string // name/role/state
	Revocations []string // name/reason
	Config      string
	Events      []string // event outcome args(sorted k=v) result keys
}

func collect(t *testing.T, stateDir, config string, serials map[string]string) sideState {
	t.Helper()
	store := pki.NewStore(stateDir)
	var st sideState
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		st.Inventory = append(st.Inventory, c.Name+"/"+string(c.Role)+"/"+string(c.State))
	}
	revs, err := store.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range revs {
		st.Revocations = append(st.Revocations, r.Name+"/"+r.Reason)
	}
	cfg, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	st.Config = string(cfg)
	recs, err := audit.Tail(filepath.Join(stateDir, "audit"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Event == audit.EventToolCall {
			continue // the MCP server's own record of the call; the CLI has none
		}
		var args []string
		for _, k := range slices.Sorted(maps.Keys(r.Args)) {
			v, _ := json.Marshal(r.Args[k])
			s := string(v)
			switch k {
			case "serial":
				s = serials[r.Args[k].(string)] // the name it was issued to
			case "out_dir":
				s, _ = filepath.Rel(stateDir, r.Args[k].(string))
			}
			args = append(args, k+"="+s)
		}
		if r.Agent == nil || r.Agent.Role != string(pki.RoleOperator) || r.Agent.Name == "" {
			t.Errorf("%s record's agent = %+v, want the local operator", r.Event, r.Agent)
		}
		st.Events = append(st.Events, strings.Join([]string{r.Event, r.Outcome, strings.Join(args, ","),
			strings.Join(slices.Sorted(maps.Keys(r.Result)), ",")}, " "))
	}
	return st
}

// TestCLIAndToolParity runs every certificate operation once through the
// CLI and once through the MCP tool, each against its own fresh state, and
// compares what they left: inventory, revocation store, configuration and
// the state events on the audit trail (issue 11 item 1: the two used to be
// separate implementations, and their records differed).
func TestCLIAndToolParity(t *testing.T) {
	t.Parallel()
	csr, _ := pkitest.CSR(t, pkix.Name{CommonName: "from-csr"})
	c := newCLI(t)
	ts := newToolSide(t)
	cliOut := filepath.Join(c.stateDir, "clients")
	csrFile := filepath.Join(c.work, "req.csr")
	if err := os.WriteFile(csrFile, csr, 0o600); err != nil {
		t.Fatal(err)
	}
	cliSerials, toolSerials := map[string]string{}, map[string]string{}
	issued := func(m map[string]string, out string) {
		var v struct{ Serial, Name string }
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Serial == "" {
			t.Fatalf("no serial in %q: %v", out, err)
		}
		m[v.Serial] = v.Name
	}
	serialOf := func(m map[string]string, name string) string {
		for s, n := range m {
			if n == name {
				return s
			}
		}
		t.Fatalf("%s was not issued", name)
		return ""
	}

	steps := []struct {
		name string
		cli  func() []string
		tool func() (string, map[string]any)
		// wantErr: both must refuse; the CLI with exit 2 naming flag, the
		// tool naming arg, and the same explanation after it.
		flag, arg string
	}{
		{name: "init",
			cli: func() []string { return []string{"mtls", "init", "--hosts", "localhost,127.0.0.1"} },
			tool: func() (string, map[string]any) {
				return tools.NameInit, map[string]any{"hosts": []string{"localhost", "127.0.0.1"}}
			}},
		{name: "issue with a generated key",
			cli: func() []string {
				return []string{"mtls", "issue-client", "--name", "gen", "--role", "operator", "--duration", "48h", "--out-dir", cliOut, "--json"}
			},
			tool: func() (string, map[string]any) {
				return tools.NameIssueClient, map[string]any{"name": "gen", "role": "operator", "duration": "48h"}
			}},
		{name: "issue from a CSR",
			cli: func() []string {
				return []string{"mtls", "issue-client", "--name", "csr", "--csr", csrFile, "--out-dir", cliOut, "--json"}
			},
			tool: func() (string, map[string]any) {
				return tools.NameIssueClient, map[string]any{"name": "csr", "csr_pem": string(csr)}
			}},
		{name: "issue, duration too short", flag: "--duration", arg: "duration",
			cli: func() []string {
				return []string{"mtls", "issue-client", "--name", "short", "--duration", "59s", "--out-dir", cliOut}
			},
			tool: func() (string, map[string]any) {
				return tools.NameIssueClient, map[string]any{"name": "short", "duration": "59s"}
			}},
		{name: "issue, unknown role", flag: "--role", arg: "role",
			cli: func() []string {
				return []string{"mtls", "issue-client", "--name", "r", "--role", "root", "--out-dir", cliOut}
			},
			tool: func() (string, map[string]any) {
				return tools.NameIssueClient, map[string]any{"name": "r", "role": "root"}
			}},
		{name: "revoke",
			cli: func() []string {
				return []string{"mtls", "revoke", "--serial", serialOf(cliSerials, "gen"), "--reason", " lost "}
			},
			tool: func() (string, map[string]any) {
				return tools.NameRevoke, map[string]any{"serial": serialOf(toolSerials, "gen"), "reason": " lost "}
			}},
		{name: "revoke again",
			cli: func() []string {
				return []string{"mtls", "revoke", "--serial", serialOf(cliSerials, "gen"), "--reason", "again"}
			},
			tool: func() (string, map[string]any) {
				return tools.NameRevoke, map[string]any{"serial": serialOf(toolSerials, "gen"), "reason": "again"}
			}},
		{name: "revoke, reason with a newline", flag: "--reason", arg: "reason",
			cli: func() []string {
				return []string{"mtls", "revoke", "--serial", serialOf(cliSerials, "csr"), "--reason", "a\nb"}
			},
			tool: func() (string, map[string]any) {
				return tools.NameRevoke, map[string]any{"serial": serialOf(toolSerials, "csr"), "reason": "a\nb"}
			}},
	}
	for _, st := range steps {
		stdout, stderr, code := c.run(st.cli()...)
		tool, args := st.tool()
		structured, text, isErr := ts.call(t, tool, args)
		if st.flag == "" {
			if code != 0 || isErr {
				t.Fatalf("%s: cli exit %d %s; tool error %v %s", st.name, code, stderr, isErr, text)
			}
			if stderr != "" { // informational logs stay at debug at the shell
				t.Errorf("%s: the CLI wrote to stderr: %q", st.name, stderr)
			}
			if tool == tools.NameIssueClient {
				issued(cliSerials, stdout)
				b, _ := json.Marshal(structured)
				issued(toolSerials, string(b))
			}
			continue
		}
		cliMsg, okCLI := strings.CutPrefix(strings.TrimSpace(stderr), "nefia: "+st.flag+": ")
		toolMsg, okTool := strings.CutPrefix(text, `argument "`+st.arg+`": `)
		if code != 2 || !okCLI || !isErr || !okTool {
			t.Errorf("%s: cli exit %d %q, tool error %v %q; want both refusing, naming %s / %s", st.name, code, stderr, isErr, text, st.flag, st.arg)
			continue
		}
		// One validation: the same explanation (the tool strips pki's prefix).
		if strings.ReplaceAll(cliMsg, "pki: ", "") != toolMsg {
			t.Errorf("%s: explanations differ:\ncli:  %s\ntool: %s", st.name, cliMsg, toolMsg)
		}
	}
	if err := ts.trail.Flush(); err != nil {
		t.Fatal(err)
	}
	cliState := collect(t, c.stateDir, c.config, cliSerials)
	toolState := collect(t, ts.stateDir, ts.config, toolSerials)
	if !reflect.DeepEqual(cliState, toolState) {
		t.Errorf("the CLI and the tool left different state:\ncli:  %#v\ntool: %#v", cliState, toolState)
		for i := range max(len(cliState.Events), len(toolState.Events)) {
			var a, b string
			if i < len(cliState.Events) {
				a = cliState.Events[i]
			}
			if i < len(toolState.Events) {
				b = toolState.Events[i]
			}
			if a != b {
				t.Errorf("event %d:\ncli:  %s\ntool: %s", i, a, b)
			}
		}
	}
	if want := 2 * 5; len(cliState.Events) != want { // init, 2 issues, 2 revokes; started and ended each
		t.Errorf("%d state events, want %d: %v", len(cliState.Events), want, cliState.Events)
	}
}
