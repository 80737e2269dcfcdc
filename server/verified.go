package server

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// maxVerifiedChains bounds the cache; when full it starts over.
const maxVerifiedChains = 4096

// verifiedChains caches the outcome of chain verification: for a presented
// chain (by the SHA-256 of its DER) and a CA pool, the period in which every
// certificate of the verified chain is valid. A hit skips x509 Verify (a
// signature check and chain building, the largest non-crypto/tls cost of a
// handshake and nearly all of a resumption's), while validity is still
// checked against the clock on every handshake, and revocation and role are
// checked by the caller as before. A new CA pool (CA replaced) empties it.
type verifiedChains struct {
	mu   sync.Mutex
	pool *x509.CertPool
	m    map[[sha256.Size]byte]validity
}

type validity struct{ from, until time.Time }

func chainKey(presented []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, c := range presented {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// holds reports whether presented was verified against pool before and is
// valid at now.
func (v *verifiedChains) holds(pool *x509.CertPool, presented []*x509.Certificate, now time.Time) bool {
	k := chainKey(presented)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pool != pool {
		return false
	}
	w, ok := v.m[k]
	return ok && !now.Before(w.from) && !now.After(w.until)
}

// remember records that presented verified against pool as chain.
func (v *verifiedChains) remember(pool *x509.CertPool, presented, chain []*x509.Certificate) {
	w := validity{from: chain[0].NotBefore, until: chain[0].NotAfter}
	for _, c := range chain[1:] {
		if c.NotBefore.After(w.from) {
			w.from = c.NotBefore
		}
		if c.NotAfter.Before(w.until) {
			w.until = c.NotAfter
		}
	}
	k := chainKey(presented)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pool != pool || len(v.m) >= maxVerifiedChains {
		v.pool, v.m = pool, make(map[[sha256.Size]byte]validity)
	}
	v.m[k] = w
}
