package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/pki"
)

// Files of the assertion key in the state directory.
const (
	// KeyFile is the P-256 private key that signs identity assertions (0600).
	KeyFile = "upstream_assertion.key"
	// PubFile is its public key, PEM "PUBLIC KEY", for upstreams to verify
	// with (0644: it is meant to be copied).
	PubFile = "upstream_assertion.pub"
)

// Assertion claims and lifetime.
const (
	// Issuer is the iss claim of every assertion.
	Issuer = "nefia"
	// AssertionLifetime is how long an assertion is valid: long enough for
	// a call to reach its upstream, short enough that a leaked one is of
	// little use.
	AssertionLifetime = 60 * time.Second
	// clockSkew is the leeway Verify allows on iat and exp.
	clockSkew = 5 * time.Second
	// AssertionMinRemaining is how long an assertion must still be valid
	// for Assertion to send it again rather than sign a new one: every
	// assertion an upstream receives has more than this left before exp,
	// and was issued at most AssertionLifetime-AssertionMinRemaining (30 s)
	// ago. Reuse saves an ECDSA signature per call (≈75 µs, a quarter of a
	// forwarded call's CPU) and never lengthens an assertion's life: each
	// still expires AssertionLifetime after it was signed.
	AssertionMinRemaining = 30 * time.Second
	// maxCachedAssertions bounds the cache: past it, expired entries are
	// dropped, and if none is, all of them (they are only a saving).
	maxCachedAssertions = 4096
)

