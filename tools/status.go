package tools

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/jsonrpc"
	"github.com/nefia/nefia/pki"
)

// StatusReport is the single description of a gateway's mTLS state, shared by
// `nefia mtls status --json` and the nefia.mtls.status tool so the two can
// never disagree.
type StatusReport struct {
	Enabled    bool          `json:"enabled" jsonschema:"mcp.mtls.enabled in the configuration file"`
	ListenAddr string        `json:"listen_addr" jsonschema:"mcp.mtls.listen_addr in the configuration file"`
	StateDir   string        `json:"state_dir,omitempty" jsonschema:"absolute path of the state directory on the gateway's host; operators only"`
	ConfigFile string        `json:"config_file,omitempty" jsonschema:"absolute path of the configuration file on the gateway's host; operators only"`
	CA         *pki.CertInfo `json:"ca" jsonschema:"the root CA; null when there is none"`
	Server     *pki.CertInfo `json:"server" jsonschema:"the gateway's server certificate; null when there is none"`
	// Clients is nil when the store could not be read: zero counts would
	// claim an empty fleet (issue 16 item 6).
	Clients      *pki.ClientCounts `json:"clients" jsonschema:"client certificates by state; null when the store is unavailable (see clients_error)"`
	ClientsError string            `json:"clients_error,omitempty" jsonschema:"why the client certificates could not be counted; absent when they were"`
	Problems     []string          `json:"problems" jsonschema:"everything found wrong, such as a missing file or a certificate close to expiry"`
	// Connections is the number of live mTLS connections; set only by a
	// running gateway.
	Connections *int `json:"connections,omitempty" jsonschema:"live mTLS connections; absent in stdio mode, where there is no listener"`
	// Caller is who asked, as the gateway authenticated them; set only by
	// the tool, so an agent can confirm which certificate it is using.
	Caller *identity.Agent `json:"caller,omitempty" jsonschema:"the authenticated caller of this request: certificate name, serial, role, transport and session"`
}

// BuildStatus combines the configuration and the state directory into a
// report. A configuration that failed to load is reported as a problem, with
// defaults shown, rather than hiding the rest of the report.
func BuildStatus(store *pki.Store, cfg config.Loaded, cfgErr error) StatusReport {
	st := store.Status()
	r := StatusReport{
		Enabled:      cfg.MCP.MTLS.Enabled,
		ListenAddr:   cfg.MCP.MTLS.ListenAddr,
		StateDir:     store.Dir(),
		ConfigFile:   cfg.Path,
		CA:           st.CA,
		Server:       st.Server,
		ClientsError: st.ClientsError,
		Problems:     st.Problems,
	}
	if st.ClientsError == "" {
		c := st.Clients
		r.Clients = &c
	}
	if cfgErr != nil {
		r.Problems = append(r.Problems, cfgErr.Error())
	}
	r.Problems = append(r.Problems, lifecycleProblems(store, cfg, st)...)
	if p := audit.DiskProblem(filepath.Join(store.Dir(), "audit")); p != "" {
		r.Problems = append(r.Problems, p)
	}
	return r
}

func statusTool() mcp.Tool {
	return mcp.NewTool(NameStatus,
		mcp.WithToolTitle("mTLS status"),
		mcp.WithDescription("Report this gateway's mTLS state: whether it is enabled, the CA and server certificates, "+
			"counts of issued, active, expired and revoked client certificates, live connections (gateway mode only) "+
			"and every problem found, such as a certificate close to expiry. Changes nothing."),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[StatusReport](),
		annotations("mTLS status", true, false, true),
	)
}

// handleStatus returns exactly what `nefia mtls status --json` prints, plus
// connections when a gateway is running. In stdio mode (Deps.Sessions nil)
// connections is omitted rather than 0: there is no listener whose
// connections could be counted, and 0 would claim there is one.
func (ts *toolset) handleStatus(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if err := decodeArgs(req, noArgs); err != nil {
		return refuse("%v", err), nil
	}
	r, gen := ts.status.get(ts.store, ts.configPath, time.Now())
	key := renderKey{gen: gen, connections: -1}
	if ts.sessions != nil {
		key.connections = ts.sessions.Count()
	}
	key.caller, key.known = identity.FromContext(ctx)
	out, err := ts.status.render(key, func() (rendered, error) {
		if key.connections >= 0 {
			n := key.connections
			r.Connections = &n
		}
		if key.known {
			a := key.caller
			r.Caller = &a
		}
		r = ts.forCaller(r, key.known && key.caller.Role == pki.RoleOperator)
		data, err := jsonrpc.Marshal(r)
		return rendered{structured: data, text: statusText(r)}, err
	})
	if err != nil {
		return ts.fail(NameStatus, "encoding the status", err), nil
	}
	return success(out.structured, out.text), nil
}

// forCaller returns the report as its caller may see it. Where the gateway
// keeps its state and configuration on its host is for operators (the
// stdio local operator included): an agent is told neither path, and the
// problems are redacted as tool errors are, with file names relative to the
// gateway's directories and no absolute path (issue 10, item 15). A caller
// of unknown role is treated as an agent. r is the cache's: it is copied,
// not changed.
func (ts *toolset) forCaller(r StatusReport, operator bool) StatusReport {
	if operator {
		return r
	}
	r.StateDir, r.ConfigFile = "", ""
	if r.Problems != nil {
		problems := make([]string, len(r.Problems))
		for i, p := range r.Problems {
			problems[i] = ts.redact(errors.New(p))
		}
		r.Problems = problems
	}
	return r
}

func statusText(r StatusReport) string {
	var b strings.Builder
	if c := r.Caller; c != nil {
		serial := ""
		if c.Serial != "" {
			serial = ", serial " + c.Serial
		}
		fmt.Fprintf(&b, "you are: %q (role %s%s, via %s)\n", c.Name, c.Role, serial, c.Transport)
	}
	fmt.Fprintf(&b, "mTLS enabled: %v (listen address %s)\n", r.Enabled, r.ListenAddr)
	for _, c := range []struct {
		label string
		info  *pki.CertInfo
	}{{"CA", r.CA}, {"server certificate", r.Server}} {
		if c.info == nil {
			fmt.Fprintf(&b, "%s: none\n", c.label)
			continue
		}
		fmt.Fprintf(&b, "%s: %q, serial %s, valid until %s", c.label, c.info.Subject, c.info.Serial, c.info.NotAfter.Format(time.RFC3339))
		if len(c.info.SANs) > 0 {
			fmt.Fprintf(&b, ", for %s", strings.Join(c.info.SANs, ", "))
		}
		b.WriteString("\n")
	}
	if r.Clients == nil {
		fmt.Fprintf(&b, "client certificates: unknown (%s)\n", r.ClientsError)
	} else {
		fmt.Fprintf(&b, "client certificates: %d issued, %d active, %d expired, %d revoked\n",
			r.Clients.Issued, r.Clients.Active, r.Clients.Expired, r.Clients.Revoked)
	}
	if r.Connections != nil {
		fmt.Fprintf(&b, "live connections: %d\n", *r.Connections)
	}
	if len(r.Problems) == 0 {
		b.WriteString("problems: none")
		return b.String()
	}
	b.WriteString("problems:")
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\n  - %s", p)
	}
	return b.String()
}
