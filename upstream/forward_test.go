package upstream

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// TestForwardedCallBytes: the request line of a forwarded call, with its
// params in nefia's struct (callParams), is byte for byte what the
// straightforward encoding writes: json.Marshal of the transport's
// JSONRPCRequest carrying mcp.CallToolParams with the caller's raw
// arguments and nefia's _meta (mcp-go's Meta and the agent map).
func TestForwardedCallBytes(t *testing.T) {
	t.Parallel()
	bot := identity.Agent{Name: "bot", Serial: "0a1b2c", Role: pki.RoleAgent, Fingerprint: "ab12cd34", SessionID: "not-sent"}
	odd := identity.Agent{Name: "ünï \"<&>\" \u2028 \\ \x01", Serial: "", Role: pki.RoleOperator, Fingerprint: ""}
	tests := []struct {
		name     string
		tool     string
		args     string
		agent    *identity.Agent
		token    string
		progress string
	}{
		{name: "identity, assertion, progress", tool: "echo", args: `{"text":"hi"}`, agent: &bot, token: "eyJh.eyJp.c2ln", progress: "nefia-progress-7"},
		{name: "no identity", tool: "echo", args: `{"text":"hi"}`},
		{name: "identity without signer", tool: "read_file", args: `{"path":"/srv/a"}`, agent: &bot},
		{name: "no arguments", tool: "list", agent: &bot, token: "t"},
		{name: "null arguments", tool: "list", args: `null`, agent: &bot},
		{name: "empty arguments", tool: "list", args: `{}`, progress: "p"},
		{name: "html, unicode and big integers in arguments", tool: "x.y-z_1", args: `{"b":"<a href='x'>&amp;</a>","a":9007199254740993,"u":"\u00e9\u2028","f":1.50,"n":[1,{"z":null}]}`, agent: &bot, token: "t"},
		{name: "arguments with insignificant space", tool: "echo", args: "{ \"text\" :\n \"hi\" }", agent: &bot},
		{name: "fields that need escapes", tool: "echo", args: `{"text":"hi"}`, agent: &odd, token: "tok<en>&", progress: "pr\"og"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			straight := mcp.CallToolParams{Name: tt.tool, RawArguments: json.RawMessage(tt.args)}
			meta := map[string]any{}
			if tt.agent != nil {
				meta[MetaAgent] = agentMeta(*tt.agent)
			}
			if tt.token != "" {
				meta[MetaAssertion] = tt.token
			}
			straight.Meta = &mcp.Meta{AdditionalFields: meta}
			if tt.progress != "" {
				straight.Meta.ProgressToken = tt.progress
			}
			var args json.RawMessage
			if tt.args != "" {
				args = json.RawMessage(tt.args)
			}
			id := mcp.NewRequestId("nefia-call-1")
			want, err := json.Marshal(transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Method: "tools/call", Params: straight})
			if err != nil {
				t.Fatal(err)
			}
			params := &callParams{Name: tt.tool, Arguments: args, Meta: callMeta{Assertion: tt.token, Progress: tt.progress}}
			if tt.agent != nil {
				params.Meta.Agent = newAgentFields(*tt.agent)
			}
			got, err := json.Marshal(transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Method: "tools/call", Params: params})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("forwarded call\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestForwardedResultBytes: a result passed on with its content items as
// sent (callResult) is encoded by the gateway's server byte for byte like
// the straightforward path (mcp.ParseCallToolResult, then the same
// encoding) for results as MCP SDKs write them; results the fast path
// does not take are decoded by mcp-go itself. An item whose keys come in
// another order, or with a field mcp-go does not know, is passed on as
// sent: the same JSON values, and nothing dropped.
func TestForwardedResultBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		result    string
		identical bool // else: equal as JSON values, except for fields mcp-go drops
	}{
		{name: "text and structured (mcp-go)", result: `{"content":[{"type":"text","text":"hello through the gateway"}],"structuredContent":{"text":"hello through the gateway"}}`, identical: true},
		{name: "text with escapes", result: `{"content":[{"type":"text","text":"a<b>&\"c\"\n\t\u0001é\u2028"}]}`, identical: true},
		{name: "several kinds of content", result: `{"content":[{"type":"text","text":"x"},{"type":"image","data":"aGk=","mimeType":"image/png"},{"type":"resource","resource":{"uri":"file:///a","mimeType":"text/plain","text":"a"}}]}`, identical: true},
		{name: "annotated text", result: `{"content":[{"annotations":{"audience":["user"],"priority":0.5},"type":"text","text":"x"}]}`, identical: true},
		{name: "empty content", result: `{"content":[]}`, identical: true},
		{name: "structured null", result: `{"content":[],"structuredContent":null}`, identical: true},
		{name: "isError (decoded for the audit)", result: `{"content":[{"text":"upstream says no","type":"text"}],"isError":true}`, identical: true},
		{name: "result _meta", result: `{"_meta":{"k":"v"},"content":[{"type":"text","text":"x"}]}`, identical: true},
		{name: "invalid UTF-8 (decoded: replaced as before)", result: "{\"content\":[{\"type\":\"text\",\"text\":\"a\xffb\"}]}", identical: true},
		{name: "keys in another order", result: `{"structuredContent":{"b":1,"a":2},"content":[{"text":"x","type":"text"}]}`},
		{name: "an escape where Go writes the character", result: `{"content":[{"type":"text","text":"\u00e9"}]}`},
		{name: "a field mcp-go does not know", result: `{"content":[{"type":"text","text":"x","future":{"y":1}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := json.RawMessage(tt.result)
			straight, err := mcp.ParseCallToolResult(&raw)
			if err != nil {
				t.Fatal(err)
			}
			fast, err := callResult(raw)
			if err != nil {
				t.Fatal(err)
			}
			encode := func(r *mcp.CallToolResult) []byte {
				b, err := json.Marshal(mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(3)), r))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			got := encode(fast)
			if tt.identical {
				want := encode(straight)
				if !bytes.Equal(got, want) {
					t.Errorf("result\n got %s\nwant %s", got, want)
				}
				return
			}
			var g, sent any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &sent); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.(map[string]any)["result"], sent) {
				t.Errorf("result\n got %s\nwant the upstream's %s", got, raw)
			}
		})
	}
}

// TestForwardedResultErrors: what mcp-go refuses is still refused.
func TestForwardedResultErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, result string }{
		{name: "no content", result: `{"structuredContent":{}}`},
		{name: "not an object", result: `[1]`},
		{name: "content item not an object", result: `{"content":["x"]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if res, err := callResult(json.RawMessage(tt.result)); err == nil {
				t.Errorf("callResult(%s) = %+v, want an error", tt.result, res)
			}
		})
	}
}

