package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/metrics"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// gatewayMetrics builds the Prometheus metrics of a gateway (mcp.metrics):
// the gauges read the certificate files, the inventory and the revocation
// checker at scrape time, so they are exact when read and cost nothing
// between scrapes. known reports whether a tool name is served (set once
// the gateway exists).
func gatewayMetrics(s *session, trail *audit.Logger, checker revocationView, caFile, certFile string, known func(string) bool) *metrics.Metrics {
	var lastOK atomic.Int64 // unix nanoseconds of the last view confirmed current
	lastOK.Store(time.Now().UnixNano())
	return metrics.New(metrics.Options{
		KnownTool: known,
		Expiry: func() (metrics.Expiry, error) {
			var exp metrics.Expiry
			for _, f := range []struct {
				path string
				at   *time.Time
			}{{caFile, &exp.CA}, {certFile, &exp.Server}} {
				data, err := os.ReadFile(f.path)
				if err != nil {
					return exp, fmt.Errorf("read %s: %w", f.path, err)
				}
				c, err := pki.ParseCertificatePEM(data)
				if err != nil {
					return exp, err
				}
				*f.at = c.NotAfter
			}
			list, err := s.store.List()
			if err != nil {
				return exp, err
			}
			for _, c := range list {
				if c.State == pki.StateActive && (exp.SoonestClient.IsZero() || c.NotAfter.Before(exp.SoonestClient)) {
					exp.SoonestClient = c.NotAfter
				}
			}
			return exp, nil
		},
		StoreAge: func() (time.Duration, bool) {
			if a, ok := checker.(interface{ Age() (time.Duration, bool) }); ok {
				return a.Age() // etcd: since the view was last confirmed current
			}
			// A successful Refresh (one stat, a read only if the file
			// changed) confirms the view now: the age is 0 while the store
			// is readable and grows from the last success while it is not,
			// when every handshake is refused.
			now := time.Now()
			if checker.Refresh() == nil {
				lastOK.Store(now.UnixNano())
			}
			return now.Sub(time.Unix(0, lastOK.Load())), true
		},
		Revoked:       checker.Len,
		Stale:         func() bool { return checker.Refresh() != nil },
		AuditFailures: trail.Failures,
	})
}

// serveMetrics runs the metrics listener until ctx ends; a listener that
// cannot start stops the gateway (a configured endpoint that silently does
// not exist would hide every alert built on it).
func serveMetrics(ctx context.Context, cancel context.CancelCauseFunc, s *session, addr string, m *metrics.Metrics) {
	if err := metrics.Serve(ctx, addr, m.Handler(), s.log); err != nil {
		cancel(fmt.Errorf("mcp.metrics.listen_addr: %w", err))
	}
}

var _ server.Revocations = (*pki.RevocationChecker)(nil)
