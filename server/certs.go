package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/nefia/nefia/internal/atomicfile"
)

// reloader re-reads a set of files when any of them changes, so certificate
// rotation needs no restart. It stats the files on each call (cheap: no
// read) and parses only after a change. A version that does not load (say a
// half-finished rotation: new key, old certificate) keeps the previous value
// in service and is logged once; with no previous value it is an error.
type reloader[T any] struct {
	what  string
	paths []string
	parse func() (T, error)
	log   *slog.Logger

	mu      sync.Mutex
	current *T
	seen    []atomicfile.Version // what current, or the last failure, came from
	lastErr error
}

func newReloader[T any](what string, log *slog.Logger, parse func() (T, error), paths ...string) (*reloader[T], error) {
	r := &reloader[T]{what: what, paths: paths, parse: parse, log: log}
	if _, _, err := r.get(); err != nil {
		return nil, err
	}
	return r, nil
}

// get returns the current value and whether this call loaded a new one.
func (r *reloader[T]) get() (*T, bool, error) {
	versions := make([]atomicfile.Version, len(r.paths))
	var statErr error
	for i, p := range r.paths {
		if versions[i], statErr = atomicfile.VersionOf(p); statErr != nil {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if statErr != nil {
		if r.current == nil {
			return nil, false, fmt.Errorf("server: %s: %w", r.what, statErr)
		}
		return r.current, false, nil // a file briefly missing mid-rotation: keep serving
	}
	if r.seen != nil && slices.Equal(versions, r.seen) {
		if r.current == nil {
			return nil, false, r.lastErr
		}
		return r.current, false, nil
	}
	r.seen = versions
	v, err := r.parse()
	if err != nil {
		r.lastErr = fmt.Errorf("server: load %s: %w", r.what, err)
		if r.current == nil {
			return nil, false, r.lastErr
		}
		r.log.Error(r.what+" reload failed; keeping the previous one", "files", r.paths, "error", err)
		return r.current, false, nil
	}
	fresh := r.current != nil
	if fresh {
		r.log.Info(r.what+" reloaded", "files", r.paths)
	}
	r.current = &v
	return r.current, fresh, nil
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