// TestForwardedArgumentsAmbiguous: arguments with a key twice at any
// depth are not passed on as sent (parsers disagree on which value wins),
// everything else is.
func TestForwardedArgumentsAmbiguous(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, args string
		want       bool
	}{
		{name: "flat", args: `{"a":1,"b":"x"}`},
		{name: "nested, same keys at different levels", args: `{"a":{"a":{"a":[{"a":1},{"a":2}]}},"b":[1,{"b":2}]}`},
		{name: "key equal to a string value", args: `{"a":"b","b":"a"}`},
		{name: "empty", args: `{}`},
		{name: "array", args: `[1,2,2]`},
		{name: "duplicate at top", args: `{"path":"/srv/a","path":"/etc/shadow"}`, want: true},
		{name: "duplicate nested in an array", args: `{"x":[{"k":1,"k":2}]}`, want: true},
		{name: "duplicate after a nested object", args: `{"a":{"b":1},"c":2,"a":3}`, want: true},
		{name: "duplicate spelled with an escape", args: `{"a":1,"\u0061":2}`, want: true},
		{name: "truncated", args: `{"a":1`, want: true},
		{name: "two values", args: `{} {}`, want: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ambiguous([]byte(tt.args)); got != tt.want {
				t.Errorf("ambiguous(%s) = %v, want %v", tt.args, got, tt.want)
			}
		})
	}
}
