package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/store/etcdstore"
)

// openRecords returns the shared records mcp.mtls.store names (issue 15):
// nil for the file backend, so the state directory's files serve as
// before. A configuration that exists but cannot be read yields records
// that refuse every operation: falling back to the files then would let a
// revocation meant for etcd land in a file no gateway reads.
func openRecords(configPath string, log *slog.Logger) pki.Records {
	loaded, err := config.Load(configPath)
	if err != nil {
		return unavailableRecords{fmt.Errorf("%w: the configuration cannot be read, so where certificates are recorded (mcp.mtls.store.backend) is unknown: %w",
			pki.ErrRevocationUnavailable, err)}
	}
	st := loaded.MCP.MTLS.Store
	if st.Backend != config.StoreEtcd {
		return nil
	}
	e := st.Etcd
	base := filepath.Dir(configPath)
	for _, p := range []*string{&e.CAFile, &e.CertFile, &e.KeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	cli, err := etcdstore.Dial(e)
	if err != nil {
		return unavailableRecords{fmt.Errorf("%w: %w", pki.ErrRevocationUnavailable, err)}
	}
	log.Debug("inventory and revocations in etcd", "endpoints", e.Endpoints, "prefix", e.PrefixOrDefault(), "auto_sync", e.AutoSync)
	return etcdstore.New(cli, e.PrefixOrDefault())
}

// unavailableRecords refuses every operation with the reason the
// configured backend cannot be used.
type unavailableRecords struct{ err error }

func (u unavailableRecords) AddIssued(pki.IssuedCert) error { return u.err }
func (u unavailableRecords) AddRevocation(pki.Revocation) (pki.Revocation, error) {
	return pki.Revocation{}, u.err
}
func (u unavailableRecords) IssuedCert(string) (pki.IssuedCert, bool, error) {
	return pki.IssuedCert{}, false, u.err
}
func (u unavailableRecords) Issued() ([]pki.IssuedCert, error)  { return nil, u.err }
func (u unavailableRecords) Revoked() ([]pki.Revocation, error) { return nil, u.err }
func (u unavailableRecords) Health() error                      { return u.err }

// revocationView is what the gateway and its metrics use of a revocation
// store: the file checker or the etcd watcher.
type revocationView interface {
	server.Revocations
	Len() int
}

// startWatcher runs the gateway's etcd view until ctx ends and waits, up to
// max_staleness, for its first full read, so the gateway does not start by
// refusing handshakes; stop waits for the watcher to end.
func startWatcher(ctx context.Context, s *session, es *etcdstore.Store, maxStale time.Duration) (*etcdstore.Watcher, func()) {
	w := etcdstore.NewWatcher(es.Client(), es.Prefix(), maxStale, s.log)
	es.Attach(w)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	select {
	case <-w.Loaded():
		s.log.Info("revocations loaded from etcd", "prefix", es.Prefix(), "revoked", w.Len())
	case <-time.After(maxStale):
		s.log.Error("revocations not loaded from etcd yet: new handshakes are refused until they are", "prefix", es.Prefix(), "error", w.Refresh())
	case <-ctx.Done():
	}
	return w, func() { cancel(); <-done }
}
