package upstream_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// TestForwardedCallHotPath, over both transports: consecutive calls of
// one caller carry the same assertion (signed once, not per call), which
// the upstream still verifies; another caller gets its own; and the
// caller's arguments reach the upstream as sent, an integer above 2^53
// included (decoding them into float64 and encoding again rounded it),
// unless a key appears twice.
func TestForwardedCallHotPath(t *testing.T) {
	t.Parallel()
	for _, tt := range bothTransports {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, tt.upstream(t))
			bot := f.g.Client(pkitest.KeyPair(t, f.g.Issue("bot", pki.RoleAgent, time.Hour)))
			wide := f.g.Client(pkitest.KeyPair(t, f.g.Issue("wide", pki.RoleAgent, time.Hour)))
			const args = `{"text":"big","n":9007199254740993,"s":"<&>"}`
			call := func(c interface {
				CallTool(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error)
			}, args string) map[string]any {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req := mcp.CallToolRequest{}
				req.Params.Name = "up.echo"
				req.Params.Arguments = json.RawMessage(args)
				res, err := c.CallTool(ctx, req)
				if err != nil || res.IsError {
					t.Fatalf("up.echo = %+v, %v", res, err)
				}
				got := servertest.Structured(t, res)
				if claims, ok := got["verified"].(map[string]any); !ok || claims["aud"] != "up" {
					t.Fatalf("upstream's verification of the assertion: %v", got["verified"])
				}
				return got
			}
			token := func(got map[string]any) string {
				meta, _ := got["meta"].(map[string]any)
				s, _ := meta[upstream.MetaAssertion].(string)
				return s
			}
			a, b, c := call(bot, args), call(bot, args), call(wide, args)
			if token(a) == "" || token(a) != token(b) {
				t.Errorf("two calls of one caller carried different assertions (signed per call)")
			}
			if token(c) == token(a) || c["verified"].(map[string]any)["name"] != "wide" {
				t.Errorf("another caller got bot's assertion")
			}
			var sent, got map[string]json.RawMessage
			if err := json.Unmarshal([]byte(args), &sent); err != nil {
				t.Fatal(err)
			}
			raw, _ := a["args"].(string)
			if err := json.Unmarshal([]byte(raw), &got); err != nil {
				t.Fatalf("upstream received arguments %q: %v", raw, err)
			}
			if string(got["n"]) != "9007199254740993" || !strings.Contains(raw, "9007199254740993") {
				t.Errorf("upstream received n = %s, want 9007199254740993 (arguments %s)", got["n"], raw)
			}
			var s string
			if err := json.Unmarshal(got["s"], &s); err != nil || s != "<&>" {
				t.Errorf("upstream received s = %s", got["s"])
			}
			// A key twice: the upstream gets the one value the gateway
			// decoded and audited, not bytes another parser may read
			// differently.
			dup := call(bot, `{"text":"shown","text":"acted on"}`)
			if dup["args"] != `{"text":"acted on"}` || dup["text"] != "acted on" {
				t.Errorf("arguments with a duplicate key reached the upstream as %v", dup["args"])
			}
		})
	}
}
