package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/identity"
)

// The hot path of a forwarded tool call. mcp-go's client.CallTool would
// encode the call through maps (CallToolParams, Meta, the agent fields)
// and decode the whole result into mcp.Content values that the gateway's
// server then encodes again; here the call's params are a struct that
// encodes to the same bytes mcp-go writes (TestForwardedCallBytes), and the
// result's content items are passed on as the upstream sent them.

// callIDs numbers forwarded calls. Their ids ("nefia-call-N") are strings,
// so they never collide with the numeric ids mcp-go's client gives its own
// requests on the same session, nor with tools/list's "nefia-list-N".
var callIDs atomic.Int64

// cancelNotifyTimeout bounds sending notifications/cancelled (mcp-go's
// client uses the same).
const cancelNotifyTimeout = 5 * time.Second

// callUpstream sends tools/call with params on
// cn's transport and returns the result. It does what client.CallTool does
// for a session initialized with a protocol version before 2026-07-28
// (which nefia always asks for): transport failures come back as
// *transport.Error, JSON-RPC errors as their error, and a call whose ctx
// ends first is cancelled upstream with notifications/cancelled (stdio;
// over HTTP, like mcp-go, nothing is sent).
func callUpstream(ctx context.Context, cn *conn, params *callParams) (*mcp.CallToolResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, transport.NewError(err) // not sent, nothing to cancel
	}
	res, err := sendRequest(ctx, cn, mcp.MethodToolsCall, "nefia-call-"+strconv.FormatInt(callIDs.Add(1), 10), params)
	if err != nil {
		return nil, err
	}
	return callResult(res)
}

// sendRequest sends one request of nefia's own (id, params) on cn: a url
// upstream's httpCaller, else its transport (stdio). It returns the result;
// a transport failure as a *transport.Error, after cancelling the request
// upstream (stdio) when ctx ended first; a JSON-RPC error as its error.
func sendRequest(ctx context.Context, cn *conn, method mcp.MCPMethod, id string, params any) (json.RawMessage, error) {
	req := transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(id), Method: string(method), Params: params}
	var resp *transport.JSONRPCResponse
	var err error
	if cn.http != nil {
		// Over HTTP, like mcp-go, nothing is sent on cancellation: the
		// request's connection is closed.
		resp, err = cn.http.send(ctx, req)
	} else {
		tr := cn.c.GetTransport()
		if resp, err = tr.SendRequest(ctx, req); err != nil && ctx.Err() != nil {
			cancelUpstream(ctx, tr, req.ID)
		}
	}
	if err != nil {
		return nil, transport.NewError(err)
	}
	if resp.Error != nil {
		return nil, resp.Error.AsError()
	}
	return resp.Result, nil
}

