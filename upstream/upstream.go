package upstream

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
)

// Keys of params._meta on forwarded requests.
const (
	// MetaAgent carries {name, serial, role, fingerprint} of the caller.
	MetaAgent = "io.nefia/agent"
	// MetaAssertion carries the signed identity assertion (a JWT).
	MetaAssertion = "io.nefia/assertion"
)

// Limits on what an upstream may register, so a misbehaving server cannot
// flood the gateway's tool list.
const (
	maxTools     = 1000
	maxListPages = 100
	// initTimeout bounds initialize and tools/list.
	initTimeout = 30 * time.Second
)

// toolName is what an upstream tool may be called (MCP's recommended
// character set); anything else is skipped, because it becomes part of the
// name policy globs match against.
var toolName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// upstream is one configured upstream and its supervisor's state.
type upstream struct {
	cfg       config.Upstream
	signer    *Signer
	version   string
	log       *slog.Logger
	srv       *mcpserver.MCPServer
	relist    chan struct{}
	cancel    context.CancelFunc // stops the supervisor (Manager.stop)
	done      chan struct{}      // closed when the supervisor has returned
	started   chan struct{}      // closed once first up, or after a first failure
	startOnce sync.Once
	listID    atomic.Int64

	progress sync.Map // upstream progress token -> progressTarget

	mu       sync.Mutex
	cur      *conn
	state    string
	since    time.Time
	restarts int
	lastErr  string
	tools    map[string]struct{} // prefixed names registered on srv
	it       items               // resources, templates, prompts (items.go)

	idx *index // the Manager's resource index

	// runCtx is the supervisor's context: per_client sessions run under
	// it (conn.go).
	runCtx context.Context
	cs     clientSessions
}

