package upstream

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/identity"
)

// The hot path of a forwarded tool call. mcp-go's client.CallTool would
// encode the call through maps (CallToolParams, Meta, the agent fields)
// and decode the whole result into mcp.Content values that the gateway's
// server then encodes again; here the call's params are appended as bytes
// (the same bytes mcp-go writes: TestForwardedCallBytes) and the result's
// content items are passed on as the upstream sent them.

// callIDs numbers forwarded calls. Their ids ("nefia-call-N") are strings,
// so they never collide with the numeric ids mcp-go's client gives its own
// requests on the same session, nor with tools/list's "nefia-list-N".
var callIDs atomic.Int64

// cancelNotifyTimeout bounds sending notifications/cancelled (mcp-go's
// client uses the same).
const cancelNotifyTimeout = 5 * time.Second

// callUpstream sends tools/call with params (from appendCallParams) on
// cn's transport and returns the result. It does what client.CallTool does
// for a session initialized with a protocol version before 2026-07-28
// (which nefia always asks for): transport failures come back as
// *transport.Error, JSON-RPC errors as their error, and a call whose ctx
// ends first is cancelled upstream with notifications/cancelled (stdio;
// over HTTP, like mcp-go, nothing is sent).
func callUpstream(ctx context.Context, cn *conn, params []byte) (*mcp.CallToolResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, transport.NewError(err) // not sent, nothing to cancel
	}
	tr := cn.c.GetTransport()
	req := transport.JSONRPCRequest{
		JSONRPC: mcp.JSONRPC_VERSION,
		ID:      mcp.NewRequestId("nefia-call-" + strconv.FormatInt(callIDs.Add(1), 10)),
		Method:  string(mcp.MethodToolsCall),
		Params:  json.RawMessage(params),
	}
	resp, err := tr.SendRequest(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			cancelUpstream(ctx, tr, req.ID)
		}
		return nil, transport.NewError(err)
	}
	if resp.Error != nil {
		return nil, resp.Error.AsError()
	}
	return callResult(resp.Result)
}

// cancelUpstream tells a stdio upstream to stop working on request id, as
// mcp-go's client does, off the caller's path and best effort.
func cancelUpstream(ctx context.Context, tr transport.Interface, id mcp.RequestId) {
	if _, ok := tr.(transport.HTTPConnection); ok {
		return
	}
	n := mcp.JSONRPCNotification{
		JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{
			Method: string(mcp.MethodNotificationCancelled),
			Params: mcp.NotificationParams{AdditionalFields: map[string]any{"requestId": id, "reason": ctx.Err().Error()}},
		},
	}
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelNotifyTimeout)
		defer cancel()
		_ = tr.SendNotification(sctx, n)
	}()
}

// callResult turns an upstream's tools/call result into the handler's. A
// plain successful result (content, optionally structuredContent) keeps
// each content item's bytes as sent, so the gateway does not decode and
// re-encode them; structuredContent is kept raw either way (as mcp-go
// does). Anything else (isError, which the audit reads the text of, _meta,
// a result type, a malformed item) takes mcp-go's own decoding.
func callResult(raw json.RawMessage) (*mcp.CallToolResult, error) {
	var probe struct {
		Content       []json.RawMessage `json:"content"`
		Structured    json.RawMessage   `json:"structuredContent"`
		IsError       bool              `json:"isError"`
		Meta          json.RawMessage   `json:"_meta"`
		ResultType    json.RawMessage   `json:"resultType"`
		InputRequests json.RawMessage   `json:"inputRequests"`
		RequestState  json.RawMessage   `json:"requestState"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil || probe.Content == nil || probe.IsError ||
		probe.Meta != nil || probe.ResultType != nil || probe.InputRequests != nil || probe.RequestState != nil {
		return mcp.ParseCallToolResult(&raw)
	}
	res := &mcp.CallToolResult{Content: make([]mcp.Content, len(probe.Content)), RawStructuredContent: probe.Structured}
	for i, c := range probe.Content {
		if len(c) == 0 || c[0] != '{' {
			return mcp.ParseCallToolResult(&raw)
		}
		res.Content[i] = rawContent{raw: c}
	}
	return res, nil
}

// rawContent is a content item passed on as the upstream encoded it. The
// embedded TextContent only makes it an mcp.Content; it is never read. The
// server's encoder compacts and HTML-escapes these bytes like any other.
type rawContent struct {
	mcp.TextContent
	raw json.RawMessage
}

// MarshalJSON returns the item's bytes as received.
func (c rawContent) MarshalJSON() ([]byte, error) { return c.raw, nil }

// appendCallParams appends the params of the forwarded tools/call: the
// upstream's own tool name, the caller's arguments as they sent them
// (args; nil leaves them out), and in _meta the caller's identity
// (agent, nil for none), its assertion (token) and nefia's progress token
// (progress), each omitted when empty. The bytes are those of
// json.Marshal(mcp.CallToolParams) for the same call with RawArguments
// set, which sorts _meta's keys and the agent's.
func appendCallParams(dst []byte, name string, args json.RawMessage, agent *identity.Agent, token, progress string) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, name)
	if len(args) > 0 {
		dst = append(dst, `,"arguments":`...)
		dst = append(dst, args...)
	}
	dst = append(dst, `,"_meta":{`...)
	sep := ""
	if agent != nil {
		dst = append(dst, `"`+MetaAgent+`":`...)
		dst = appendAgent(dst, *agent)
		sep = ","
	}
	if token != "" {
		dst = append(dst, sep+`"`+MetaAssertion+`":`...)
		dst = appendString(dst, token)
		sep = ","
	}
	if progress != "" {
		dst = append(dst, sep+`"progressToken":`...)
		dst = appendString(dst, progress)
	}
	return append(dst, "}}"...)
}

// appendAgent appends agentMeta(a) as json.Marshal encodes it (keys
// sorted).
func appendAgent(dst []byte, a identity.Agent) []byte {
	dst = append(dst, `{"fingerprint":`...)
	dst = appendString(dst, a.Fingerprint)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, a.Name)
	dst = append(dst, `,"role":`...)
	dst = appendString(dst, string(a.Role))
	dst = append(dst, `,"serial":`...)
	dst = appendString(dst, a.Serial)
	return append(dst, '}')
}

// appendString appends s as a JSON string the way encoding/json writes it:
// directly when every byte is printable ASCII that needs no escape (names,
// hex, base64url, the usual case), else through json.Marshal.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
