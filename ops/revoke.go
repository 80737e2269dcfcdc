package ops

import (
	"context"
	"errors"
	"fmt"
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
	if err := s.mayRevoke(actor, req.Serial); err != nil {
		return RevokeResult{}, err
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

// mayRevoke is the privilege rule for revocation, which the policy cannot
// lift: an actor revokes only certificates of a role its own allows (an
// agent that a policy lets call nefia.mtls.revoke may revoke agents, never
// an operator). A serial the inventory does not know, or an inventory that
// cannot be read, could be anyone's: operators only.
func (s *Service) mayRevoke(actor identity.Agent, serial string) error {
	if actor.Role == pki.RoleOperator {
		return nil
	}
	if _, err := pki.ParseRole(string(actor.Role)); err != nil || actor.Role == "" {
		return fmt.Errorf("%w: your identity carries no valid role, so it cannot revoke certificates", ErrPermission)
	}
	canon, err := pki.ParseSerial(serial)
	if err != nil {
		return inputErr(FieldSerial, err)
	}
	// One entry, not the inventory: on etcd a key read (issue 15).
	c, ok, err := s.Store.Lookup(canon)
	if err != nil {
		return fmt.Errorf("%w: the inventory cannot be read, so only an operator may revoke", ErrPermission)
	}
	if ok {
		if !actor.Role.Allows(c.Role) {
			return fmt.Errorf("%w: a caller with role %q cannot revoke a certificate with role %q; ask an operator", ErrPermission, actor.Role, c.Role)
		}
		return nil
	}
	return fmt.Errorf("%w: serial %s is not in the inventory, so only an operator may revoke it", ErrPermission, canon)
}
