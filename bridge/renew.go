package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nefia/nefia/pki"
)

// RenewFunc obtains a renewed certificate for current (through the
// gateway's nefia.mtls.renew) and stores it where the next start of the
// bridge finds it. It is called again, with backoff, until it succeeds or
// current expires.
type RenewFunc func(ctx context.Context, current tls.Certificate) (tls.Certificate, error)

// Clock is the time of the renewal schedule. Tests inject one so that a
// certificate's lifetime passes without waiting for it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Renewal schedule. Two thirds of the lifetime, as step-ca's renew daemon
// and SPIFFE agents do (issue 13 item 2): late enough not to churn serials,
// early enough that a third of the lifetime is left for retries. The jitter
// keeps bridges started together from renewing together.
const (
	renewJitter   = 0.05 // ± this share of the lifetime
	retryFirst    = time.Second
	retryMaxShare = 20 // the backoff never exceeds lifetime/retryMaxShare...
	retryMax      = 5 * time.Minute
)

// Log messages tests wait for.
const (
	msgRenewed  = "client certificate renewed"
	msgSwitched = "switched to a connection made with the renewed certificate"
)

// lifetime is the validity the certificate was issued with: nefia backdates
// NotBefore by pki.Backdate, which is not lifetime to renew by (a one-minute
// certificate would otherwise be renewed twenty seconds after issuance).
func lifetime(leaf *x509.Certificate) (start time.Time, life time.Duration) {
	start, life = leaf.NotBefore, leaf.NotAfter.Sub(leaf.NotBefore)
	if life > pki.Backdate {
		start, life = start.Add(pki.Backdate), life-pki.Backdate
	}
	return start, life
}

// renewAt is when to renew leaf: at two thirds of its lifetime, moved by r
// (uniform in [0,1)) within ± renewJitter of the lifetime, and never later
// than a tenth of the lifetime before expiry.
func renewAt(leaf *x509.Certificate, r float64) time.Time {
	start, life := lifetime(leaf)
	at := start.Add(life * 2 / 3).Add(time.Duration((2*r - 1) * renewJitter * float64(life)))
	if latest := leaf.NotAfter.Add(-life / 10); at.After(latest) {
		at = latest
	}
	return at
}

// retryCap bounds the backoff between failed attempts, so that a gateway
// back from an outage is tried again soon enough to beat the expiry.
func retryCap(leaf *x509.Certificate) time.Duration {
	_, life := lifetime(leaf)
	return min(max(life/retryMaxShare, retryFirst), retryMax)
}

// current is the client certificate the bridge presents now.
func (b *bridge) current() tls.Certificate {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	return b.cert
}

func (b *bridge) setCurrent(kp tls.Certificate) {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	b.cert = kp
}

// wakeEvery bounds one wait of the schedule: timers run on the monotonic
// clock, which stands still while a laptop sleeps, so a single wait for a
// renewal hours ahead would end hours late, after the expiry. Waking each
// minute to read the wall clock renews on time after a suspend.
const wakeEvery = time.Minute

// sleepUntil waits until at on the bridge's clock (at least one wait, so
// that an injected clock decides every step); false when ctx ended first.
func (b *bridge) sleepUntil(ctx context.Context, at time.Time) bool {
	for {
		if !b.sleep(ctx, min(at.Sub(b.clock.Now()), wakeEvery)) {
			return false
		}
		if !b.clock.Now().Before(at) {
			return true
		}
	}
}

// sleep waits d (at least 0) on the bridge's clock, so that an injected
// clock decides every step of the schedule; false when ctx ended first.
func (b *bridge) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-b.clock.After(max(d, 0)):
		return true
	case <-ctx.Done():
		return false
	}
}

// renewLoop renews the certificate at each renewAt, hands a connection
// made with the new one to serve, and reports on b.fatal a certificate
// that expired before any renewal succeeded. It returns when ctx ends.
func (b *bridge) renewLoop(ctx context.Context) {
	for {
		leaf := b.current().Leaf
		at := renewAt(leaf, rand.Float64())
		b.log.Info("client certificate renewal scheduled", "serial", fmt.Sprintf("%x", leaf.SerialNumber),
			"at", at.UTC().Format(time.RFC3339), "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		if !b.sleepUntil(ctx, at) {
			return
		}
		kp, err := b.renew(ctx, leaf)
		if err != nil {
			if ctx.Err() == nil {
				b.fatal <- err // buffered; the only send
			}
			return
		}
		b.setCurrent(kp)
		b.handOver(ctx, leaf.NotAfter)
	}
}

