package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// FieldRevokePrevious is the input field of RenewRequest.RevokePrevious
// and IssueRequest.RevokePrevious.
const FieldRevokePrevious = "revoke_previous"

// RenewReason is the revocation reason recorded when a renewal (or a
// re-issue) revokes the certificate it replaces.
const RenewReason = "renewed"

// ErrNoCertificate refuses a renewal by a caller that authenticated
// without a certificate (the local operator at the CLI or over stdio):
// there is nothing of its own to renew.
var ErrNoCertificate = errors.New("renewal renews the caller's own client certificate, and this caller has none " +
	"(the local operator at the CLI or over stdio); issue one with nefia mtls issue-client, " +
	"or run nefia mtls renew --cert-dir DIR --name NAME against the gateway")

// RenewRequest asks for a new certificate for the caller's own one. It
// names no certificate: the one renewed is the one the caller
// authenticated with, so nobody can renew someone else's.
type RenewRequest struct {
	// CSRPEM is a PEM certificate request over a new ECDSA P-256 key,
	// which never leaves the caller.
	CSRPEM []byte
	// RevokePrevious revokes the caller's current certificate once the new
	// one is issued (reason RenewReason). Otherwise it stays valid until
	// its own expiry, so in-flight sessions are not cut.
	RevokePrevious bool
}

// RenewResult is what Renew did.
type RenewResult struct {
	*pki.Issued
	// PreviousRevoked: the renewed certificate was revoked as asked.
	PreviousRevoked bool
}

// Renew issues the caller a new certificate with the same name and role as
// the one it authenticated with, a new serial, and that certificate's
// original lifetime capped by mcp.mtls.client_max_duration. A revoked or
// expired certificate cannot renew, and a renewal never adds authority:
// name and role come from the verified certificate, never from the CSR.
func (s *Service) Renew(ctx context.Context, actor identity.Agent, req RenewRequest) (RenewResult, error) {
	prev, d, err := s.checkRenew(ctx, actor, req)
	if err != nil {
		return RenewResult{}, err
	}
	var out RenewResult
	args := map[string]any{"serial": prev, "duration": d.String(), "revoke_previous": req.RevokePrevious,
		"csr_pem": string(req.CSRPEM)} // recorded as its SHA-256
	err = s.audited(ctx, actor, audit.EventRenew, args, func() (map[string]any, error) {
		iss, err := s.Store.Issue(pki.IssueRequest{Name: actor.Name, Role: actor.Role, Duration: d, CSRPEM: req.CSRPEM, Renews: prev})
		if err != nil {
			return nil, err
		}
		out.Issued = iss
		// Nothing locks the revocation store from checkRenew to here, so
		// look again now that the successor is in the inventory: a
		// predecessor revoked (or a chain renewed past it) meanwhile is
		// refused like one revoked before.
		return audit.ToMap(iss.IssuedCert), s.renewConflict(prev, iss.Serial, d)
	})
	if out.Issued != nil && err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
		s.withdraw(ctx, actor, out.Serial, err)
		return RenewResult{}, err
	}
	if errors.Is(err, pki.ErrInvalidCSR) {
		return RenewResult{}, inputErr(FieldCSR, err)
	}
	if err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
		return RenewResult{}, err
	}
	log := s.logFor(ctx, actor)
	log.Info("client certificate renewed", logKeyName, out.Name, logKeySerial, out.Serial, "renews", prev, logKeyRole, out.Role)
	if req.RevokePrevious {
		// Through the one revocation path (audited as mtls.revoke). The
		// caller's live sessions on the old certificate, this one included,
		// are closed by the gateway's revocation poll, after this answer.
		if _, rerr := s.revoke(ctx, actor, RevokeRequest{Serial: prev, Reason: RenewReason}, false); rerr != nil && !errors.Is(rerr, ErrOutcomeUnrecorded) {
			log.Error("revoking the renewed certificate failed", logKeySerial, prev, logKeyError, rerr)
			return out, fmt.Errorf("certificate %s was issued, but revoking the previous one (%s) failed: %w", out.Serial, prev, rerr)
		}
		out.PreviousRevoked = true
	}
	s.supersede(ctx, actor, prev, out.Serial)
	return out, err
}

// WithdrawnReason is the revocation reason of a certificate a renewal
// issued and then refused (see renewConflict): its predecessor was revoked,
// or its chain renewed past it, while it was being issued.
const WithdrawnReason = "renewal refused after issuance"

