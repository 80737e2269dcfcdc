package etcdstore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/pki"
)

// Watcher is a gateway's view of the revocations in etcd: every revoked
// serial in memory, so a handshake's check is a map look-up, kept current
// by a watch on <prefix>revoked/. It implements server.Revocations.
//
// Current means confirmed: every confirmation interval (max_staleness/5,
// at most 1s) it reads <prefix>revoked-last with a linearizable request
// (which needs a quorum); every revocation's transaction rewrites that key,
// so its ModRevision is the revision of the latest revocation, and the view
// is current as of the read once the watch has applied events (or a full
// read) up to it. Progress notifications are not trusted: etcd 3.4.23
// sends them with the store's revision to a watcher that has not yet
// received the events before it (seen in
// TestCompactionDuringDisconnectResyncs). A view not confirmed within
// maxStaleness fails closed: Check and Refresh return an error wrapping
// pki.ErrRevocationUnavailable that says why, so new handshakes are
// refused; a serial known to be revoked is reported revoked all the same.
// When etcd is back the Watcher catches up by itself: the watch resumes
// from the last revision it saw, or, when etcd compacted that revision
// away, the whole set is read again (a full resync), so no revocation made
// meanwhile is lost.
//
// Live sessions are not closed while the view is stale: they were admitted
// by a current view, and the gateway re-judges them against the view as
// soon as it has caught up (Generation changes with every revocation
// applied), closing those revoked meanwhile.
type Watcher struct {
	cli      *clientv3.Client
	prefix   string
	dir      string
	last     string // the revoked-last key
	maxStale time.Duration
	every    time.Duration
	log      *slog.Logger

	mu      sync.RWMutex
	serials map[string]struct{} // canonical hex serials
	// storeID is the store marker's id at the first load: a store
	// replaced under the prefix (deleted and created again, a new id) is
	// not the one whose revocations this gateway enforced, and is refused
	// until the gateway restarts. Set and read by Run's goroutine only.
	storeID string

	// gone holds the reason while the store marker is missing (never
	// created, or deleted while running): checks fail at once, whatever
	// the age of the last confirmation, until a resync finds it again.
	gone      atomic.Pointer[error]
	gen       atomic.Uint64
	confirmed atomic.Int64 // UnixNano of the last confirmation; 0: never
	why       atomic.Pointer[string]
	resyncs   atomic.Uint64
	changed   chan struct{}
	loaded    chan struct{} // closed by the first full read
	loadOnce  sync.Once
}

// NewWatcher returns a Watcher of the revocations under prefix; it does
// nothing until Run. maxStaleness is mcp.mtls.store.max_staleness.
func NewWatcher(cli *clientv3.Client, prefix string, maxStaleness time.Duration, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := min(max(maxStaleness/5, 20*time.Millisecond), time.Second)
	w := &Watcher{cli: cli, prefix: prefix, dir: prefix + revokedDir, last: prefix + revokedLast, maxStale: maxStaleness, every: every, log: log,
		serials: map[string]struct{}{}, changed: make(chan struct{}, 1), loaded: make(chan struct{})}
	w.setWhy(errors.New("not loaded yet"))
	return w
}

// Check returns nil for a certificate that is not revoked, an error
// wrapping pki.ErrRevoked for one that is, and one wrapping
// pki.ErrRevocationUnavailable while the view is not confirmed current.
func (w *Watcher) Check(cert *x509.Certificate) error {
	revoked, err := w.IsRevoked(cert.SerialNumber)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("%w: serial %s (%s)", pki.ErrRevoked, pki.FormatSerial(cert.SerialNumber), cert.Subject.CommonName)
	}
	return nil
}

// IsRevoked reports whether serial is revoked: true whenever the view
// holds it, an error when it does not and the view is stale.
func (w *Watcher) IsRevoked(serial *big.Int) (bool, error) {
	if serial.Sign() > 0 {
		w.mu.RLock()
		_, ok := w.serials[pki.FormatSerial(serial)]
		w.mu.RUnlock()
		if ok {
			return true, nil
		}
	}
	return false, w.Refresh()
}

// Refresh returns the error that makes checks fail while the view is not
// confirmed current, nil otherwise. It does no I/O: the watch keeps the
// view current.
func (w *Watcher) Refresh() error {
	if g := w.gone.Load(); g != nil {
		return *g // noStore: wraps pki.ErrRevocationUnavailable and ErrNoStore
	}
	c := w.confirmed.Load()
	if c == 0 {
		return fmt.Errorf("%w: etcd revocations not loaded yet: %s", pki.ErrRevocationUnavailable, *w.why.Load())
	}
	// The text names when, not how long ago: it stays the same while the
	// outage lasts, so a caller that logs a changed error (the gateway's
	// revocation poll, five times a second) logs it once.
	if at := time.Unix(0, c); time.Since(at) > w.maxStale {
		return fmt.Errorf("%w: etcd revocations not confirmed current since %s (max_staleness %s): %s",
			pki.ErrRevocationUnavailable, at.UTC().Format("2006-01-02T15:04:05.000Z"), w.maxStale, *w.why.Load())
	}
	return nil
}

