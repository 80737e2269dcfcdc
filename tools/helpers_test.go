package tools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

// fakeSessions is a test double for the gateway's session table: it records
// every CloseSerial call and reports the counts the test sets.
type fakeSessions struct {
	mu     sync.Mutex
	closed []string
	live   map[string]int // serial -> live sessions CloseSerial reports
	count  int
}

func (f *fakeSessions) CloseSerial(serial string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = append(f.closed, serial)
	n := f.live[serial]
	delete(f.live, serial)
	return n
}

func (f *fakeSessions) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count
}

func (f *fakeSessions) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.closed...)
}

// env is one gateway under test: a state directory, nefia.yaml, a clients
// directory and an MCP server with the tools, driven through mcp-go's
// in-process client (the same HandleMessage path as a real connection).
type env struct {
	t          *testing.T
	store      *pki.Store
	clock      *pkitest.Clock
	configPath string
	clientsDir string
	sessions   *fakeSessions // nil in stdio mode
	client     *client.Client
	schemas    map[string]*jsonschema.Schema // output schemas as listed
}

type envOpt func(*envConfig)

type envConfig struct {
	noCA       bool
	stdio      bool
	clientsDir string // "" = the default under the state dir
	inState    bool
}

// withoutCA starts from an empty state directory.
func withoutCA() envOpt { return func(c *envConfig) { c.noCA = true } }

// stdioMode passes no SessionManager, as nefia does in stdio mode.
func stdioMode() envOpt { return func(c *envConfig) { c.stdio = true } }

// clientsInStateDir makes Deps.ClientsDir the state directory itself.
func clientsInStateDir() envOpt { return func(c *envConfig) { c.inState = true } }

// withClientsDir sets Deps.ClientsDir.
func withClientsDir(dir string) envOpt { return func(c *envConfig) { c.clientsDir = dir } }

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	var cfg envConfig
	for _, o := range opts {
		o(&cfg)
	}
	clock := pkitest.NewClock(pkitest.Epoch)
	var store *pki.Store
	if cfg.noCA {
		store = pki.NewStore(t.TempDir(), pki.WithClock(clock))
	} else {
		store = pkitest.NewStore(t, pki.WithClock(clock))
	}
	e := &env{
		t:          t,
		store:      store,
		clock:      clock,
		configPath: filepath.Join(t.TempDir(), "config", "nefia.yaml"),
		clientsDir: cfg.clientsDir,
	}
	if cfg.inState {
		cfg.clientsDir = store.Dir()
		e.clientsDir = store.Dir()
	}
	if e.clientsDir == "" {
		e.clientsDir = store.Path("clients")
	}
	deps := tools.Deps{Store: store, ConfigPath: e.configPath, ClientsDir: cfg.clientsDir}
	if !cfg.stdio {
		e.sessions = &fakeSessions{live: map[string]int{}}
		deps.Sessions = e.sessions
	}
	srv := server.NewMCPServer("nefia-test", "0.0.0")
	if err := tools.Register(srv, deps); err != nil {
		t.Fatalf("Register: %v", err)
	}
	c, err := client.NewInProcessClient(srv)
	if err != nil {
		t.Fatalf("NewInProcessClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := t.Context()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("client start: %v", err)
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: "tools-test", Version: "0"},
	}}); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	e.client = c
	e.schemas = outputSchemas(t, c)
	return e
}