// connect starts a session: a process for command upstreams, an HTTP
// client for url ones, then initialize.
func (u *upstream) connect(ctx context.Context) (*conn, error) {
	var cn *conn
	var err error
	if u.cfg.URL != "" {
		cn, err = u.dialHTTP()
	} else {
		cn, err = u.spawn(ctx)
	}
	if err != nil {
		return nil, err
	}
	notify := func(n mcp.JSONRPCNotification) {
		switch n.Method {
		case mcp.MethodNotificationToolsListChanged, mcp.MethodNotificationResourcesListChanged,
			mcp.MethodNotificationPromptsListChanged:
			select { // coalesce: one pending re-list is enough
			case u.relist <- struct{}{}:
			default:
			}
		case string(mcp.MethodNotificationProgress):
			u.forwardProgress(cn, n)
		}
	}
	cn.c.OnNotification(notify)
	if cn.http != nil { // what arrives on a call's own stream
		cn.http.notify = notify
	}
	ictx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	req.Params.ClientInfo = mcp.Implementation{Name: "nefia", Version: u.version}
	res, err := cn.c.Initialize(ictx, req)
	if err != nil {
		cn.stop()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if cn.http != nil {
		cn.http.version = res.ProtocolVersion
	}
	return cn, nil
}

// listTools fetches the upstream's tools and replaces its proxies on the
// server: new and changed ones are added, vanished ones deleted (mcp-go
// notifies connected clients of both).
func (u *upstream) listTools(ctx context.Context, cn *conn) error {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	raw, err := u.fetchTools(ctx, cn)
	if err != nil {
		return fmt.Errorf("list tools: %w", err)
	}
	var add []mcpserver.ServerTool
	names := map[string]struct{}{}
	for _, r := range raw {
		t, err := proxyTool(u.cfg.Name, r)
		if err != nil {
			u.log.Warn("skipping upstream tool", "err", err)
			continue
		}
		if _, dup := names[t.Name]; dup {
			continue
		}
		names[t.Name] = struct{}{}
		add = append(add, mcpserver.ServerTool{Tool: t, Handler: u.handler(t.Name[len(u.cfg.Name)+1:])})
	}
	u.mu.Lock()
	var stale []string
	for n := range u.tools {
		if _, ok := names[n]; !ok {
			stale = append(stale, n)
		}
	}
	u.tools = names
	u.mu.Unlock()
	if len(stale) > 0 {
		u.srv.DeleteTools(stale...)
	}
	if len(add) > 0 {
		u.srv.AddTools(add...)
	}
	return nil
}

// fetchTools pages through tools/list, keeping each tool's JSON as sent so
// that schemas pass through whole (mcp.Tool keeps only part of a schema).
// The request goes straight to the transport with ids of its own, which
// never collide with the client's numeric ones.
func (u *upstream) fetchTools(ctx context.Context, cn *conn) ([]json.RawMessage, error) {
	var all []json.RawMessage
	cursor := ""
	for range maxListPages {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		resp, err := cn.c.GetTransport().SendRequest(ctx, transport.JSONRPCRequest{
			JSONRPC: mcp.JSONRPC_VERSION,
			ID:      mcp.NewRequestId("nefia-list-" + strconv.FormatInt(u.listID.Add(1), 10)),
			Method:  string(mcp.MethodToolsList),
			Params:  params,
		})
		if err != nil {
			return nil, err
		}
		if resp.Error != nil {
			return nil, resp.Error.AsError()
		}
		var page struct {
			Tools      []json.RawMessage `json:"tools"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal(resp.Result, &page); err != nil {
			return nil, fmt.Errorf("decode tools/list: %w", err)
		}
		all = append(all, page.Tools...)
		if len(all) > maxTools {
			return nil, fmt.Errorf("more than %d tools", maxTools)
		}
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
	return nil, fmt.Errorf("more than %d pages of tools", maxListPages)
}

// proxyTool turns an upstream's tool into the gateway's: the name gets the
// upstream's prefix; description, schemas, annotations, title, icons and
// _meta pass through as sent.
func proxyTool(prefix string, raw json.RawMessage) (mcp.Tool, error) {
	var t mcp.Tool
	if err := json.Unmarshal(raw, &t); err != nil {
		return mcp.Tool{}, fmt.Errorf("decode tool: %w", err)
	}
	if !toolName.MatchString(t.Name) {
		return mcp.Tool{}, fmt.Errorf("tool name %q is not [A-Za-z0-9_.-]{1,128}", t.Name)
	}
	var schemas struct {
		In  json.RawMessage `json:"inputSchema"`
		Out json.RawMessage `json:"outputSchema"`
	}
	if err := json.Unmarshal(raw, &schemas); err != nil {
		return mcp.Tool{}, fmt.Errorf("decode tool %q: %w", t.Name, err)
	}
	t.InputSchema, t.OutputSchema = mcp.ToolInputSchema{}, mcp.ToolOutputSchema{}
	t.RawInputSchema = schemas.In
	if len(t.RawInputSchema) == 0 || string(t.RawInputSchema) == "null" {
		t.RawInputSchema = json.RawMessage(`{"type":"object"}`)
	}
	if len(schemas.Out) > 0 && string(schemas.Out) != "null" {
		t.RawOutputSchema = schemas.Out
	}
	t.Name = prefix + "." + t.Name
	// Which upstream this is, for the audit trail (observe.MetaUpstream),
	// over whatever the upstream sent under that key; the rest of its
	// _meta is passed as sent.
	if t.Meta == nil {
		t.Meta = &mcp.Meta{}
	}
	if t.Meta.AdditionalFields == nil {
		t.Meta.AdditionalFields = map[string]any{}
	}
	t.Meta.AdditionalFields[observe.MetaUpstream] = prefix
	// Task execution is not proxied: passing execution.taskSupport
	// "required" through would make mcp-go refuse every plain call.
	t.Execution = nil
	// mcp-go panics on a tool whose x-mcp-header annotations are invalid;
	// an upstream must not be able to crash the gateway.
	if err := mcp.ValidateParamHeaderAnnotations(&t); err != nil {
		return mcp.Tool{}, fmt.Errorf("tool %q: %w", t.Name, err)
	}
	return t, nil
}

// handler forwards a call of the proxy to the upstream tool original.
func (u *upstream) handler(original string) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		cn, err := u.connFor(ctx)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		// Only nefia's keys: whatever the caller put in _meta (its own
		// io.nefia/* claims above all) is not forwarded.
		agent, ok := identity.FromContext(ctx)
		params := &callParams{Name: original}
		var token string
		if ok {
			params.Meta.Agent = newAgentFields(agent)
			if u.signer != nil {
				if token, err = u.signer.Assertion(u.cfg.Name, agent, time.Now()); err != nil {
					return nil, err
				}
				params.Meta.Assertion = token
			}
		}
		if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
			// A random token of our own, bound to the upstream session the
			// call goes on, so that callers sharing the session cannot
			// collide, and no other session (another client's per_client
			// process) can guess it or send progress under it.
			tok := "nefia-progress-" + rand.Text()
			u.progress.Store(tok, progressTarget{ctx: ctx, token: req.Params.Meta.ProgressToken, cn: cn})
			defer u.progress.Delete(tok)
			params.Meta.Progress = tok
		}
		// The caller's arguments as they sent them: decoding and encoding
		// again would reorder them and round integers above 2^53.
		if params.Arguments, err = forwardArgs(req); err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout())
		defer cancel()
		if ok && u.cfg.URL != "" {
			cctx = withHeaders(cctx, agent, token)
		}
		cctx, hit := withLimitFlag(cctx)
		res, err := callUpstream(cctx, cn, params)
		switch {
		case err == nil:
			return res, nil
		case ctx.Err() != nil:
			return nil, ctx.Err() // the caller went away or cancelled
		case errors.Is(cctx.Err(), context.DeadlineExceeded):
			u.log.Warn("upstream call timed out", "tool", original, "timeout", u.cfg.Timeout())
			return mcp.NewToolResultError(fmt.Sprintf("upstream %q timed out: %s did not answer within %s (call_timeout)", u.cfg.Name, original, u.cfg.Timeout())), nil
		case tooLarge(hit, err): // HTTP upstreams (limit_http.go)
			return mcp.NewToolResultError(u.tooLargeError().Error()), nil
		case isTransportError(err):
			u.broken(cn, err)
			return mcp.NewToolResultError(fmt.Sprintf("upstream %q is down: %v", u.cfg.Name, err)), nil
		}
		// A JSON-RPC error from the upstream: passed on as an error.
		return nil, err
	}
}

// progressTarget is where an upstream's progress for one forwarded call
// goes: the caller's session (in ctx) under the caller's own token.
type progressTarget struct {
	ctx   context.Context
	token mcp.ProgressToken
	cn    *conn // the upstream session the call went on: the only one whose progress counts
}

// forwardProgress routes notifications/progress that upstream session from
// sent to the caller of the call it belongs to; progress for a call that
// has ended, with a token nefia did not issue, or from any session but the
// one the call went on (issue 12, attack item 5) is dropped.
func (u *upstream) forwardProgress(from *conn, n mcp.JSONRPCNotification) {
	tok, _ := n.Params.AdditionalFields["progressToken"].(string)
	v, ok := u.progress.Load(tok)
	if !ok {
		return
	}
	target := v.(progressTarget)
	if target.cn != from {
		u.log.Debug("progress from another upstream session than the call's dropped")
		return
	}
	params := maps.Clone(n.Params.AdditionalFields)
	params["progressToken"] = target.token
	if err := u.srv.SendNotificationToClient(target.ctx, string(mcp.MethodNotificationProgress), params); err != nil {
		u.log.Debug("forward progress", "err", err)
	}
}

// broken ends a session whose transport failed. A stdio upstream's
// process exit is the better reason and normally follows at once, so it is
// given a moment to win.
func (u *upstream) broken(cn *conn, err error) {
	if u.cfg.URL != "" {
		cn.fail(err)
		return
	}
	go func() {
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-cn.done:
		case <-t.C:
			cn.fail(err)
		}
	}()
}

func isTransportError(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) || errors.Is(err, transport.ErrTransportClosed)
}

// agentMeta is the io.nefia/agent value: the fields of the caller's
// verified certificate an upstream may authorize on.
func agentMeta(a identity.Agent) map[string]any {
	return map[string]any{"name": a.Name, "serial": a.Serial, "role": string(a.Role), "fingerprint": a.Fingerprint}
}

// ProxiedTools returns the names the upstream's proxies are registered
// under, sorted (for tests and status).
func (u *upstream) proxiedTools() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Sorted(maps.Keys(u.tools))
}

// newClient wraps a transport the way both kinds of upstream need.
func newClient(t transport.Interface) *client.Client { return client.NewClient(t) }
