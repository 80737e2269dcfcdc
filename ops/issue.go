package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// DefaultDuration is a client certificate's lifetime when the request
// names none: short, because it may have been a model that asked.
const DefaultDuration = "24h"

// IssueRequest asks for one client certificate and its bundle.
type IssueRequest struct {
	// Name is the Subject CN and the bundle's file names.
	Name string
	// Role is "agent" or "operator"; "" means agent.
	Role string
	// Duration is the lifetime, e.g. 24h, 90m or 30d; "" means
	// DefaultDuration. It is bounded by config.MinClientDuration and the
	// configured mcp.mtls.client_max_duration.
	Duration string
	// CSRPEM, when non-nil, is a PEM certificate request to sign instead of
	// generating a key; an empty or blank one is refused.
	CSRPEM []byte
	// OutDir is the host directory the bundle is written to, as the edge
	// resolved it (the tool confines it to its clients directory first).
	OutDir string
	// Force overwrites an existing bundle.
	Force bool
	// P12 also writes NAME.p12 (key, certificate and CA), encrypted with
	// P12Password; not with a CSR, whose key stays with its owner.
	P12 bool
	// P12Password encrypts NAME.p12 (at least pki.MinP12PasswordLen
	// characters). It is a secret: it is neither logged nor recorded.
	P12Password string
	// RevokePrevious revokes every certificate of the same name that was
	// active before this one, once it is issued and written (through
	// Revoke, reason RenewReason, each audited). Without it they stay
	// active, and IssueResult.PreviousActive lists them (issue 13 item 5).
	RevokePrevious bool
}

// IssueResult is what Issue did. Issued holds the generated key (nil with a
// CSR): an edge must never send it anywhere.
type IssueResult struct {
	*pki.Issued
	Files pki.BundlePaths
	// PreviousActive are the serials of the name's earlier certificates
	// that are still active: the edges warn about them.
	PreviousActive []string
	// PreviousRevoked are the serials RevokePrevious revoked.
	PreviousRevoked []string
}

// Issue validates the request (actor's authority included), then, audited,
// issues the certificate and writes its bundle. A bundle that cannot be
// written after issuance is an *UnwrittenError and its certificate is
// revoked.
func (s *Service) Issue(ctx context.Context, actor identity.Agent, req IssueRequest) (IssueResult, error) {
	r, d, err := s.checkIssue(ctx, actor, req)
	if err != nil {
		return IssueResult{}, err
	}
	var out IssueResult
	args := map[string]any{"name": req.Name, "role": string(r), "duration": d.String(), "out_dir": req.OutDir, "force": req.Force}
	if req.CSRPEM != nil {
		args["csr_pem"] = string(req.CSRPEM) // recorded as its SHA-256
	}
	if req.P12 {
		args["p12"] = true
	}
	if req.RevokePrevious {
		// Revoking is an operator's act (the revoke tool is not an
		// agent's by default): a policy that lets agents issue must not
		// let them revoke whoever holds a name, operators included.
		if !actor.Role.Allows(pki.RoleOperator) {
			return IssueResult{}, fmt.Errorf("%w: revoke_previous revokes certificates, which only operators may do", ErrPermission)
		}
		args["revoke_previous"] = true
	}
	previous, err := s.activeOf(req.Name)
	if err != nil {
		return IssueResult{}, err
	}
	err = s.audited(ctx, actor, audit.EventIssueClient, args, func() (map[string]any, error) {
		iss, err := s.Store.Issue(pki.IssueRequest{Name: req.Name, Role: r, Duration: d, CSRPEM: req.CSRPEM})
		if err != nil {
			return nil, err
		}
		out.Issued = iss
		result := audit.ToMap(iss.IssuedCert)
		write := s.WriteBundle
		if write == nil {
			write = pki.WriteBundle
		}
		if out.Files, err = write(req.OutDir, iss, req.Force); err != nil {
			return s.revokeUnwritten(ctx, actor, iss, result, "its files", err)
		}
		if req.P12 {
			if out.Files.P12, err = pki.WriteP12(req.OutDir, iss, req.P12Password, req.Force); err != nil {
				return s.revokeUnwritten(ctx, actor, iss, result, "its PKCS#12 bundle", err)
			}
		}
		result["files"] = audit.ToMap(out.Files)
		return result, nil
	})
	switch {
	case errors.Is(err, pki.ErrInvalidDuration):
		return IssueResult{}, inputErr(FieldDuration, err)
	case errors.Is(err, pki.ErrInvalidCSR):
		return IssueResult{}, inputErr(FieldCSR, err)
	case err != nil && !errors.Is(err, ErrOutcomeUnrecorded):
		return IssueResult{}, err
	}
	s.logFor(ctx, actor).Info("client certificate issued", logKeyName, out.Name, logKeySerial, out.Serial, logKeyRole, out.Role)
	out.PreviousActive = previous
	if req.RevokePrevious && len(previous) > 0 {
		out.PreviousActive = nil
		for i, serial := range previous {
			if _, rerr := s.Revoke(ctx, actor, RevokeRequest{Serial: serial, Reason: RenewReason}); rerr != nil && !errors.Is(rerr, ErrOutcomeUnrecorded) {
				out.PreviousActive = previous[i:]
				return out, fmt.Errorf("certificate %s was issued, but revoking the previous certificate %s failed: %w", out.Serial, serial, rerr)
			}
			out.PreviousRevoked = append(out.PreviousRevoked, serial)
		}
	}
	return out, err
}