// renewConflict is what refuses a renewal from prev besides checkRenew's
// own checks, judged on the inventory and revocation store as they are
// now; next is the successor just issued ("" before issuance). prev must
// not be revoked, and only the newest certificate of a chain and its
// direct predecessor may renew: prev is refused once a successor of it has
// renewed in turn. The predecessor's renewal keeps the bridge's lost-answer
// retry working (supersede then revokes the successor nobody holds); an
// older ancestor renewing would revoke the chain's newest certificate and
// fork the chain (issue 13, attack item 3). The chain must also be under
// MaxRenewalsPerLifetime renewals within window, the lifetime its next
// certificate gets (renewRateIn). Run again after issuance, it closes the
// window between checkRenew and Store.Issue, which no lock spans: a
// revocation or a chain renewal that lands in it is seen here.
func (s *Service) renewConflict(prev, next string, window time.Duration) error {
	list, err := s.Store.List()
	if err != nil {
		return fmt.Errorf("read the inventory: %w", err)
	}
	if err := renewConflictIn(list, prev, next); err != nil {
		return err
	}
	return renewRateIn(list, prev, next, s.Store.Now(), window)
}

func renewConflictIn(list []pki.ListedCert, prev, next string) error {
	children := map[string][]string{}
	for _, c := range list {
		if c.Renews != "" {
			children[c.Renews] = append(children[c.Renews], c.Serial)
		}
		if c.Serial == prev && c.State == pki.StateRevoked {
			return fmt.Errorf("%w: certificate %s was revoked during its renewal; a revoked certificate cannot renew, ask an operator for a new one", ErrPermission, prev)
		}
	}
	for _, k := range children[prev] {
		if k == next {
			continue
		}
		if gk := children[k]; len(gk) > 0 {
			return fmt.Errorf("%w: certificate %s was renewed to %s, which has renewed since (to %s); only the newest certificate of a chain and its predecessor may renew",
				ErrPermission, prev, k, gk[0])
		}
	}
	return nil
}

// withdraw revokes next, a certificate Renew issued and then refused (why
// says why), so that nobody holds a valid successor of a certificate that
// may not renew. The revocation is audited like any other; a failure is
// logged, as the refusal stands either way.
func (s *Service) withdraw(ctx context.Context, actor identity.Agent, next string, why error) {
	log := s.logFor(ctx, actor)
	if _, err := s.revoke(ctx, actor, RevokeRequest{Serial: next, Reason: WithdrawnReason}, true); err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
		log.Error("revoking a refused renewal's certificate failed", logKeySerial, next, logKeyError, err)
		return
	}
	log.Warn("renewal refused after issuance; its certificate is revoked", logKeySerial, next, "why", why)
}

// SupersededReason is the revocation reason of a certificate a renewal
// took out of its chain (see supersede).
const SupersededReason = "superseded"

// supersede keeps a renewal chain (the certificates linked by Renews) at
// no more than two valid certificates: prev, which just renewed, and next,
// its new successor. Every other active certificate of the chain is
// revoked: a successor prev obtained before (its answer may have been lost,
// and the retry made next), with anything renewed from it, and prev's own
// predecessors. Without this an agent could renew again and again and hold
// any number of valid certificates, each with its own connection quota
// (issue 13). Revoking rather than refusing a second renewal keeps the
// bridge's retry safe: a successor whose answer was lost is one nobody
// holds, and the retry revokes it. Failures are logged, not returned: the
// caller holds next either way.
func (s *Service) supersede(ctx context.Context, actor identity.Agent, prev, next string) {
	log := s.logFor(ctx, actor)
	// A renewal keeps the name, so the whole chain is among the
	// certificates of this name: a per-name read, not the inventory.
	list, err := s.Store.ListNamed(actor.Name)
	if err != nil {
		log.Error("reading the inventory to revoke superseded renewals failed", logKeySerial, prev, logKeyError, err)
		return
	}
	for _, serial := range chainOf(list, prev) {
		if serial == prev || serial == next {
			continue
		}
		if _, err := s.revoke(ctx, actor, RevokeRequest{Serial: serial, Reason: SupersededReason}, true); err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
			log.Error("revoking a superseded renewal failed", logKeySerial, serial, logKeyError, err)
			continue
		}
		log.Warn("renewal superseded an active certificate of the same chain; revoked it", logKeySerial, serial, "renewed", prev, "new", next)
	}
}

// chainOf returns the active certificates of the renewal chain serial is
// in: its ancestors through Renews and every descendant of the oldest.
func chainOf(list []pki.ListedCert, serial string) []string {
	_, members := chainIn(list, serial)
	var out []string
	for _, c := range members {
		if c.State == pki.StateActive || c.State == pki.StateNotYet {
			out = append(out, c.Serial)
		}
	}
	return out
}