// renew calls opts.Renew until it succeeds, with a doubling backoff up to
// retryCap, logging each failure; past leaf's expiry it gives up with an
// error wrapping ErrExpired.
func (b *bridge) renew(ctx context.Context, leaf *x509.Certificate) (tls.Certificate, error) {
	wait, limit := retryFirst, retryCap(leaf)
	wait = min(wait, limit)
	for attempt := 1; ; attempt++ {
		began := time.Now()
		kp, err := b.opts.Renew(ctx, b.current())
		if err == nil && kp.Leaf == nil && len(kp.Certificate) > 0 {
			kp.Leaf, err = x509.ParseCertificate(kp.Certificate[0])
		}
		if err == nil && kp.Leaf == nil {
			err = fmt.Errorf("bridge: the renewal returned no certificate")
		}
		if err == nil {
			b.log.Info(msgRenewed, "serial", fmt.Sprintf("%x", kp.Leaf.SerialNumber), "renews", fmt.Sprintf("%x", leaf.SerialNumber),
				"expires", kp.Leaf.NotAfter.UTC().Format(time.RFC3339), "attempt", attempt, "took", time.Since(began).Round(time.Millisecond))
			return kp, nil
		}
		if ctx.Err() != nil {
			return tls.Certificate{}, ctx.Err()
		}
		left := leaf.NotAfter.Sub(b.clock.Now())
		if left > 0 {
			d := min(wait, left)
			b.log.Warn("client certificate renewal failed; retrying", "attempt", attempt, "retry_in", d,
				"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "error", err)
			if !b.sleepUntil(ctx, b.clock.Now().Add(d)) {
				return tls.Certificate{}, ctx.Err()
			}
			wait = min(2*wait, limit)
		}
		if !b.clock.Now().Before(leaf.NotAfter) {
			return tls.Certificate{}, fmt.Errorf("%w: %q (serial %x) expired at %s after %d failed renewal attempt(s), the last: %s; ask an operator for a new certificate",
				ErrExpired, leaf.Subject.CommonName, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339), attempt, oneLine(err.Error()))
		}
	}
}

// oneLine folds text (a gateway's error may span lines) onto one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// handOver connects with the renewed certificate, replays the client's
// initialize there, and passes the connection to serve, which sends the
// client's next lines on it while the old connection answers what it has
// in flight. A refused or failed attempt (the gateway may still count the
// renewal's own connection against mcp.mtls.max_connections_per_client) is
// retried with backoff while the live connection, valid until until, carries
// on. Without a live connection there is nothing to do: the next reconnect
// presents the new certificate.
func (b *bridge) handOver(ctx context.Context, until time.Time) {
	wait := retryFirst
	for attempt := 1; b.live.Load(); attempt++ {
		seq := b.initSeq.Load()
		c, err := b.dial(ctx, b.emit)
		if err == nil {
			if err = b.reinit(c); err != nil {
				c.tls.Close()
			}
		}
		if err == nil {
			select {
			case b.switchTo <- handover{c, seq}:
			case <-ctx.Done():
				c.tls.Close()
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		left := until.Sub(b.clock.Now())
		if left <= 0 {
			b.log.Warn("could not connect with the renewed certificate before the previous one expired; the next reconnect uses the new one", "error", err)
			return
		}
		d := min(wait, left)
		b.log.Warn("could not connect with the renewed certificate; the current connection carries on, retrying", "attempt", attempt, "retry_in", d, "error", err)
		if !b.sleep(ctx, d) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// handover is a connection made with a renewed certificate, and the
// initialize exchange it replayed (b.initSeq when it was made).
type handover struct {
	c   *conn
	seq uint64
}

// retire lets old answer the requests in flight on it and then closes it:
// its write side is closed at once (the gateway answers what it has, then
// ends the connection), and any request still unanswered when it ends gets
// a JSON-RPC error, as when a connection is lost.
func (b *bridge) retire(old *conn, fwd <-chan error) {
	_ = old.tls.CloseWrite()
	b.retiredMu.Lock()
	b.retired[old] = struct{}{}
	b.retiredMu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		err := <-fwd
		old.tls.Close()
		b.retiredMu.Lock()
		delete(b.retired, old)
		b.retiredMu.Unlock()
		if ids := b.inflight.drainOwner(old); len(ids) > 0 {
			b.log.Warn("the connection with the previous certificate ended with requests unanswered", "requests", len(ids), "error", err)
			for _, id := range ids {
				_ = b.emit(errorResponse(id, "nefia connect: the connection to the gateway was lost before the answer arrived; the request may or may not have been carried out"))
			}
		}
	}()
}

// closeRetired ends the connections still answering old requests; Run
// calls it on its way out.
func (b *bridge) closeRetired() {
	b.retiredMu.Lock()
	defer b.retiredMu.Unlock()
	for c := range b.retired {
		c.tls.Close()
	}
}
