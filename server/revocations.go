package server

import (
	"context"
	"crypto/x509"
	"math/big"
)

// Revocations is what the gateway needs of a revocation store: the file
// store (pki.RevocationChecker) today, a store shared by several gateways
// later. Implementations must be safe for concurrent use and fail closed:
// while they cannot tell, Check and IsRevoked return an error, never "not
// revoked".
type Revocations interface {
	// Check returns nil for a certificate that is not revoked, an error
	// wrapping pki.ErrRevoked for one that is, and one wrapping
	// pki.ErrRevocationUnavailable when the store cannot be consulted. It
	// runs in every handshake, so it must not do I/O beyond a stat.
	Check(cert *x509.Certificate) error
	// IsRevoked reports whether serial is revoked, for live connections.
	IsRevoked(serial *big.Int) (bool, error)
	// Refresh brings the view up to date now and returns the error that
	// makes checks fail, if any; the gateway calls it on every poll.
	Refresh() error
	// Generation is the change notification: it increases whenever the
	// view changed, so the gateway re-judges live connections only then.
	Generation() uint64
}

// revocationsNotifier is the optional capability of a store that learns of
// changes as they happen (the etcd watch, issue 15): the gateway re-judges
// live connections as soon as Changed delivers, not at its next poll.
type revocationsNotifier interface{ Changed() <-chan struct{} }

// revocationsWatcher is the optional capability of a file store that
// watches its files (pki.RevocationChecker, issue 16): a revocation by the
// CLI reaches live sessions within its watch interval, not the poll's.
type revocationsWatcher interface {
	Watch(ctx context.Context) <-chan struct{}
}

// revocationsPath is the optional capability of a store kept in a file: it
// names the file in log lines.
type revocationsPath interface{ Path() string }

// storeName names the revocation store for log lines.
func storeName(r Revocations) string {
	if p, ok := r.(revocationsPath); ok {
		return p.Path()
	}
	return "revocation store"
}
