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

// RenewOutput is the structured result of nefia.mtls.renew: the new
// certificate of the caller (never a key: the CSR's key stays with the
// caller) and what happened to the one it renews.
type RenewOutput struct {
	Name            string    `json:"name" jsonschema:"the certificate's Subject CN, the same as the renewed certificate's"`
	Serial          string    `json:"serial" jsonschema:"the new certificate's serial, lowercase hex"`
	Role            pki.Role  `json:"role" jsonschema:"the same role as the renewed certificate's"`
	NotBefore       time.Time `json:"not_before" jsonschema:"RFC 3339; backdated a minute for clock skew"`
	NotAfter        time.Time `json:"not_after" jsonschema:"RFC 3339"`
	Fingerprint     string    `json:"fingerprint" jsonschema:"SHA-256 of the new certificate, lowercase hex"`
	CertificatePEM  string    `json:"certificate_pem" jsonschema:"the new client certificate, PEM"`
	CAPEM           string    `json:"ca_pem" jsonschema:"the CA certificate, PEM"`
	Renews          string    `json:"renews" jsonschema:"serial of the certificate this call was made with, which the new one renews"`
	PreviousRevoked bool      `json:"previous_revoked" jsonschema:"true when revoke_previous revoked the renewed certificate; its sessions on this gateway end shortly after this answer"`
}

func renewTool() mcp.Tool {
	return mcp.NewTool(NameRenew,
		mcp.WithToolTitle("Renew own client certificate"),
		mcp.WithDescription("Renew the client certificate this connection was made with: the gateway signs csr_pem (a new ECDSA P-256 key, which never leaves you) "+
			"with the same name and role, a new serial and the original lifetime (capped by mcp.mtls.client_max_duration). "+
			"Only your own certificate can be renewed; a revoked or expired one cannot. "+
			"The old certificate stays valid until it expires unless revoke_previous is true."),
		mcp.WithString("csr_pem", mcp.Required(),
			mcp.Description("A PEM CERTIFICATE REQUEST over a new ECDSA P-256 key. Only its public key is used: its subject and extensions are ignored."),
			mcp.MinLength(1), mcp.MaxLength(pki.MaxCSRBytes)),
		mcp.WithBoolean("revoke_previous",
			mcp.Description("Revoke the certificate this connection was made with once the new one is issued (reason \"renewed\"); this connection then ends."),
			mcp.DefaultBool(false)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[RenewOutput](),
		// Not read-only: it issues a certificate and records it. Not
		// destructive by default: nothing is overwritten or revoked unless
		// revoke_previous, which only ends the caller's own old
		// certificate, and the caller holds its replacement. Not
		// idempotent: every call issues a new serial.
		annotations("Renew own client certificate", false, false, false),
	)
}

func (ts *toolset) handleRenew(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if _, known := identity.FromContext(ctx); !known {
		return refuse("permission denied: %s needs an authenticated caller, and this request has none", NameRenew), nil
	}
	var csr string
	var revokePrev bool
	if err := decodeArgs(req, map[string]arg{"csr_pem": stringArg(&csr), "revoke_previous": boolArg(&revokePrev)}); err != nil {
		return refuse("%v", err), nil
	}
	if strings.TrimSpace(csr) == "" {
		return refuse(`argument "csr_pem" is required: a PEM CERTIFICATE REQUEST over a new ECDSA P-256 key`), nil
	}
	ctx, actor := ts.actor(ctx, NameRenew)
	res, err := ts.ops.Renew(ctx, actor, ops.RenewRequest{CSRPEM: []byte(csr), RevokePrevious: revokePrev})
	switch {
	case errors.Is(err, ops.ErrOutcomeUnrecorded): // done; the operation logged the audit failure
	case errors.Is(err, ops.ErrNoCertificate):
		return refuse("%v", err), nil
	case err != nil && res.Issued != nil:
		return refuse("certificate %s was issued, but revoking the previous one failed: %s; ask an operator to revoke it",
			res.Serial, ts.redact(errors.Unwrap(err))), nil
	case err != nil:
		return ts.opFailed(NameRenew, "renewing the certificate", err), nil
	}
	out := RenewOutput{
		Name:            res.Name,
		Serial:          res.Serial,
		Role:            res.Role,
		NotBefore:       res.NotBefore,
		NotAfter:        res.NotAfter,
		Fingerprint:     res.Fingerprint,
		CertificatePEM:  string(res.CertPEM),
		CAPEM:           string(res.CAPEM),
		Renews:          res.Renews,
		PreviousRevoked: res.PreviousRevoked,
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Renewed %s certificate %q: new serial %s (renews %s), valid until %s.\n",
		out.Role, out.Name, out.Serial, out.Renews, out.NotAfter.Format(time.RFC3339))
	if out.PreviousRevoked {
		fmt.Fprintf(&b, "The previous certificate %s is revoked; this connection ends shortly.\n", out.Renews)
	} else {
		b.WriteString("The previous certificate stays valid until it expires.\n")
	}
	fmt.Fprintf(&b, "\nCertificate:\n%s\nCA certificate:\n%s", out.CertificatePEM, out.CAPEM)
	return success(out, b.String()), nil
}