// activeOf returns the serials of name's certificates that are active (or
// not yet valid), oldest first.
func (s *Service) activeOf(name string) ([]string, error) {
	list, err := s.Store.ListNamed(name)
	if err != nil {
		return nil, fmt.Errorf("read the inventory: %w", err)
	}
	var out []string
	for _, c := range list {
		if c.Name == name && (c.State == pki.StateActive || c.State == pki.StateNotYet) {
			out = append(out, c.Serial)
		}
	}
	return out, nil
}

// checkIssue is everything Issue refuses before it records or changes
// anything, in the order the CLI has always reported it.
func (s *Service) checkIssue(ctx context.Context, actor identity.Agent, req IssueRequest) (pki.Role, time.Duration, error) {
	if err := pki.ValidateName(req.Name); err != nil {
		return "", 0, inputErr(FieldName, err)
	}
	role := req.Role
	if role == "" {
		role = string(pki.RoleAgent)
	}
	r, err := pki.ParseRole(role)
	if err != nil {
		return "", 0, inputErr(FieldRole, err)
	}
	// Role.Allows, not the policy: the policy says which tools a caller may
	// call; this says which certificates it may hand out, whatever the
	// policy says.
	if err := allowed(actor, r); err != nil {
		s.logFor(ctx, actor).Warn("issuance above the actor's authority refused", logKeyRole, actor.Role, "requested_role", r)
		return "", 0, err
	}
	dur := req.Duration
	if dur == "" {
		dur = DefaultDuration
	}
	d, err := pki.ParseDuration(dur)
	if err != nil {
		return "", 0, inputErr(FieldDuration, err)
	}
	// The bounds from the configuration as it is now (issue 10 item 8).
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		return "", 0, fmt.Errorf("read the configuration: %w", err)
	}
	if err := pki.CheckClientDuration(d, cfg.MCP.MTLS.ClientMaxDuration); err != nil {
		return "", 0, inputErr(FieldDuration, err)
	}
	if req.CSRPEM != nil {
		if len(req.CSRPEM) > pki.MaxCSRBytes {
			return "", 0, inputErrf(FieldCSR, "%w: %d bytes; at most %d are accepted", pki.ErrInvalidCSR, len(req.CSRPEM), pki.MaxCSRBytes)
		}
		// An empty CSR used to mean "no CSR": a key was generated on this
		// host instead (issue 10 item 8).
		if len(bytes.TrimSpace(req.CSRPEM)) == 0 {
			return "", 0, inputErrf(FieldCSR, "%w: it is empty", pki.ErrInvalidCSR)
		}
	}
	if req.P12 {
		if req.CSRPEM != nil {
			return "", 0, inputErrf(FieldP12, "a PKCS#12 bundle holds the private key, which a CSR keeps on the requester's side; drop one of them")
		}
		if len(req.P12Password) < pki.MinP12PasswordLen {
			return "", 0, inputErrf(FieldP12Password, "the password must be at least %d characters", pki.MinP12PasswordLen)
		}
	}
	// The destination is checked before anything is issued (issue 10
	// items 6 and 7).
	if err := pki.CheckOutDir(s.Store.Dir(), req.OutDir); err != nil {
		return "", 0, inputErr(FieldOutDir, err)
	}
	if err := pki.CheckBundle(req.OutDir, req.Name, req.Force); err != nil {
		return "", 0, bundleErr(err)
	}
	if err := pki.CheckBundleFiles(req.OutDir, req.Name, req.P12); err != nil {
		return "", 0, bundleErr(err)
	}
	if req.P12 {
		if err := pki.CheckP12(req.OutDir, req.Name, req.Force); err != nil {
			return "", 0, bundleErr(err)
		}
	}
	return r, d, nil
}

// bundleErr files a bundle check's refusal under the field that can fix
// it: force for an existing bundle, out_dir for an unusable file there.
func bundleErr(err error) error {
	switch {
	case errors.Is(err, pki.ErrFileExists):
		return inputErr(FieldForce, err)
	case errors.Is(err, pki.ErrInvalidOutDir):
		return inputErr(FieldOutDir, err)
	}
	return fmt.Errorf("check the bundle files: %w", err)
}

// revokeUnwritten revokes a certificate whose files could not be written
// (issue 10 item 7): nobody holds its key, so it must not stay active. The
// audit result says what happened.
func (s *Service) revokeUnwritten(ctx context.Context, actor identity.Agent, iss *pki.Issued, result map[string]any, what string, writeErr error) (map[string]any, error) {
	log := s.logFor(ctx, actor)
	log.Error("writing a client bundle failed", logKeySerial, iss.Serial, "what", what, logKeyError, writeErr)
	e := &UnwrittenError{Serial: iss.Serial, What: what, WriteErr: writeErr}
	if _, err := s.Store.Revoke(iss.Serial, "its files could not be written"); err != nil {
		log.Error("revoking an unwritten certificate failed", logKeySerial, iss.Serial, logKeyError, err)
		result["revoke_error"] = err.Error()
		e.RevokeErr = err
		return result, e
	}
	result["revoked"] = true
	return result, e
}