// Loaded is closed once the first full read succeeded, so a gateway
// starts serving with its view loaded rather than refusing its first
// handshakes.
func (w *Watcher) Loaded() <-chan struct{} { return w.loaded }

// Generation increases whenever the set of revoked serials changed.
func (w *Watcher) Generation() uint64 { return w.gen.Load() }

// Changed receives a value after every Generation change, so the gateway
// re-judges live sessions at once rather than at its next poll.
func (w *Watcher) Changed() <-chan struct{} { return w.changed }

// Len returns the number of revoked serials in the view.
func (w *Watcher) Len() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.serials)
}

// Age returns how long ago the view was last confirmed current; ok is
// false while it never was (for the metrics).
func (w *Watcher) Age() (time.Duration, bool) {
	c := w.confirmed.Load()
	if c == 0 {
		return 0, false
	}
	return time.Since(time.Unix(0, c)), true
}

// Stale reports whether checks now fail closed (for the metrics).
func (w *Watcher) Stale() bool { return w.Refresh() != nil }

// Resyncs counts full reads of the revocation set (the first load
// included), for tests proving that a compaction forced one.
func (w *Watcher) Resyncs() uint64 { return w.resyncs.Load() }

// Path names the store in the gateway's log lines.
func (w *Watcher) Path() string { return "etcd " + w.dir }

func (w *Watcher) setGone(err error) {
	w.gone.Store(&err)
	w.setWhy(err)
}

func (w *Watcher) setWhy(err error) {
	s := err.Error()
	w.why.Store(&s)
}

func (w *Watcher) confirm(at time.Time) {
	// Confirmations may arrive out of order; only ever move forward.
	for {
		old := w.confirmed.Load()
		if at.UnixNano() <= old || w.confirmed.CompareAndSwap(old, at.UnixNano()) {
			return
		}
	}
}

func (w *Watcher) bump() {
	w.gen.Add(1)
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Run keeps the view current until ctx ends: a full read, then the watch
// from the revision after it; whenever the watch ends (etcd unreachable,
// no leader, compaction) it reads everything again and watches anew. It
// logs, once each, when the view turns stale and when it has caught up.
func (w *Watcher) Run(ctx context.Context) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.monitor(ctx, done) })
	defer wg.Wait() // nothing of the Watcher outlives Run
	defer close(done)
	backoff := w.every
	for ctx.Err() == nil {
		rev, err := w.resync(ctx)
		if err != nil {
			w.setWhy(err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		err = w.follow(ctx, rev)
		if ctx.Err() == nil {
			w.setWhy(err)
			w.log.Warn("etcd revocation watch ended; reading the revocations again", "prefix", w.dir, "error", err)
		}
	}
}

// monitor logs the transitions between a current and a stale view.
func (w *Watcher) monitor(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	wasStale := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
		}
		err := w.Refresh()
		stale := err != nil && w.confirmed.Load() != 0 // before the first load, Run's error says why
		switch {
		case stale && !wasStale:
			w.log.Error("etcd revocations stale: refusing new handshakes until the view is confirmed current; live sessions are kept",
				"prefix", w.dir, "error", err)
		case !stale && wasStale:
			w.log.Info("etcd revocations current again: accepting handshakes", "prefix", w.dir, "revoked", w.Len())
		}
		wasStale = stale
	}
}

// resync reads the store marker and every revoked serial at the marker's
// revision, with linearizable reads, and replaces the view; it returns
// the revision read. Without a marker it fails (the view stays what it
// was, and is refused): an empty set is only believed of a store that
// exists.
func (w *Watcher) resync(ctx context.Context) (int64, error) {
	start := time.Now()
	cx, cancel := context.WithTimeout(ctx, opTimeout)
	mresp, err := w.cli.Get(cx, w.prefix+metaKey)
	cancel()
	if err != nil {
		return 0, unavailable("read the store marker", err)
	}
	if len(mresp.Kvs) == 0 {
		err := noStore(w.prefix)
		w.setGone(err)
		return 0, err
	}
	meta, err := decodeMeta(w.prefix+metaKey, mresp.Kvs[0].Value)
	if err != nil {
		err = unavailable("read the store marker", err)
		w.setGone(err)
		return 0, err
	}
	switch {
	case w.storeID == "":
		w.storeID = meta.StoreID
	case w.storeID != meta.StoreID:
		// An empty store created anew would otherwise un-revoke every
		// serial: fail closed, as the file backend does for a lost store.
		err := fmt.Errorf("%w: the store under %s was replaced (store id %s, now %s): its revocations are not the ones this gateway enforced; "+
			"restore the old store, or restart the gateway to accept the new one", pki.ErrRevocationUnavailable, w.prefix, w.storeID, meta.StoreID)
		if w.gone.Load() == nil || (*w.gone.Load()).Error() != err.Error() {
			w.log.Error("etcd store replaced: refusing new handshakes", "prefix", w.prefix, "error", err)
		}
		w.setGone(err)
		return 0, err
	}
	set := make(map[string]struct{}, w.Len())
	rev, err := scan(ctx, w.cli, w.dir, true, mresp.Header.Revision, func(key string, _ []byte) error {
		serial, err := serialOf(key, w.dir)
		if err != nil {
			w.log.Warn("ignoring an etcd key that is not a serial", "key", key)
			return nil
		}
		set[serial] = struct{}{}
		return nil
	})
	if err != nil {
		return 0, err
	}
	w.gone.Store(nil)
	w.resyncs.Add(1)
	w.mu.Lock()
	same := len(set) == len(w.serials)
	if same {
		for s := range set {
			if _, ok := w.serials[s]; !ok {
				same = false
				break
			}
		}
	}
	w.serials = set
	w.mu.Unlock()
	if !same {
		w.bump()
	}
	w.confirm(start)
	w.loadOnce.Do(func() { close(w.loaded) })
	return rev, nil
}

