package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// defaultDuration is the lifetime of a certificate when the caller names
// none: short, because a model asked for it.
const defaultDuration = ops.DefaultDuration

// IssueOutput is the structured result of nefia.mtls.issue_client. It never
// holds a private key: a generated key is written to Files.Key on the
// gateway host (0600), and a CSR's key never left its owner.
type IssueOutput struct {
	Name           string          `json:"name" jsonschema:"the certificate's Subject CN"`
	Serial         string          `json:"serial" jsonschema:"lowercase hex; pass it to nefia.mtls.revoke"`
	Role           pki.Role        `json:"role" jsonschema:"agent or operator"`
	NotBefore      time.Time       `json:"not_before" jsonschema:"RFC 3339; backdated a minute for clock skew"`
	NotAfter       time.Time       `json:"not_after" jsonschema:"RFC 3339"`
	Fingerprint    string          `json:"fingerprint" jsonschema:"SHA-256 of the certificate, lowercase hex"`
	CertificatePEM string          `json:"certificate_pem" jsonschema:"the client certificate, PEM"`
	CAPEM          string          `json:"ca_pem" jsonschema:"the CA certificate, PEM, which clients verify the gateway with"`
	Files          pki.BundlePaths `json:"files" jsonschema:"where the bundle was written on the gateway host; key is absent when a CSR was signed"`
	// Issue 13 item 5: re-issuing a name says what stays active.
	PreviousActive  []string `json:"previous_active,omitempty" jsonschema:"serials of earlier certificates with this name that are still active; revoke them with nefia.mtls.revoke or pass revoke_previous"`
	PreviousRevoked []string `json:"previous_revoked,omitempty" jsonschema:"serials of earlier certificates with this name that revoke_previous revoked"`
}

