// Package identity defines who is calling: the AgentIdentity of DESIGN.md,
// built from a verified client certificate (or the local operator in stdio
// mode) and carried in the request context to authorization, audit and tools.
package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os/user"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
)

// Transports a caller can arrive by.
const (
	TransportStdio  = "stdio"
	TransportStream = "mtls-stream" // newline-delimited JSON-RPC over TLS
	TransportHTTP   = "mtls-http"   // Streamable HTTP over TLS
	TransportCLI    = "cli"
)

// Agent is the authenticated caller of a request. Every field comes from the
// verified certificate chain or the connection, never from anything the
// caller sent in a message.
type Agent struct {
	Name        string    `json:"name"`
	Serial      string    `json:"serial,omitempty"`
	Role        pki.Role  `json:"role"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	RemoteAddr  string    `json:"remote_addr,omitempty"`
	Transport   string    `json:"transport"`
	SessionID   string    `json:"session_id,omitempty"`
	// NotBefore is the verified certificate's start, kept so a renewal
	// knows the lifetime it was issued with when the inventory does not.
	// Not serialized: the status tool's caller schema stays as it was.
	NotBefore time.Time `json:"-"`
}

// ErrNoRole is returned for a certificate whose Subject OU is not a nefia
// role; such a certificate gets no authority at all.
var ErrNoRole = errors.New("identity: certificate carries no valid role")

// FromCertificate builds the identity of a verified client certificate. The
// role must be exactly one valid OU: a certificate with none, or several,
// is refused rather than guessed at.
func FromCertificate(cert *x509.Certificate) (Agent, error) {
	ous := cert.Subject.OrganizationalUnit
	if len(ous) != 1 {
		return Agent{}, fmt.Errorf("%w: %d organizational units", ErrNoRole, len(ous))
	}
	role, err := pki.ParseRole(ous[0])
	if err != nil || ous[0] == "" {
		return Agent{}, fmt.Errorf("%w: %q", ErrNoRole, ous[0])
	}
	return Agent{
		Name:        cert.Subject.CommonName,
		Serial:      pki.FormatSerial(cert.SerialNumber),
		Role:        role,
		Fingerprint: pki.Fingerprint(cert),
		NotAfter:    cert.NotAfter.UTC(),
		NotBefore:   cert.NotBefore.UTC(),
	}, nil
}

// FromConnection builds the identity of the peer of a TLS connection whose
// client certificate the gateway verified: the certificate's fields, where
// the connection comes from and how it speaks. It is the one place a
// remote caller's identity is made; the session id is added when the
// session exists.
func FromConnection(cs tls.ConnectionState, remote, transport string) (Agent, error) {
	if len(cs.PeerCertificates) == 0 {
		return Agent{}, fmt.Errorf("%w: no client certificate", ErrNoRole)
	}
	a, err := FromCertificate(cs.PeerCertificates[0])
	if err != nil {
		return Agent{}, err
	}
	a.RemoteAddr, a.Transport = remote, transport
	return a, nil
}

// LocalOperator is the identity of whoever runs nefia on this host (stdio
// mode, the CLI): they can read the CA key anyway, so they are operators.
func LocalOperator(transport string) Agent {
	name := "local"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return Agent{Name: name, Role: pki.RoleOperator, Transport: transport}
}

// AuditAgent is the agent's form in an audit record: name, serial and role.
// It is the one conversion from an identity to the trail's schema.
func (a Agent) AuditAgent() *audit.Agent {
	return &audit.Agent{Name: a.Name, Serial: a.Serial, Role: string(a.Role)}
}

// Stamp fills in who a record is about and how they came: the agent, its
// session, remote address and transport.
func (a Agent) Stamp(r *audit.Record) {
	r.Agent = a.AuditAgent()
	r.SessionID, r.RemoteAddr, r.Transport = a.SessionID, a.RemoteAddr, a.Transport
}

type ctxKey struct{}

// WithAgent returns a context carrying a.
func WithAgent(ctx context.Context, a Agent) context.Context {
	return context.WithValue(ctx, ctxKey{}, a)
}

// FromContext returns the caller of a request. ok is false when no identity
// was attached, which callers must treat as "no authority".
func FromContext(ctx context.Context) (a Agent, ok bool) {
	a, ok = ctx.Value(ctxKey{}).(Agent)
	return a, ok
}
