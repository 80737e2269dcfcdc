package tools

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// maxHosts bounds the hosts argument; a server certificate with more SANs
// than this is a mistake, not a deployment.
const maxHosts = ops.MaxHosts

// InitOutput is the structured result of nefia.mtls.init. It names the
// previous CA's archive only as a flag: the absolute paths of the CA and the
// state directory are never returned to a remote caller.
type InitOutput struct {
	CA       pki.CertInfo `json:"ca" jsonschema:"the new root CA"`
	Server   pki.CertInfo `json:"server" jsonschema:"the new server certificate; its SANs are the hosts"`
	Archived bool         `json:"archived" jsonschema:"true when force replaced an existing CA whose files were moved to the archive folder of the state directory"`
	// ConfigFile is the nefia.yaml in which mcp.mtls.enabled was set.
	ConfigFile string `json:"config_file" jsonschema:"the configuration file in which mcp.mtls.enabled was set to true"`
}

func initTool() mcp.Tool {
	return mcp.NewTool(NameInit,
		mcp.WithToolTitle("Initialize mTLS CA"),
		mcp.WithDescription("Create this gateway's root CA and server certificate and enable mTLS in its configuration. "+
			"Refuses if a CA already exists: replacing it (force=true) makes every certificate the old CA issued stop working, "+
			"including the one you may be connected with. The old files are archived, not deleted."),
		mcp.WithArray("hosts", mcp.Required(),
			mcp.Description("DNS names and IP addresses clients use to reach the gateway; they become the server certificate's SANs, e.g. [\"localhost\", \"127.0.0.1\"]; the host of the configured listen address is always added"),
			mcp.WithStringItems(mcp.MinLength(1), mcp.MaxLength(253)),
			mcp.MinItems(1), mcp.MaxItems(maxHosts)),
		mcp.WithBoolean("force",
			mcp.Description("Replace an existing CA. Every client and server certificate it issued stops working."),
			mcp.DefaultBool(false)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[InitOutput](),
		annotations("Initialize mTLS CA", false, true, false),
	)
}

func (ts *toolset) handleInit(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var hosts []string
	var force bool
	if err := decodeArgs(req, map[string]arg{"hosts": stringListArg(&hosts), "force": boolArg(&force)}); err != nil {
		return refuse("%v", err), nil
	}
	if len(hosts) == 0 {
		return refuse(`argument "hosts" is required: at least one DNS name or IP address, e.g. ["localhost", "127.0.0.1"]`), nil
	}
	ctx, actor := ts.actor(ctx, NameInit)
	res, err := ts.ops.Init(ctx, actor, ops.InitRequest{Hosts: hosts, Force: force})
	switch {
	case errors.Is(err, ops.ErrOutcomeUnrecorded): // done; the operation logged the audit failure
	case errors.Is(err, pki.ErrCAExists):
		return refuse("%s. Nothing was changed. Call again with force=true only if you mean to replace it: "+
			"the old CA's files are archived, but every certificate it issued stops working.", ts.redact(err)), nil
	case errors.Is(err, ops.ErrNotEnabled):
		return refuse("%s. Fix %s on the gateway host; do not call init again (the CA now exists).",
			ts.redact(err), filepath.Base(ts.configPath)), nil
	case err != nil:
		return ts.opFailed(NameInit, "creating the CA", err), nil
	}

	out := InitOutput{CA: res.CA, Server: res.Server, Archived: res.ArchivedTo != "", ConfigFile: ts.configPath}
	var b strings.Builder
	fmt.Fprintf(&b, "Created CA %q (expires %s).\n", res.CA.Subject, res.CA.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(&b, "Created server certificate for %s (expires %s).\n", strings.Join(res.Server.SANs, ", "), res.Server.NotAfter.Format(time.DateOnly))
	if out.Archived {
		b.WriteString("The previous CA was archived in the state directory; every certificate it issued no longer works.\n")
	}
	fmt.Fprintf(&b, "mTLS enabled in %s (mcp.mtls.enabled: true).\n", ts.configPath)
	b.WriteString("Next: issue client certificates with nefia.mtls.issue_client.")
	return success(out, b.String()), nil
}
