package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/nefia/nefia/pki"
)

// expiryCheckInterval is how often a running gateway repeats its expiry
// warnings: daily, so that a certificate nobody renewed is named in every
// day's log until it is (issue 13 item 4).
const expiryCheckInterval = 24 * time.Hour

// expiryWatch is what the gateway warns about: the CA within
// pki.CAExpiryWarning, the server certificate within pki.ExpiryWarning,
// and each active client certificate within mcp.mtls.expiry_warning that
// is due for renewal and was not renewed (expiringClients).
type expiryWatch struct {
	store            *pki.Store
	caFile, certFile string
	clientWindow     time.Duration
	log              *slog.Logger
	warned           chan<- struct{} // tests: told after each round of warnings
}

// start warns at once and then at each tick, until the returned stop is
// called or ctx ends. tick is injected so tests need not wait a day.
func (w expiryWatch) start(ctx context.Context, tick <-chan time.Time) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			w.warn()
			if w.warned != nil {
				w.warned <- struct{}{}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// warn logs one warning per certificate near (or past) its expiry, at the
// store's clock.
func (w expiryWatch) warn() {
	now := w.store.Now()
	for _, f := range []struct {
		what, path, hint string
		window           time.Duration
	}{
		{"CA certificate", w.caFile, "replacing the CA means issuing every client certificate again; plan it", pki.CAExpiryWarning},
		{"server certificate", w.certFile, "renew it with 'nefia mtls renew-server'", pki.ExpiryWarning},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			w.log.Warn("cannot read the "+f.what+" to check its expiry", "file", f.path, "err", err)
			continue
		}
		c, err := pki.ParseCertificatePEM(data)
		if err != nil {
			w.log.Warn("cannot parse the "+f.what+" to check its expiry", "file", f.path, "err", err)
			continue
		}
		if left := c.NotAfter.Sub(now); left < f.window {
			w.log.Warn(f.what+" expires soon", "file", f.path, "not_after", c.NotAfter.UTC().Format(time.RFC3339),
				"left", left.Round(time.Minute).String(), "hint", f.hint)
		}
	}
	list, err := w.store.List()
	if err != nil {
		w.log.Warn("cannot read the inventory to check client certificate expiry", "err", err)
		return
	}
	for _, c := range expiringClients(list, now, w.clientWindow) {
		w.log.Warn("client certificate expires soon and has not been renewed", "name", c.Name, "serial", c.Serial, "role", c.Role,
			"not_after", c.NotAfter.UTC().Format(time.RFC3339), "left", c.NotAfter.Sub(now).Round(time.Minute).String(),
			"hint", "'nefia mcp connect' renews by itself; otherwise run 'nefia mtls renew' or issue a new one")
	}
}

// expiringClients are the active certificates of list that expire within
// window of now, are past two thirds of their lifetime (when a bridge
// renews; before that a short-lived certificate is not late), and that no
// active certificate renews: one that was renewed has been taken care of.
// It is the rule 'nefia mtls status' lists them by.
func expiringClients(list []pki.ListedCert, now time.Time, window time.Duration) []pki.ListedCert {
	renewed := map[string]bool{}
	for _, c := range list {
		if c.Renews != "" && c.State == pki.StateActive {
			renewed[c.Renews] = true
		}
	}
	var out []pki.ListedCert
	for _, c := range list {
		left := c.NotAfter.Sub(now)
		if c.State == pki.StateActive && !renewed[c.Serial] && left < window && left <= c.Lifetime()/3 {
			out = append(out, c)
		}
	}
	return out
}
