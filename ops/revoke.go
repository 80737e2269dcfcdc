package ops

import (
	"context"
	"errors"
	"strings"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// RevokeRequest asks for one serial to be revoked.
type RevokeRequest struct {
	// Serial is hexadecimal, any case, colons allowed.
	Serial string
	// Reason is recorded in the revocation store; surrounding space is
	// trimmed.
	Reason string
}

// RevokeResult is what Revoke did.
type RevokeResult struct {
	pki.Revocation
	// AlreadyRevoked: the serial was revoked before; nothing changed in the
	// revocation store and Revocation is the existing record.
	AlreadyRevoked bool
	// Warnings did not stop the revocation but should be checked, such as
	// a serial the inventory does not know.
	Warnings []string
	// SessionsClosed is how many live sessions Service.Sessions closed;
	// always 0 without one.
	SessionsClosed int
}

// Revoke revokes a serial; revoking an already revoked one succeeds with
// AlreadyRevoked set. Live sessions are closed after the audit outcome is
// recorded, on the repeat call too: a session that outlived an earlier
// revocation (made by the CLI while the gateway was busy, or a close that
// raced a reconnect) must still end.
func (s *Service) Revoke(ctx context.Context, actor identity.Agent, req RevokeRequest) (RevokeResult, error) {
	return s.revoke(ctx, actor, req, true)
}

// revoke is Revoke; closeSessions false leaves the serial's live sessions
// to the gateway's revocation poll, for a renewal whose own connection
// must carry the answer back first.
func (s *Service) revoke(ctx context.Context, actor identity.Agent, req RevokeRequest, closeSessions bool) (RevokeResult, error) {
	if strings.TrimSpace(req.Serial) == "" {
		return RevokeResult{}, inputErrf(FieldSerial, "%w: the serial is empty", pki.ErrInvalidSerial)
	}
	reason := strings.TrimSpace(req.Reason)
	// Checked before the audit record, as bad input changes nothing.
	if err := pki.ValidateReason(reason); err != nil {
		return RevokeResult{}, inputErr(FieldReason, err)
	}
	var out RevokeResult
	args := map[string]any{"serial": req.Serial, "reason": reason}
	err := s.audited(ctx, actor, audit.EventRevoke, args, func() (map[string]any, error) {
		res, err := s.Store.RevokeReport(req.Serial, reason)
		if out.AlreadyRevoked = errors.Is(err, pki.ErrAlreadyRevoked); out.AlreadyRevoked {
			err = nil // idempotent: the serial is revoked, as asked
		}
		out.Revocation, out.Warnings = res.Revocation, res.Warnings
		m := audit.ToMap(res.Revocation)
		if m != nil && err == nil {
			m["already_revoked"] = out.AlreadyRevoked
			if len(res.Warnings) > 0 {
				m["warnings"] = res.Warnings
			}
		}
		return m, err
	})
	if errors.Is(err, pki.ErrInvalidSerial) {
		return RevokeResult{}, inputErr(FieldSerial, err)
	}
	if err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
		return RevokeResult{}, err
	}
	if s.Sessions != nil && closeSessions {
		out.SessionsClosed = s.Sessions.CloseSerial(out.Serial)
	}
	s.logFor(ctx, actor).Info("certificate revoked", logKeySerial, out.Serial, logKeyName, out.Name, "already_revoked", out.AlreadyRevoked,
		"sessions_closed", out.SessionsClosed, "warnings", len(out.Warnings))
	return out, err
}
