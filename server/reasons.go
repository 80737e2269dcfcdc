package server

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// Reasons a connection is rejected, as logged (and, later, audited).
const (
	ReasonNoCertificate = "no certificate"
	ReasonUnknownCA     = "unknown CA"
	ReasonExpired       = "expired"
	ReasonNotYetValid   = "not yet valid"
	ReasonRevoked       = "revoked"
	ReasonRevocationErr = "revocation store unavailable"
	ReasonBadUsage      = "certificate not valid for client auth"
	ReasonNoRole        = "no role"
	ReasonTimeout       = "handshake timeout"
	ReasonProtocol      = "protocol version"
	ReasonLimit         = "limit reached"
	ReasonOther         = "handshake failed"
	// ReasonFirstByteTimeout and ReasonIdle are close reasons: a connection
	// that sent nothing within FirstByteTimeout of its handshake, and a raw
	// session idle for IdleTimeout.
	ReasonFirstByteTimeout = "first byte timeout"
	ReasonIdle             = "idle"
)

// rejection is a handshake refused by the gateway's certificate policy.
type rejection struct {
	reason       string
	name, serial string // of the presented certificate, when there was one
	// unverified: the chain did not verify, so name and serial are whatever
	// the peer chose to put in a certificate (issue 10 item 10).
	unverified bool
	err        error
}

func (r *rejection) Error() string { return r.reason + ": " + r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

// verifyReason classifies a chain verification failure.
func verifyReason(err error, leaf *x509.Certificate, now time.Time) string {
	var (
		certInvalid x509.CertificateInvalidError
		unknownAuth x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &unknownAuth):
		return ReasonUnknownCA
	case errors.As(err, &certInvalid) && certInvalid.Reason == x509.Expired:
		if now.Before(leaf.NotBefore) {
			return ReasonNotYetValid
		}
		return ReasonExpired
	case errors.As(err, &certInvalid) && certInvalid.Reason == x509.IncompatibleUsage:
		return ReasonBadUsage
	}
	return ReasonOther
}

// requireClientAuth refuses a leaf that does not name clientAuth among its
// extended key usages. x509.Verify, asked for clientAuth, also accepts a
// leaf with no extended key usage at all, or with "any" (RFC 5280 reads a
// missing extension as no restriction): nefia issues clientAuth by name and
// accepts nothing less (issue 10, item 15).
func requireClientAuth(leaf *x509.Certificate) error {
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return nil
		}
	}
	return errors.New("certificate not valid for client auth: clientAuth is not among its extended key usages")
}

// handshakeReason classifies a handshake error that is not a rejection by
// policy: the peer sent no certificate, spoke the wrong version, or stalled.
func handshakeReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"), strings.Contains(msg, "no client certificate"):
		return ReasonNoCertificate
	case strings.Contains(msg, "protocol version"), strings.Contains(msg, "unsupported versions"):
		return ReasonProtocol
	}
	return ReasonOther
}

// Close reasons that are not named where the session ends.
const (
	// ReasonCloseExpired: the certificate reached its NotAfter mid-session.
	ReasonCloseExpired = "certificate expired"
	// ReasonCloseError: the connection failed (a read or TLS error).
	ReasonCloseError = "connection error"
)

// closeReason summarizes why a session ended, as one of a fixed set of
// phrases (logs, the audit trail and metrics labels use it).
func closeReason(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "peer closed"
	case errors.Is(err, errRevoked):
		return "certificate revoked"
	case errors.Is(err, errDisconnected):
		return ReasonCloseDisconnected
	case errors.Is(err, errCAReplaced):
		return "CA replaced"
	case errors.Is(err, errShutdown):
		return "shutdown"
	case errors.Is(err, errCertExpired):
		return ReasonCloseExpired
	case errors.Is(err, errFirstByteTimeout):
		return ReasonFirstByteTimeout
	case errors.Is(err, ErrIdleTimeout):
		return ReasonIdle
	case errors.Is(err, ErrSessionClosed):
		return "closed by gateway"
	case errors.Is(err, ErrMessageTooLarge):
		return "message too large"
	case errors.Is(err, ErrWriteTimeout):
		return "write timeout"
	case errors.Is(err, context.Canceled):
		return "shutdown"
	}
	// A fixed phrase: the error's text may quote the peer; it goes with
	// the event as its error, clipped.
	return ReasonCloseError
}
