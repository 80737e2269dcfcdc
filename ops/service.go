package ops

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// Trail is where a state change is recorded; *audit.Logger is one.
type Trail interface {
	Begin(r audit.Record) (end func(outcome string, result map[string]any, err error) error, _ error)
}

// TrailOpener returns the trail for one state change and what to call when
// it is done with it. The CLI opens the trail per command (and closes it);
// a server passes its open trail (Shared).
type TrailOpener func() (Trail, func(), error)

// Shared is a TrailOpener for a trail that stays open, such as the one a
// gateway holds for its lifetime.
func Shared(t Trail) TrailOpener {
	return func() (Trail, func(), error) { return t, func() {}, nil }
}

// SessionCloser closes a revoked certificate's live sessions; a running
// gateway's session table is one.
type SessionCloser interface {
	// CloseSerial closes every live session of the certificate with this
	// canonical serial and returns how many it closed.
	CloseSerial(serial string) int
}

// Service is the operation layer over one state directory and its
// configuration file. Its zero value is unusable; Store and ConfigPath are
// required.
type Service struct {
	// Store is the state directory.
	Store *pki.Store
	// ConfigPath is nefia.yaml: Init enables mTLS there, Issue reads
	// mcp.mtls.client_max_duration from it.
	ConfigPath string
	// Audit opens the trail state changes are recorded on. nil turns
	// auditing off, which only tests and benchmarks do: the CLI and every
	// server nefia runs set it, and then a trail that cannot be written
	// refuses the change (ErrUnaudited).
	Audit TrailOpener
	// Sessions, when set, has Revoke close the revoked serial's live
	// sessions (gateway mode). nil: there are none here to close.
	Sessions SessionCloser
	// WriteBundle writes an issued bundle; nil means pki.WriteBundle. It is
	// the seam tests use to make the write fail after issuance.
	WriteBundle func(dir string, iss *pki.Issued, force bool) (pki.BundlePaths, error)
	// Logger receives operational logs (never key material); nil discards.
	Logger *slog.Logger
}

// Structured-log keys: the ones the tools have always logged with, so log
// queries keep working now that the operations log.
const (
	logKeyTool   = "tool"
	logKeyError  = "error"
	logKeySerial = "serial"
	logKeyName   = "name"
	logKeyRole   = "role"
	logKeyCaller = "caller"
)

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// logFor is the logger for one operation: who acted, how, and through
// which tool when it was a tool call.
func (s *Service) logFor(ctx context.Context, actor identity.Agent) *slog.Logger {
	l := s.log().With(logKeyCaller, actor.Name, "transport", actor.Transport)
	if c, ok := ctx.Value(callKey{}).(Call); ok && c.Tool != "" {
		l = l.With(logKeyTool, c.Tool)
	}
	return l
}

// Call is what the audit record says about the request an operation
// serves when it came as an MCP tool call: the tool's name and the
// authorization decision that let it through.
type Call struct {
	Tool     string
	Decision string
}

type callKey struct{}

// WithCall returns ctx carrying c, for the audit records of the operation
// run with it.
func WithCall(ctx context.Context, c Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// audited runs action under "no audit, no action": the event is durably
// recorded as started, with actor and args, before action runs, and how it
// ended after. The CLI and a running gateway append to the same chain.
func (s *Service) audited(ctx context.Context, actor identity.Agent, event string, args map[string]any, action func() (map[string]any, error)) error {
	if s.Audit == nil {
		_, err := action()
		return err
	}
	trail, release, err := s.Audit()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnaudited, err)
	}
	defer release()
	r := audit.Record{Event: event, Args: audit.Redact(args)}
	actor.Stamp(&r)
	if actor.Name == "" && actor.Serial == "" && actor.Role == "" {
		r.Agent = nil // no identity: no agent, as the tool_call record has none
	}
	if c, ok := ctx.Value(callKey{}).(Call); ok {
		r.Tool, r.Decision = c.Tool, c.Decision
	}
	end, err := trail.Begin(r)
	if err != nil {
		s.logFor(ctx, actor).Error("state change refused: audit trail unavailable", "event", event, logKeyError, err)
		return fmt.Errorf("%w: %w", ErrUnaudited, err)
	}
	result, actionErr := action()
	outcome := audit.OutcomeOK
	if actionErr != nil {
		outcome = audit.OutcomeError
	}
	if err := end(outcome, result, actionErr); err != nil {
		s.logFor(ctx, actor).Error("audit record of a completed action failed", "event", event, logKeyError, err)
		if actionErr == nil {
			return fmt.Errorf("%w: %w", ErrOutcomeUnrecorded, err)
		}
	}
	return actionErr
}

// allowed is the privilege rule: an actor never hands out a certificate
// with more authority than its own. An actor whose role is not a valid one
// allows nothing.
func allowed(actor identity.Agent, r pki.Role) error {
	if actor.Role.Allows(r) {
		return nil
	}
	if _, err := pki.ParseRole(string(actor.Role)); err != nil || actor.Role == "" {
		return fmt.Errorf("%w: your identity carries no valid role, so it cannot issue certificates", ErrPermission)
	}
	return fmt.Errorf("%w: a caller with role %q cannot issue certificates with role %q "+
		"(nobody can issue more authority than their own); ask an operator", ErrPermission, actor.Role, r)
}
