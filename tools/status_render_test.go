package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/jsonrpc"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

type countSessions struct{ n int }

func (c *countSessions) CloseSerial(string) int { return 0 }
func (c *countSessions) Count() int             { return c.n }

// straightStatus is the status response built the straightforward way, as
// before issue 16: the report built afresh, the caller's fields set, the
// text formatted and the structured content the report itself.
func straightStatus(t *testing.T, ts *toolset, ctx context.Context) []byte {
	t.Helper()
	cfg, err := config.Load(ts.configPath)
	if err != nil {
		cfg = config.Loaded{Config: config.Default(), Path: ts.configPath}
	}
	r := BuildStatus(ts.store, cfg, err)
	if ts.sessions != nil {
		n := ts.sessions.Count()
		r.Connections = &n
	}
	a, ok := identity.FromContext(ctx)
	if ok {
		r.Caller = &a
	}
	r = ts.forCaller(r, ok && a.Role == pki.RoleOperator)
	data, err := json.Marshal(success(r, statusText(r)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestStatusResponseBytesUnchanged: the status response, cached per report
// and rendered once per caller with its structured content pre-encoded, is
// byte for byte the response built afresh for every caller (agent,
// operator, anonymous, each with its own session), in gateway and stdio
// mode, and it follows a change of the state directory and of the live
// connections on the very next call (the watch is exact: no wait).
func TestStatusResponseBytesUnchanged(t *testing.T) {
	t.Parallel()
	callers := []struct {
		name string
		ctx  context.Context
	}{
		{"agent", identity.WithAgent(t.Context(), identity.Agent{Name: "bot", Serial: "2", Role: pki.RoleAgent, Transport: identity.TransportStream, SessionID: "s1"})},
		{"agent other session", identity.WithAgent(t.Context(), identity.Agent{Name: "bot", Serial: "2", Role: pki.RoleAgent, Transport: identity.TransportStream, SessionID: "s2"})},
		{"operator", identity.WithAgent(t.Context(), identity.Agent{Name: "ops", Serial: "1", Role: pki.RoleOperator, Transport: identity.TransportHTTP})},
		{"anonymous", t.Context()},
	}
	for _, mode := range []string{"gateway", "stdio"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			store := pkitest.NewStore(t)
			cfgDir := filepath.Join(t.TempDir(), "etc")
			if err := os.Mkdir(cfgDir, 0o700); err != nil {
				t.Fatal(err)
			}
			sessions := &countSessions{n: 3}
			deps := Deps{Store: store, ConfigPath: filepath.Join(cfgDir, "nefia.yaml")}
			if mode == "gateway" {
				deps.Sessions = sessions
			}
			ts, err := newToolset(deps)
			if err != nil {
				t.Fatal(err)
			}
			check := func(step string) {
				t.Helper()
				for _, c := range callers {
					for range 2 { // the second answer comes from the cache
						res, err := ts.handleStatus(c.ctx, mcp.CallToolRequest{})
						if err != nil {
							t.Fatal(err)
						}
						got, err := json.Marshal(res)
						if err != nil {
							t.Fatal(err)
						}
						if want := straightStatus(t, ts, c.ctx); string(got) != string(want) {
							t.Fatalf("%s, %s: response differs:\n got %s\nwant %s", step, c.name, got, want)
						}
					}
				}
			}
			check("start")
			if ts.status.watch == nil {
				t.Fatal("no watch on the state and configuration directories")
			}
			pkitest.Issue(t, store, "new", pki.RoleAgent, time.Hour)
			check("after an issuance")
			if err := os.WriteFile(deps.ConfigPath, []byte("version: 1\nmcp:\n  mtls:\n    listen_adr: x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			check("after a broken configuration")
			sessions.n = 4
			check("after a new connection")
		})
	}
}

// BenchmarkStatusHandler measures the status tool alone, as an agent on a
// gateway calls it: report cached, response rendered once per caller.
func BenchmarkStatusHandler(b *testing.B) {
	store := pkitest.NewStore(b)
	cfgDir := filepath.Join(b.TempDir(), "etc")
	os.Mkdir(cfgDir, 0o700)
	ts, err := newToolset(Deps{Store: store, ConfigPath: filepath.Join(cfgDir, "nefia.yaml"), Sessions: &countSessions{n: 50}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := identity.WithAgent(b.Context(), identity.Agent{Name: "bot", Serial: "2", Role: pki.RoleAgent, Transport: identity.TransportStream})
	b.ReportAllocs()
	for b.Loop() {
		if res, err := ts.handleStatus(ctx, mcp.CallToolRequest{}); err != nil || res.IsError {
			b.Fatal(err)
		}
	}
}

// TestStatusStructuredContentEncoded (issue 16 item 1): the status tool's
// structured content is a jsonrpc.Encoded for every caller, which the
// stream transport appends as it is. Before, it was a json.RawMessage that
// the transport compacted and HTML-escaped again on each call unless its
// 16-slot cache (keyed by length) still held that caller's bytes, which 50
// callers with different renders defeat.
func TestStatusStructuredContentEncoded(t *testing.T) {
	t.Parallel()
	store := pkitest.NewStore(t)
	ts, err := newToolset(Deps{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml"), Sessions: &countSessions{n: 50}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		ctx := identity.WithAgent(t.Context(), identity.Agent{Name: fmt.Sprintf("agent-%d", i), Serial: fmt.Sprint(100 + i),
			Role: pki.RoleAgent, Transport: identity.TransportStream, SessionID: fmt.Sprintf("s%d", i)})
		res, err := ts.handleStatus(ctx, mcp.CallToolRequest{})
		if err != nil || res.IsError {
			t.Fatalf("caller %d: %v %v", i, res, err)
		}
		if _, ok := res.StructuredContent.(jsonrpc.Encoded); !ok {
			t.Fatalf("caller %d: structured content is a %T, want a jsonrpc.Encoded", i, res.StructuredContent)
		}
	}
}

// TestDecodeArgsEmptyNoAlloc (issue 16 item 3): a call without arguments
// ({}, as every status poll sends, null or none) costs no decoding: before,
// {} was decoded into a map (7 allocations, ≈2 µs of a status call). Not
// parallel: AllocsPerRun.
func TestDecodeArgsEmptyNoAlloc(t *testing.T) {
	for _, raw := range []string{`{}`, ` {} `, `null`, ``} {
		req := mcp.CallToolRequest{}
		req.Params.Arguments = json.RawMessage(raw)
		if err := decodeArgs(req, noArgs); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if n := testing.AllocsPerRun(100, func() { _ = decodeArgs(req, noArgs) }); n != 0 {
			t.Errorf("%q: %v allocations per decode, want 0", raw, n)
		}
	}
	req := mcp.CallToolRequest{}
	req.Params.Arguments = json.RawMessage(`{"x":1}`)
	if err := decodeArgs(req, noArgs); err == nil {
		t.Error("an unknown argument was accepted")
	}
}