// outputSchemas compiles every listed tool's output schema, as a client
// would see it.
func outputSchemas(t *testing.T, c *client.Client) map[string]*jsonschema.Schema {
	t.Helper()
	list, err := c.ListTools(t.Context(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	out := map[string]*jsonschema.Schema{}
	for _, tl := range list.Tools {
		raw, err := json.Marshal(tl.OutputSchema)
		if err != nil {
			t.Fatalf("marshal %s output schema: %v", tl.Name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s output schema: %v", tl.Name, err)
		}
		comp := jsonschema.NewCompiler()
		url := "mem:///" + tl.Name + ".json"
		if err := comp.AddResource(url, doc); err != nil {
			t.Fatalf("%s output schema: %v", tl.Name, err)
		}
		if out[tl.Name], err = comp.Compile(url); err != nil {
			t.Fatalf("%s output schema does not compile: %v", tl.Name, err)
		}
	}
	return out
}

// operator and agent are caller identities, as the server attaches them.
var (
	operator = identity.Agent{Name: "ops", Serial: "1", Role: pki.RoleOperator, Transport: identity.TransportStream}
	agent    = identity.Agent{Name: "bot", Serial: "2", Role: pki.RoleAgent, Transport: identity.TransportStream}
)

func as(t *testing.T, a identity.Agent) context.Context {
	return identity.WithAgent(t.Context(), a)
}

// result is a tool result with its wire form, for greps over everything a
// client receives.
type result struct {
	*mcp.CallToolResult
	raw string
}

// call invokes a tool as an operator. A protocol-level error fails the test:
// every nefia tool reports problems as results.
func (e *env) call(tool string, args any) result {
	e.t.Helper()
	return e.callCtx(as(e.t, operator), tool, args)
}

func (e *env) callCtx(ctx context.Context, tool string, args any) result {
	e.t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := e.client.CallTool(ctx, req)
	if err != nil {
		e.t.Fatalf("%s: protocol error instead of a tool result: %v", tool, err)
	}
	raw, err := json.Marshal(res)
	if err != nil {
		e.t.Fatalf("%s: marshal result: %v", tool, err)
	}
	e.assertNoSecrets(tool, string(raw))
	return result{res, string(raw)}
}

// assertNoSecrets checks what every result must never hold.
func (e *env) assertNoSecrets(tool, raw string) {
	e.t.Helper()
	if strings.Contains(raw, "PRIVATE KEY") {
		e.t.Fatalf("%s: result contains a private key:\n%s", tool, raw)
	}
}

// text returns the result's text parts.
func (r result) text() string {
	var parts []string
	for _, c := range r.Content {
		if tc, ok := mcp.AsTextContent(c); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// wantOK checks a successful result: not an error, a readable text part,
// and structured content valid against the tool's output schema; it decodes
// the structured content into out.
func (e *env) wantOK(tool string, r result, out any) {
	e.t.Helper()
	if r.IsError {
		e.t.Fatalf("%s: unexpected tool error: %s", tool, r.text())
	}
	if strings.TrimSpace(r.text()) == "" {
		e.t.Fatalf("%s: no text content", tool)
	}
	if r.StructuredContent == nil {
		e.t.Fatalf("%s: no structured content", tool)
	}
	raw, err := json.Marshal(r.StructuredContent)
	if err != nil {
		e.t.Fatalf("%s: marshal structured content: %v", tool, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		e.t.Fatalf("%s: structured content: %v", tool, err)
	}
	if err := e.schemas[tool].Validate(inst); err != nil {
		e.t.Fatalf("%s: structured content does not match the output schema: %v\n%s", tool, err, raw)
	}
	if out != nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(out); err != nil {
			e.t.Fatalf("%s: decode structured content: %v", tool, err)
		}
	}
}

// wantRefused checks a tool error: IsError, a message containing every
// want (case-insensitive), and no absolute path of the state, clients or
// configuration directory.
func (e *env) wantRefused(tool string, r result, want ...string) {
	e.t.Helper()
	if !r.IsError {
		e.t.Fatalf("%s: want a tool error, got success: %s", tool, r.text())
	}
	msg := r.text()
	for _, w := range want {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
			e.t.Errorf("%s: error %q does not mention %q", tool, msg, w)
		}
	}
	e.assertNoHostPaths(tool, msg)
}

func (e *env) assertNoHostPaths(tool, msg string) {
	e.t.Helper()
	for _, dir := range []string{e.store.Dir(), e.clientsDir, filepath.Dir(e.configPath)} {
		if strings.Contains(msg, dir) {
			e.t.Errorf("%s: error reveals host path %s: %q", tool, dir, msg)
		}
	}
}

// inventory returns the serials issued so far.
func (e *env) inventory() []string {
	e.t.Helper()
	list, err := e.store.List()
	if err != nil {
		e.t.Fatalf("list: %v", err)
	}
	var serials []string
	for _, c := range list {
		serials = append(serials, c.Serial)
	}
	return serials
}