// chainIn returns the renewal chain serial is in: root, its oldest
// ancestor through Renews (which the inventory may no longer hold), and
// the certificates of list in the chain, root first when list holds it,
// then every certificate renewed from it, directly or not, each once,
// nearest first.
func chainIn(list []pki.ListedCert, serial string) (root string, members []*pki.ListedCert) {
	parent := make(map[string]string, len(list))
	children := map[string][]*pki.ListedCert{}
	for i := range list {
		if c := &list[i]; c.Renews != "" {
			parent[c.Serial] = c.Renews
			children[c.Renews] = append(children[c.Renews], c)
		}
	}
	root = serial
	for seen := map[string]bool{root: true}; ; {
		p, ok := parent[root]
		if !ok || seen[p] {
			break
		}
		seen[p] = true
		root = p
	}
	for i := range list {
		if list[i].Serial == root {
			members = append(members, &list[i])
			break
		}
	}
	visited := map[string]bool{root: true}
	for queue := []string{root}; len(queue) > 0; queue = queue[1:] {
		for _, k := range children[queue[0]] {
			if !visited[k.Serial] {
				visited[k.Serial] = true
				members = append(members, k)
				queue = append(queue, k.Serial)
			}
		}
	}
	return root, members
}

// checkRenew is everything Renew refuses before it records anything: it
// returns the serial renewed and the new lifetime.
func (s *Service) checkRenew(ctx context.Context, actor identity.Agent, req RenewRequest) (string, time.Duration, error) {
	if actor.Serial == "" {
		return "", 0, ErrNoCertificate
	}
	role, err := pki.ParseRole(string(actor.Role))
	if err != nil || actor.Role == "" || actor.Name == "" {
		return "", 0, fmt.Errorf("%w: your identity carries no valid name and role, so it cannot be renewed", ErrPermission)
	}
	serial, err := pki.ParseSerial(actor.Serial)
	if err != nil {
		return "", 0, fmt.Errorf("%w: your certificate's serial: %w", ErrPermission, err)
	}
	if len(req.CSRPEM) > pki.MaxCSRBytes {
		return "", 0, inputErrf(FieldCSR, "%w: %d bytes; at most %d are accepted", pki.ErrInvalidCSR, len(req.CSRPEM), pki.MaxCSRBytes)
	}
	if err := pki.CheckRenewalCSR(req.CSRPEM); err != nil {
		return "", 0, inputErr(FieldCSR, err)
	}
	now := s.Store.Now()
	if !actor.NotAfter.IsZero() && !now.Before(actor.NotAfter) {
		return "", 0, fmt.Errorf("%w: certificate %s expired at %s; an expired certificate cannot renew, ask an operator for a new one",
			ErrPermission, serial, actor.NotAfter.Format(time.RFC3339))
	}
	_, revoked, err := s.Store.RevocationOf(serial)
	if err != nil {
		return "", 0, fmt.Errorf("read the revocation store: %w", err)
	}
	if revoked {
		s.logFor(ctx, actor).Warn("renewal of a revoked certificate refused", logKeySerial, serial)
		return "", 0, fmt.Errorf("%w: certificate %s is revoked; a revoked certificate cannot renew, ask an operator for a new one", ErrPermission, serial)
	}
	// The lifetime it was issued with: from the inventory, else from the
	// verified certificate itself.
	entry, known, err := s.Store.Lookup(serial)
	if err != nil {
		return "", 0, fmt.Errorf("read the inventory: %w", err)
	}
	var d time.Duration
	switch {
	case known:
		if entry.Name != actor.Name || entry.Role != role {
			return "", 0, fmt.Errorf("%w: certificate %s is %s/%s in the inventory but %s/%s on the connection; ask an operator",
				ErrPermission, serial, entry.Name, entry.Role, actor.Name, actor.Role)
		}
		d = entry.Lifetime()
	case !actor.NotBefore.IsZero() && !actor.NotAfter.IsZero():
		d = actor.NotAfter.Sub(actor.NotBefore) - time.Minute // the issuer's clock-skew backdating
	default:
		d, _ = pki.ParseDuration(DefaultDuration)
	}
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		return "", 0, fmt.Errorf("read the configuration: %w", err)
	}
	if limit := cfg.MCP.MTLS.ClientMaxDuration; limit > 0 && d > limit {
		d = limit
	}
	if d < config.MinClientDuration {
		d = config.MinClientDuration
	}
	if err := s.renewConflict(serial, "", d); err != nil {
		s.logFor(ctx, actor).Warn("renewal refused", logKeySerial, serial, logKeyError, err)
		return "", 0, err
	}
	return serial, d, nil
}