type confirmation struct {
	at  time.Time
	rev int64
	// hdr is etcd's current revision when it answered: below what the
	// watch applied only when etcd went back in time (a snapshot restored
	// without --bump-revision), where a resumed watch would miss writes.
	hdr int64
	err error
}

// follow applies the watch's events from rev+1 on and confirms the view
// periodically; it returns why it stopped.
func (w *Watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// The whole prefix, so that the marker's deletion arrives in the same
	// response as the deletions of the revocations under it.
	wch := w.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	results := make(chan confirmation, 1)
	confirming := false
	applied := rev // every revocation up to this revision is in the view
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("etcd compacted the revisions the watch needed (from %d; compacted up to %d): full resync", applied+1, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			if err := w.apply(resp.Events); err != nil {
				return err
			}
			for _, ev := range resp.Events {
				applied = max(applied, ev.Kv.ModRevision)
			}
		case <-tick.C:
			if confirming {
				continue
			}
			confirming = true
			go func() { results <- w.latestRevocation(wctx) }()
		case c := <-results:
			confirming = false
			switch {
			case c.err != nil:
				w.setWhy(c.err)
			case c.hdr < applied:
				return fmt.Errorf("etcd's revision %d is below the %d this gateway has applied (restored from a snapshot?): full resync", c.hdr, applied)
			case applied >= c.rev:
				w.confirm(c.at)
			default:
				w.setWhy(fmt.Errorf("the watch has applied revocations up to revision %d, the latest is at %d", applied, c.rev))
			}
		}
	}
}

// latestRevocation reads the revision of the latest revocation with a
// linearizable request, which only a member in touch with a quorum
// answers; 0 when none was ever recorded.
func (w *Watcher) latestRevocation(ctx context.Context) confirmation {
	at := time.Now()
	cx, cancel := context.WithTimeout(ctx, min(max(w.maxStale/2, w.every), opTimeout))
	defer cancel()
	resp, err := w.cli.Get(cx, w.last)
	if err != nil {
		return confirmation{err: fmt.Errorf("confirm the latest revocation: %w", err)}
	}
	if len(resp.Kvs) == 0 {
		return confirmation{at: at, hdr: resp.Header.Revision}
	}
	return confirmation{at: at, rev: resp.Kvs[0].ModRevision, hdr: resp.Header.Revision}
}

// apply adds put serials to the view and drops deleted ones (an operator
// who deletes a key by hand un-revokes it). Keys outside revoked/ are
// skipped, but the deletion of the store marker makes the view
// unavailable at once and is returned, before any other event of the
// response is applied: a deleted store is not an empty one.
func (w *Watcher) apply(events []*clientv3.Event) error {
	for _, ev := range events {
		if string(ev.Kv.Key) == w.prefix+metaKey && ev.Type == clientv3.EventTypeDelete {
			err := noStore(w.prefix)
			w.setGone(err)
			w.log.Error("etcd store marker deleted: refusing new handshakes until the store exists again", "prefix", w.prefix, "error", err)
			return err
		}
	}
	changed := false
	w.mu.Lock()
	for _, ev := range events {
		if !strings.HasPrefix(string(ev.Kv.Key), w.dir) {
			continue
		}
		serial, err := serialOf(string(ev.Kv.Key), w.dir)
		if err != nil {
			w.log.Warn("ignoring an etcd key that is not a serial", "key", string(ev.Kv.Key))
			continue
		}
		_, had := w.serials[serial]
		switch {
		case ev.Type == clientv3.EventTypePut && !had:
			w.serials[serial] = struct{}{}
			changed = true
		case ev.Type == clientv3.EventTypeDelete && had:
			delete(w.serials, serial)
			changed = true
		}
	}
	w.mu.Unlock()
	if changed {
		w.bump()
	}
	return nil
}