func issueClientTool() mcp.Tool {
	return mcp.NewTool(NameIssueClient,
		mcp.WithToolTitle("Issue client certificate"),
		mcp.WithDescription("Issue a client certificate that admits an agent or operator to this gateway. "+
			"Without csr_pem a key pair is generated and written with the certificate to out_dir on the gateway host; "+
			"the private key is never returned. With csr_pem the request's public key is certified and no key file is written. "+
			"You cannot issue a role with more authority than your own."),
		mcp.WithString("name", mcp.Required(),
			mcp.Description("Certificate name: its Subject CN and the bundle's file names (NAME.crt, NAME.key)."),
			mcp.Pattern(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`), mcp.MaxLength(64)),
		mcp.WithString("duration",
			mcp.Description("Validity from now: a Go duration such as 24h or 90m, or whole days such as 30d. At least 1m, at most the gateway's mcp.mtls.client_max_duration (90d by default), and it must end before the CA expires."),
			mcp.DefaultString(defaultDuration), mcp.MaxLength(32)),
		mcp.WithString("role",
			mcp.Description("agent: read-only tools; operator: every tool."),
			mcp.Enum(string(pki.RoleAgent), string(pki.RoleOperator)), mcp.DefaultString(string(pki.RoleAgent))),
		mcp.WithString("csr_pem",
			mcp.Description("A PEM CERTIFICATE REQUEST to sign instead of generating a key (ECDSA P-256/P-384, Ed25519 or RSA >= 2048). Only its public key is used."),
			mcp.MaxLength(pki.MaxCSRBytes)),
		mcp.WithString("out_dir",
			mcp.Description("Directory for the bundle, relative to the gateway's clients directory (default: that directory itself). "+
				"An absolute path must lie inside it; anything that leads outside, including through a symbolic link, is refused."),
			mcp.MaxLength(4096)),
		mcp.WithBoolean("force",
			mcp.Description("Overwrite an existing NAME.crt / NAME.key in out_dir."),
			mcp.DefaultBool(false)),
		mcp.WithBoolean("revoke_previous",
			mcp.Description("Revoke every earlier active certificate with this name once the new one is written (reason \"renewed\"). Without it they stay active and previous_active lists them. Operators only."),
			mcp.DefaultBool(false)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[IssueOutput](),
		// Destructive: force overwrites a bundle, and ca.crt in out_dir is
		// always rewritten. Not idempotent: every call issues a new serial.
		annotations("Issue client certificate", false, true, false),
	)
}

func (ts *toolset) handleIssueClient(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if _, known := identity.FromContext(ctx); !known {
		return refuse("permission denied: %s needs an authenticated caller, and this request has none", NameIssueClient), nil
	}
	var name, duration, role, csr, outDir string
	var force, revokePrev bool
	err := decodeArgs(req, map[string]arg{
		"name": stringArg(&name), "duration": stringArg(&duration), "role": stringArg(&role),
		"csr_pem": stringArg(&csr), "out_dir": stringArg(&outDir), "force": boolArg(&force),
		"revoke_previous": boolArg(&revokePrev),
	})
	if err != nil {
		return refuse("%v", err), nil
	}
	if name == "" {
		return refuse(`argument "name" is required: 1-64 characters matching [A-Za-z0-9][A-Za-z0-9._-]*`), nil
	}
	dir, res := ts.resolveOutDir(outDir)
	if res != nil {
		return res, nil
	}
	in := ops.IssueRequest{Name: name, Role: role, Duration: duration, OutDir: dir, Force: force, RevokePrevious: revokePrev}
	if csr != "" {
		in.CSRPEM = []byte(csr)
	}
	ctx, actor := ts.actor(ctx, NameIssueClient)
	iss, err := ts.ops.Issue(ctx, actor, in)
	var unwritten *ops.UnwrittenError
	switch {
	case errors.Is(err, ops.ErrOutcomeUnrecorded): // done; the operation logged the audit failure
	case errors.Is(err, pki.ErrFileExists):
		where := "out_dir"
		if outDir == "" {
			where = "the clients directory"
		}
		return refuse("a bundle named %q already exists in %s; choose another name, or pass force=true to overwrite it", name, where), nil
	case errors.Is(err, pki.ErrOutDirInStateDir):
		return refuse(`argument "out_dir": bundles cannot be written into the gateway's state directory (only into its clients subdirectory); choose another out_dir`), nil
	case errors.Is(err, pki.ErrNoCAKey), errors.Is(err, pki.ErrNoCA) && ts.store.Records() != nil:
		// On a shared store, a gateway without the CA files is one
		// deployed not to issue: initializing a CA here would split the
		// fleet, so that is not what the refusal suggests.
		return refuse("this gateway holds no CA key, so it cannot issue certificates; issue through a gateway (or the CLI on a host) that holds %s", pki.CAKeyFile), nil
	case errors.Is(err, pki.ErrNoCA):
		return refuse("no CA has been initialized on this gateway; call %s first", NameInit), nil
	case errors.As(err, &unwritten) && unwritten.RevokeErr != nil:
		return refuse("certificate %s was issued and recorded, but writing its files failed: %s, and revoking it failed too. "+
			"Revoke it with %s.", unwritten.Serial, ts.redact(unwritten.WriteErr), NameRevoke), nil
	case errors.As(err, &unwritten):
		return refuse("certificate %s was issued, but writing its files failed (%s), so it was revoked; try again.",
			unwritten.Serial, ts.redact(unwritten.WriteErr)), nil
	case err != nil && iss.Issued != nil:
		return refuse("certificate %s was issued and written, but revoking an earlier certificate of %q failed: %s; still active: %s",
			iss.Serial, name, ts.redact(errors.Unwrap(err)), strings.Join(iss.PreviousActive, ", ")), nil
	case err != nil:
		return ts.opFailed(NameIssueClient, "issuing the certificate", err), nil
	}
	paths := iss.Files

	out := IssueOutput{
		Name:           iss.Name,
		Serial:         iss.Serial,
		Role:           iss.Role,
		NotBefore:      iss.NotBefore,
		NotAfter:       iss.NotAfter,
		Fingerprint:    iss.Fingerprint,
		CertificatePEM: string(iss.CertPEM),
		CAPEM:          string(iss.CAPEM),
		Files:          paths,

		PreviousActive:  iss.PreviousActive,
		PreviousRevoked: iss.PreviousRevoked,
	}
	return success(out, issueText(out)), nil
}

func issueText(out IssueOutput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Issued %s certificate %q, valid until %s.\n", out.Role, out.Name, out.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(&b, "serial:      %s\nfingerprint: %s\n", out.Serial, out.Fingerprint)
	fmt.Fprintf(&b, "Files on the gateway host:\n  cert: %s\n", out.Files.Cert)
	if out.Files.Key != "" {
		fmt.Fprintf(&b, "  key:  %s (private key, mode 0600; it is not part of this result)\n", out.Files.Key)
	} else {
		b.WriteString("  key:  none (signed from your CSR; the key stays with you)\n")
	}
	fmt.Fprintf(&b, "  ca:   %s\n", out.Files.CA)
	if len(out.PreviousActive) > 0 {
		fmt.Fprintf(&b, "Warning: earlier certificate(s) named %q stay active until they expire: %s (revoke them with %s, or pass revoke_previous=true).\n",
			out.Name, strings.Join(out.PreviousActive, ", "), NameRevoke)
	}
	for _, serial := range out.PreviousRevoked {
		fmt.Fprintf(&b, "Revoked the earlier certificate %s.\n", serial)
	}
	fmt.Fprintf(&b, "\nCertificate:\n%s\nCA certificate:\n%s", out.CertificatePEM, out.CAPEM)
	return b.String()
}