// cancelUpstream tells a stdio upstream to stop working on request id, as
// mcp-go's client does, off the caller's path and best effort.
func cancelUpstream(ctx context.Context, tr transport.Interface, id mcp.RequestId) {
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
// a result type, a malformed item, invalid UTF-8) takes mcp-go's own
// decoding.
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
	// Invalid UTF-8 too: decoding replaces it with U+FFFD, bytes passed on
	// would carry it to the client.
	if !utf8.Valid(raw) || json.Unmarshal(raw, &probe) != nil || probe.Content == nil || probe.IsError ||
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

// forwardArgs returns the arguments to forward: the caller's bytes as they
// sent them when they are a JSON document every parser reads the same way,
// else (duplicate keys, which parsers resolve differently, or arguments
// that did not come from the wire) the encoding of what the gateway
// decoded, audited and authorized.
func forwardArgs(req mcp.CallToolRequest) (json.RawMessage, error) {
	if raw := req.Params.RawArguments; len(raw) > 0 && !ambiguous(raw) {
		return raw, nil
	}
	if req.Params.Arguments == nil {
		return nil, nil
	}
	b, err := json.Marshal(req.Params.Arguments)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	return b, nil
}

// ambiguous reports whether data is not one well-formed JSON value or has
// an object with a key twice: Go keeps the last of duplicate keys, other
// parsers the first or refuse, so the upstream could act on a value the
// audit record does not show. It runs on every forwarded call, so it scans
// the bytes once after json.Valid instead of walking them with
// json.Decoder.Token, which cost a forwarded call tens of microseconds
// (an error value formatted per scalar token; issue 12 item 2).
func ambiguous(data []byte) bool {
	return !json.Valid(data) || duplicateKey(data)
}

// duplicateKey reports whether an object in data, a valid JSON document,
// has two keys that decode to the same string. An object's first keys are
// compared in a list; past linearKeys it moves them to a set, so that an
// object with many keys costs linear time, not quadratic.
func duplicateKey(data []byte) bool {
	// Per open container: where its listed keys begin in keys (-1 for an
	// array), or its set once it has one. Small buffers: a larger frame
	// made this the call that grew the stack of the request's goroutine.
	type frame struct {
		from int
		set  map[string]struct{}
	}
	var stackBuf [8]frame
	var keysBuf [8][]byte
	stack, keys := stackBuf[:0], keysBuf[:0]
	wantKey := false // the next string is a key of the innermost object
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{':
			stack = append(stack, frame{from: len(keys)})
			wantKey = true
		case '[':
			stack = append(stack, frame{from: -1})
			wantKey = false
		case '}', ']':
			if from := stack[len(stack)-1].from; from >= 0 {
				keys = keys[:from]
			}
			stack = stack[:len(stack)-1]
			wantKey = false
		case ',':
			wantKey = stack[len(stack)-1].from >= 0
		case ':':
			wantKey = false
		case '"':
			j := i + 1
			for data[j] != '"' {
				if data[j] == '\\' {
					j++
				}
				j++
			}
			if wantKey {
				key := data[i+1 : j]
				if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) {
					// Compare as decoded: escapes, and invalid UTF-8 read
					// as U+FFFD, can spell one key two ways.
					var k string
					_ = json.Unmarshal(data[i:j+1], &k)
					key = []byte(k)
				}
				f := &stack[len(stack)-1]
				if f.set != nil {
					if _, dup := f.set[string(key)]; dup {
						return true
					}
					f.set[string(key)] = struct{}{}
				} else {
					for _, seen := range keys[f.from:] {
						if bytes.Equal(seen, key) {
							return true
						}
					}
					if keys = append(keys, key); len(keys)-f.from > linearKeys {
						f.set = make(map[string]struct{}, 2*linearKeys)
						for _, k := range keys[f.from:] {
							f.set[string(k)] = struct{}{}
						}
						keys = keys[:f.from]
					}
				}
				wantKey = false
			}
			i = j
		}
	}
	return false
}

// linearKeys is how many keys of one object duplicateKey compares in a
// list before it moves them to a set.
const linearKeys = 16

// callParams are the params of a forwarded tools/call: the upstream's
// own tool name, the caller's arguments as they sent them (nil leaves them
// out), and nefia's _meta. Their encoding is that of mcp.CallToolParams
// for the same call with RawArguments set (TestForwardedCallBytes), whose
// Meta and agent map encode with sorted keys, hence the field order here;
// it goes without those maps, and without compacting the assertion as
// part of a json.RawMessage.
type callParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	Meta      callMeta        `json:"_meta"`
}

// callMeta is the forwarded _meta: the caller's identity (nil for none),
// its assertion, and nefia's progress token, each left out when empty.
type callMeta struct {
	Agent     *agentFields `json:"io.nefia/agent,omitempty"`
	Assertion string       `json:"io.nefia/assertion,omitempty"`
	Progress  string       `json:"progressToken,omitempty"`
}

// agentFields is agentMeta's value as a struct, keys in sorted order.
type agentFields struct {
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
	Role        string `json:"role"`
	Serial      string `json:"serial"`
}

func newAgentFields(a identity.Agent) *agentFields {
	return &agentFields{Fingerprint: a.Fingerprint, Name: a.Name, Role: string(a.Role), Serial: a.Serial}
}
