package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// reloader re-reads a set of files when any of them changes, so certificate
// rotation needs no restart. It stats the files (cheap: no read) when their
// directory watch reports a change, at least once a second, and on every
// call where there is no watch, and parses only after a change. A version
// that does not load (say a half-finished rotation: new key, old
// certificate) keeps the previous value in service and is logged once; with
// no previous value it is an error.
type reloader[T any] struct {
	what  string
	paths []string
	parse func() (T, error)
	log   *slog.Logger

	mu      sync.Mutex
	current *T
	gen     uint64               // counts the versions loaded; current is version gen
	seen    []atomicfile.Version // what current, or the last failure, came from
	lastErr error
	// watch, when set, says whether the files' directory changed at all,
	// for one non-blocking read: a handshake then stats nothing unless
	// something changed (issue 16 item 4: four stats per handshake). It
	// is read under mu, so a caller never returns the previous version
	// while another is loading the one whose change it consumed.
	watch   *atomicfile.View
	statted time.Time // when the files were last statted
}

// reloadRecheck bounds how long the watch alone is trusted: what it cannot
// see (a parent directory renamed) is caught by a stat within this long.
const reloadRecheck = time.Second

// newReloader loads the files once. watch, when not nil, must watch the
// files' directories; the reloader takes its own view of it before the
// first load, so that no change after it goes unseen.
func newReloader[T any](what string, log *slog.Logger, watch *atomicfile.Watch, parse func() (T, error), paths ...string) (*reloader[T], error) {
	r := &reloader[T]{what: what, paths: paths, parse: parse, log: log}
	if watch != nil {
		r.watch = watch.View()
	}
	if _, _, err := r.get(); err != nil {
		return nil, err
	}
	return r, nil
}

// get returns the current value and its generation, a number that grows
// with every new version loaded. A change is broadcast, never consumed:
// each observer remembers the generation it last acted on and compares
// (issue 10: with a "changed" flag, only the first caller after a change
// learned of it, and when a handshake happened to be first, the revocation
// poll never closed the sessions of a replaced CA).
func (r *reloader[T]) get() (*T, uint64, error) {
	// All under mu: a caller must never return the previous version while
	// another loads the one whose change event it consumed.
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.watch != nil && r.current != nil && r.seen != nil && now.Sub(r.statted) < reloadRecheck {
		changed, err := r.watch.Changed()
		if err == nil && !changed {
			return r.current, r.gen, nil
		}
		if err != nil {
			r.watch = nil // broken: stat from now on
		}
	}
	r.statted = now
	versions := make([]atomicfile.Version, len(r.paths))
	var statErr error
	for i, p := range r.paths {
		if versions[i], statErr = atomicfile.VersionOf(p); statErr != nil {
			break
		}
	}
	if statErr != nil {
		if r.current == nil {
			return nil, 0, fmt.Errorf("server: %s: %w", r.what, statErr)
		}
		return r.current, r.gen, nil // a file briefly missing mid-rotation: keep serving
	}
	if r.seen != nil && slices.Equal(versions, r.seen) {
		if r.current == nil {
			return nil, 0, r.lastErr
		}
		return r.current, r.gen, nil
	}
	r.seen = versions
	v, err := r.parse()
	if err != nil {
		r.lastErr = fmt.Errorf("server: load %s: %w", r.what, err)
		if r.current == nil {
			return nil, 0, r.lastErr
		}
		r.log.Error(r.what+" reload failed; keeping the previous one", "files", r.paths, "error", err)
		return r.current, r.gen, nil
	}
	if r.current != nil {
		r.log.Info(r.what+" reloaded", "files", r.paths)
	}
	r.current = &v
	r.gen++
	return r.current, r.gen, nil
}

// loadCAPool loads the CA file clients must chain to. Every certificate in
// it must be a CA certificate allowed to sign certificates: a client's own
// certificate copied over mtls_ca.crt by mistake would otherwise become a
// trust root (issue 10), and, on reload, the reloader keeps the previous
// CA and logs this error instead.
func loadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	n := 0
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, n+1, err)
		}
		n++
		switch {
		case !cert.BasicConstraintsValid || !cert.IsCA:
			return nil, fmt.Errorf("%s: certificate %d (%q) is not a CA certificate", path, n, cert.Subject.CommonName)
		case cert.KeyUsage&x509.KeyUsageCertSign == 0:
			return nil, fmt.Errorf("%s: certificate %d (%q) may not sign certificates (no keyCertSign usage)", path, n, cert.Subject.CommonName)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// loadKeyPair loads the gateway's certificate and key and checks they match.
func loadKeyPair(certPath, keyPath string) func() (tls.Certificate, error) {
	return func() (tls.Certificate, error) {
		kp, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return kp, err
		}
		kp.Leaf, err = x509.ParseCertificate(kp.Certificate[0])
		return kp, err
	}
}
