package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// Reasons a connection is rejected, as logged (and, later, audited).
const (
	ReasonNoCertificate = "no certificate"
	ReasonUnknownCA     = "unknown CA"
	ReasonExpired       = "expired"
	ReasonRevoked       = "revoked"
	ReasonRevocationErr = "revocation store unavailable"
	ReasonBadUsage      = "certificate not valid for client auth"
	ReasonNoRole        = "no role"
	ReasonTimeout       = "handshake timeout"
	ReasonProtocol      = "protocol version"
	ReasonLimit         = "limit reached"
	ReasonOther         = "handshake failed"
)

// handshakeReason classifies a handshake error for logs and audit.
func handshakeReason(err error) string {
	var (
		certInvalid x509.CertificateInvalidError
		unknownAuth x509.UnknownAuthorityError
		ne          net.Error
	)
	switch {
	case errors.Is(err, pki.ErrRevoked):
		return ReasonRevoked
	case errors.Is(err, pki.ErrRevocationUnavailable):
		return ReasonRevocationErr
	case errors.Is(err, identity.ErrNoRole):
		return ReasonNoRole
	case errors.As(err, &unknownAuth):
		return ReasonUnknownCA
	case errors.As(err, &certInvalid):
		switch certInvalid.Reason {
		case x509.Expired:
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonBadUsage
		}
		return ReasonOther
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"), strings.Contains(msg, "no client certificate"):
		return ReasonNoCertificate
	case strings.Contains(msg, "protocol version"), strings.Contains(msg, "unsupported versions"):
		return ReasonProtocol
	case errors.Is(err, io.EOF):
		return ReasonOther
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return ReasonOther
	}
	return ReasonOther
}

// closeReason summarizes why a session ended.
func closeReason(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "peer closed"
	case errors.Is(err, ErrSessionClosed):
		return "closed by gateway"
	case errors.Is(err, ErrMessageTooLarge):
		return "message too large"
	case errors.Is(err, ErrWriteTimeout):
		return "write timeout"
	case errors.Is(err, context.Canceled):
		return "shutdown"
	}
	return err.Error()
}

func serialInt(s string) (*big.Int, bool) {
	return new(big.Int).SetString(s, 16)
}
