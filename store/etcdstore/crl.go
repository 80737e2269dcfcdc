package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/pki"
)

// crlNumberKey holds, under the prefix, the last CRL number reserved by
// any gateway or CLI.
const crlNumberKey = "crl-number"

// NextCRLNumber reserves the next CRL number, at least atLeast, with a
// compare-and-swap on <prefix>crl-number (pki.CRLNumbers): two gateways
// signing at once get different numbers, and numbers only increase.
func (s *Store) NextCRLNumber(atLeast int64) (int64, error) {
	key := s.prefix + crlNumberKey
	for range 32 {
		cx, cancel := ctx()
		resp, err := s.cli.Txn(cx).If(s.metaExists()).Then(clientv3.OpGet(key)).Commit()
		cancel()
		if err != nil {
			return 0, unavailable("read the CRL number", err)
		}
		if !resp.Succeeded {
			return 0, noStore(s.prefix)
		}
		var cur, mod int64
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			if cur, err = strconv.ParseInt(string(kvs[0].Value), 10, 64); err != nil || cur < 0 {
				return 0, fmt.Errorf("%w: etcd key %s: CRL number %q", pki.ErrCorruptState, key, kvs[0].Value)
			}
			mod = kvs[0].ModRevision
		}
		next := max(cur+1, atLeast)
		cx, cancel = ctx()
		resp, err = s.cli.Txn(cx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", mod), s.metaExists()).
			Then(clientv3.OpPut(key, strconv.FormatInt(next, 10))).
			Commit()
		cancel()
		if err != nil {
			return 0, unavailable("reserve CRL number", err)
		}
		if resp.Succeeded {
			return next, nil
		}
		// Another signer won the race (or the store went away): again.
	}
	return 0, fmt.Errorf("%w: etcd: the CRL number at %s kept changing under contention", pki.ErrRevocationUnavailable, key)
}

// CRLTimings shape KeepCRL: Debounce is the least time between two
// signatures after revocations (a burst of revocations makes one CRL per
// Debounce, not one each), Check how often an unchanged set is checked
// against the CRL's nextUpdate.
type CRLTimings struct {
	Debounce time.Duration
	Check    time.Duration
}

// KeepCRL keeps store's mtls_ca.crl current on a gateway of the etcd
// backend (issue 13 item 6 for issue 15): re-signed from the revocations
// in etcd after each change the watcher applies (at most once per
// Debounce) and before its nextUpdate (checked every Check). A gateway
// without the CA key signs nothing: it says so in one info line and
// returns false. The returned stop ends the loop and waits for it.
func KeepCRL(ctx context.Context, w *Watcher, store *pki.Store, t CRLTimings, log *slog.Logger) (running bool, stop func()) {
	if _, _, err := store.LoadCA(); err != nil {
		if errors.Is(err, pki.ErrNoCAKey) || errors.Is(err, pki.ErrNoCA) {
			log.Info("this gateway holds no CA key: it signs no CRL; a gateway holding the key keeps "+pki.CRLFile, "reason", err)
		} else {
			log.Warn("the CA cannot be loaded: no CRL is signed here", "err", err)
		}
		return false, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The generation is looked at ten times per Debounce, so a lone
		// revocation is signed within Debounce/10; a burst, once per
		// Debounce.
		tick := time.NewTicker(max(t.Debounce/10, time.Millisecond))
		defer tick.Stop()
		var signedGen uint64
		var checked, tried time.Time
		failing := false
		for {
			gen := w.Generation()
			due := gen != signedGen || time.Since(checked) >= t.Check
			if due && time.Since(tried) >= t.Debounce { // failures retry once per Debounce too
				tried = time.Now()
				info, err := store.RefreshCRL(false)
				switch {
				case err != nil && !failing:
					log.Warn("CRL refresh from etcd failed; retrying", "file", store.Path(pki.CRLFile), "err", err)
					failing = true
				case err == nil:
					if failing {
						log.Info("CRL refresh from etcd works again", "file", store.Path(pki.CRLFile))
					}
					failing = false
					signedGen, checked = gen, tried
					if info.Regenerated {
						log.Info("CRL re-signed", "number", info.Number, "entries", info.Entries, "next_update", info.NextUpdate)
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return true, func() { cancel(); <-done }
}
