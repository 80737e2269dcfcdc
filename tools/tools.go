package tools

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// Tool names. They are part of the protocol surface: clients, the
// authorization policy (package policy, mcp.policy in nefia.yaml) and the
// audit trail refer to tools by these names.
const (
	NameInit        = "nefia.mtls.init"
	NameIssueClient = "nefia.mtls.issue_client"
	NameStatus      = "nefia.mtls.status"
	NameRevoke      = "nefia.mtls.revoke"
	// NameRenew renews the caller's own client certificate (issue 13).
	NameRenew = "nefia.mtls.renew"
)

// Structured-log keys, fixed so log queries keep working (package ops logs
// the operations themselves with the same keys).
const (
	logKeyTool  = "tool"
	logKeyError = "error"
)

// Deps are what the tools act on. The tools hold no state of their own: the
// Store and nefia.yaml are shared with the CLI, so both always see the same
// certificates and settings.
type Deps struct {
	// Store is the state directory (required).
	Store *pki.Store
	// ConfigPath is nefia.yaml (required): nefia.mtls.init sets
	// mcp.mtls.enabled=true there and nefia.mtls.status reads it.
	ConfigPath string
	// ClientsDir is the only directory tree nefia.mtls.issue_client writes
	// bundles into; "" means <state dir>/clients. A model chooses out_dir,
	// so this root is what keeps it from writing anywhere else on the host.
	ClientsDir string
	// Sessions is the running gateway's session table; nil in stdio mode,
	// where there are no mTLS sessions to count or close.
	Sessions SessionManager
	// Logger receives operational logs (never key material); nil discards.
	Logger *slog.Logger
	// Audit is the trail the state-changing tools record their event on
	// before they act (package ops: no audit, no action). server.NewMCPServer
	// sets it from its trail; nil turns auditing off (tests, benchmarks).
	Audit *audit.Logger
}

// SessionManager is what a running gateway offers the tools. It is defined
// here, where it is used, so the tools need nothing else from the server.
type SessionManager interface {
	// CloseSerial closes every live session of the certificate with this
	// (canonical) serial and returns how many it closed. Revocation calls it
	// so a revoked certificate loses its open connections, not only new ones.
	CloseSerial(serial string) int
	// Count returns the number of live mTLS connections.
	Count() int
}

// names lists the tools in the order Register adds them.
var names = []string{NameInit, NameIssueClient, NameStatus, NameRevoke, NameRenew, NameRenewServer}

// Names returns the names of the tools Register adds, in a fresh slice.
func Names() []string { return slices.Clone(names) }

// stateEvents names the audit event of each tool that changes state. The
// operation the tool calls (package ops) writes that event durably before
// it acts (no audit, no action), as it does for the CLI.
var stateEvents = map[string]string{
	NameInit:        audit.EventInit,
	NameIssueClient: audit.EventIssueClient,
	NameRevoke:      audit.EventRevoke,
	NameRenew:       audit.EventRenew,
	NameRenewServer: audit.EventRenewServer,
}

// StateEvent returns the audit event of a state-changing tool; ok is false
// for read-only and unknown tools.
func StateEvent(tool string) (event string, ok bool) {
	event, ok = stateEvents[tool]
	return event, ok
}

// toolset is Deps after defaults, shared by the four handlers.
type toolset struct {
	store      *pki.Store
	ops        *ops.Service
	configPath string
	clientsDir string // absolute and clean
	sessions   SessionManager
	log        *slog.Logger
	// roots are directories whose absolute paths are stripped from error
	// text shown to callers, longest first.
	roots []root
	// status caches the status report between changes of its files.
	status statusCache
}

// Register adds nefia's four MCP tools to srv. It refuses a Deps without a
// Store or ConfigPath, and a server that already has a tool of the same name:
// silently replacing a tool would change what an authorized name does.
func Register(srv *server.MCPServer, d Deps) error {
	ts, err := newToolset(d)
	if err != nil {
		return err
	}
	all := []server.ServerTool{
		{Tool: initTool(), Handler: ts.handleInit},
		{Tool: issueClientTool(), Handler: ts.handleIssueClient},
		{Tool: statusTool(), Handler: ts.handleStatus},
		{Tool: revokeTool(), Handler: ts.handleRevoke},
		{Tool: renewTool(), Handler: ts.handleRenew},
		{Tool: renewServerTool(), Handler: ts.handleRenewServer},
	}
	for _, st := range all {
		// mcp.WithOutputSchema reports a reflection failure only on stderr
		// and leaves the schema empty; a tool without its declared output
		// schema must not be served.
		if st.Tool.OutputSchema.Type != "object" || len(st.Tool.OutputSchema.Properties) == 0 {
			return fmt.Errorf("tools: %s: output schema could not be generated", st.Tool.Name)
		}
		if srv.GetTool(st.Tool.Name) != nil {
			return fmt.Errorf("tools: %s is already registered", st.Tool.Name)
		}
	}
	srv.AddTools(all...)
	return nil
}

func newToolset(d Deps) (*toolset, error) {
	if d.Store == nil {
		return nil, errors.New("tools: Deps.Store is required")
	}
	if d.ConfigPath == "" {
		return nil, errors.New("tools: Deps.ConfigPath is required")
	}
	clients := d.ClientsDir
	if clients == "" {
		clients = d.Store.Path(pki.ClientsDir)
	}
	clients, err := filepath.Abs(clients)
	if err != nil {
		return nil, fmt.Errorf("tools: clients dir %s: %w", d.ClientsDir, err)
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svc := &ops.Service{Store: d.Store, ConfigPath: d.ConfigPath, Logger: log}
	if d.Audit != nil {
		svc.Audit = ops.Shared(d.Audit)
	}
	if d.Sessions != nil {
		svc.Sessions = d.Sessions
	}
	ts := &toolset{
		store:      d.Store,
		ops:        svc,
		configPath: d.ConfigPath,
		clientsDir: clients,
		sessions:   d.Sessions,
		log:        log,
	}
	ts.roots = redactionRoots(
		root{clients, "the clients directory"},
		root{d.Store.Dir(), "the state directory"},
		root{filepath.Dir(d.ConfigPath), "the configuration directory"},
	)
	return ts, nil
}

// annotations builds a complete, explicit set of hints. mcp.NewTool defaults
// to destructive and open-world, so every hint is always set here rather than
// inherited.
func annotations(title string, readOnly, destructive, idempotent bool) mcp.ToolOption {
	return mcp.WithToolAnnotation(mcp.ToolAnnotation{
		Title:           title,
		ReadOnlyHint:    mcp.ToBoolPtr(readOnly),
		DestructiveHint: mcp.ToBoolPtr(destructive),
		IdempotentHint:  mcp.ToBoolPtr(idempotent),
		// Every nefia tool acts on this gateway's own state directory only.
		OpenWorldHint: mcp.ToBoolPtr(false),
	})
}