// Claims is the payload of an identity assertion: who called, for which
// upstream (aud), and when. The agent fields are those of the caller's
// verified client certificate.
type Claims struct {
	Issuer      string `json:"iss"`
	Audience    string `json:"aud"`
	IssuedAt    int64  `json:"iat"`
	ExpiresAt   int64  `json:"exp"`
	Name        string `json:"name"`
	Serial      string `json:"serial,omitempty"`
	Role        string `json:"role"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// Signer signs identity assertions (ES256 JWTs) with the gateway's
// assertion key, so that an upstream can trust the caller's identity
// without trusting the transport between nefia and itself.
type Signer struct {
	key *ecdsa.PrivateKey
	kid string

	mu    sync.RWMutex
	cache map[assertionKey]cachedAssertion
}

// assertionKey is everything an assertion's claims depend on besides
// time: one is reused only for the same caller (all four certificate
// fields) and the same upstream.
type assertionKey struct {
	audience, name, serial, role, fingerprint string
}

type cachedAssertion struct {
	token    string
	iat, exp int64 // Unix seconds, as in the claims
}

// LoadSigner reads the assertion key from the store's directory, creating
// it (and its public key) on first use under the store's lock, so that two
// processes starting at once agree on one key. An unreadable key is an
// error, never silently replaced: upstreams trust its public key.
func LoadSigner(store *pki.Store) (*Signer, error) {
	keyPath, pubPath := store.Path(KeyFile), store.Path(PubFile)
	if s, err := readSigner(keyPath); !errors.Is(err, fs.ErrNotExist) {
		if err == nil && !fileExists(pubPath) {
			return s, s.publish(store, pubPath)
		}
		return s, err
	}
	unlock, err := store.Lock()
	if err != nil {
		return nil, fmt.Errorf("upstream: assertion key: %w", err)
	}
	defer unlock()
	if s, err := readSigner(keyPath); !errors.Is(err, fs.ErrNotExist) {
		return s, err // created by another process meanwhile
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("upstream: generate assertion key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("upstream: encode assertion key: %w", err)
	}
	pub, err := publicPEM(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	// The public key first: a crash between the two leaves no private key
	// without its public half, and the next start regenerates both.
	if err := atomicfile.WriteFile(pubPath, pub, 0o644); err != nil {
		return nil, fmt.Errorf("upstream: write %s: %w", pubPath, err)
	}
	if err := atomicfile.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("upstream: write %s: %w", keyPath, err)
	}
	return newSigner(key)
}

// publish rewrites a deleted public key file from the private key, so
// that the file upstreams are told to copy is always there.
func (s *Signer) publish(store *pki.Store, pubPath string) error {
	unlock, err := store.Lock()
	if err != nil {
		return fmt.Errorf("upstream: assertion key: %w", err)
	}
	defer unlock()
	pub, err := s.PublicKeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(pubPath, pub, 0o644); err != nil {
		return fmt.Errorf("upstream: write %s: %w", pubPath, err)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("upstream: read assertion key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("upstream: assertion key %s: no PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("upstream: assertion key %s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("upstream: assertion key %s: not an ECDSA P-256 key", path)
	}
	return newSigner(key)
}

func newSigner(key *ecdsa.PrivateKey) (*Signer, error) {
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, kid: kid, cache: map[assertionKey]cachedAssertion{}}, nil
}

func publicPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("upstream: encode assertion public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// KeyID is the kid of assertions signed by pub's key: the first 16 bytes of
// the SHA-256 of its DER SubjectPublicKeyInfo, in hex, so that an upstream
// trusting several gateways can pick the key.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("upstream: encode assertion public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// PublicKeyPEM returns the public key upstreams verify assertions with.
func (s *Signer) PublicKeyPEM() ([]byte, error) { return publicPEM(&s.key.PublicKey) }

// Sign returns a compact JWS (ES256) asserting that agent called through
// the gateway, for the upstream named audience, valid AssertionLifetime
// from now.
func (s *Signer) Sign(audience string, agent identity.Agent, now time.Time) (string, error) {
	h, err := json.Marshal(header{Alg: "ES256", Typ: "JWT", Kid: s.kid})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(Claims{
		Issuer: Issuer, Audience: audience,
		IssuedAt: now.Unix(), ExpiresAt: now.Add(AssertionLifetime).Unix(),
		Name: agent.Name, Serial: agent.Serial, Role: string(agent.Role), Fingerprint: agent.Fingerprint,
	})
	if err != nil {
		return "", err
	}
	input := b64(h) + "." + b64(c)
	digest := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("upstream: sign assertion: %w", err)
	}
	// RFC 7518 section 3.4: R and S as fixed 32-byte big-endian values.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

// Assertion returns an assertion for agent calling the upstream named
// audience: the one signed earlier for the same caller and audience while
// it has more than AssertionMinRemaining left (and was not issued after
// now, should the clock have gone back), else a new one from Sign.
func (s *Signer) Assertion(audience string, agent identity.Agent, now time.Time) (string, error) {
	k := assertionKey{audience: audience, name: agent.Name, serial: agent.Serial, role: string(agent.Role), fingerprint: agent.Fingerprint}
	sec := now.Unix()
	s.mu.RLock()
	c, ok := s.cache[k]
	s.mu.RUnlock()
	if ok && c.iat <= sec && time.Unix(c.exp, 0).Sub(now) > AssertionMinRemaining {
		return c.token, nil
	}
	token, err := s.Sign(audience, agent, now)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= maxCachedAssertions {
		for key, e := range s.cache {
			if time.Unix(e.exp, 0).Sub(now) <= AssertionMinRemaining {
				delete(s.cache, key)
			}
		}
		if len(s.cache) >= maxCachedAssertions {
			clear(s.cache)
		}
	}
	s.cache[k] = cachedAssertion{token: token, iat: sec, exp: now.Add(AssertionLifetime).Unix()}
	return token, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParsePublicKeyPEM reads the PEM public key nefia publishes (PubFile,
// `nefia upstream key`).
func ParsePublicKeyPEM(data []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("upstream: no PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("upstream: parse public key: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("upstream: public key is not ECDSA P-256")
	}
	return pub, nil
}

// ErrAssertion is returned by Verify for any assertion that must not be
// trusted: malformed, badly signed, for another audience, or expired.
var ErrAssertion = errors.New("upstream: invalid assertion")

// Verify checks an assertion the way an upstream should: ES256 only,
// signature by pub, iss nefia, aud its own name, and now within
// [iat, exp] (with a few seconds of leeway for clock skew). It is what a
// Go upstream calls; upstreams in other languages do the same with any JWT
// library, pinning the algorithm to ES256.
func Verify(token string, pub *ecdsa.PublicKey, audience string, now time.Time) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("%w: not a compact JWS", ErrAssertion)
	}
	var h header
	if err := decodeSegment(parts[0], &h); err != nil || h.Alg != "ES256" {
		return Claims{}, fmt.Errorf("%w: header must say alg ES256", ErrAssertion)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return Claims{}, fmt.Errorf("%w: malformed signature", ErrAssertion)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrAssertion)
	}
	var c Claims
	if err := decodeSegment(parts[1], &c); err != nil {
		return Claims{}, fmt.Errorf("%w: malformed claims", ErrAssertion)
	}
	switch {
	case c.Issuer != Issuer:
		return Claims{}, fmt.Errorf("%w: issuer %q", ErrAssertion, c.Issuer)
	case c.Audience != audience:
		return Claims{}, fmt.Errorf("%w: audience %q, want %q", ErrAssertion, c.Audience, audience)
	case now.Add(clockSkew).Unix() < c.IssuedAt:
		return Claims{}, fmt.Errorf("%w: issued in the future", ErrAssertion)
	case now.Add(-clockSkew).Unix() >= c.ExpiresAt:
		return Claims{}, fmt.Errorf("%w: expired", ErrAssertion)
	}
	return c, nil
}

func decodeSegment(seg string, v any) error {
	data, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
