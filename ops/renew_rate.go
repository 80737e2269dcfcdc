package ops

import (
	"fmt"
	"time"

	"github.com/nefia/nefia/pki"
)

// MaxRenewalsPerLifetime bounds how many certificates one renewal chain
// (a first issuance and everything renewed from it, through Renews) may be
// issued by renewals within one lifetime of its certificates, looking back
// from now. Every renewal appends to the inventory, and one that
// supersedes a sibling to the revocation store, and each is the caller's
// own choice: without a bound, one valid certificate renewing in a loop
// (the newest renewing, or its predecessor retrying) grew both files
// without limit. A bridge renews once per two thirds of a lifetime, plus
// a retry now and then when an answer is lost, far below the bound; the
// bound scales with the lifetime an operator chose, so short-lived
// certificates still renew as often as they must.
const MaxRenewalsPerLifetime = 10

// renewRateIn refuses a renewal from prev when prev's chain already had
// MaxRenewalsPerLifetime renewals issued after now-window; next, if not
// empty, is the successor just issued (counted, so the bound holds against
// renewals that raced past the check before issuance).
func renewRateIn(list []pki.ListedCert, prev, next string, now time.Time, window time.Duration) error {
	root, members := chainIn(list, prev)
	since := now.Add(-window)
	n := 0
	for _, c := range members {
		// When it was issued: NotBefore is backdated for clock skew, and
		// counting from it would shorten the window by pki.Backdate (to
		// nothing for one-minute certificates). The root was issued, not
		// renewed.
		if c.Serial != root && c.NotBefore.Add(pki.Backdate).After(since) {
			n++
		}
	}
	limit := MaxRenewalsPerLifetime
	if next != "" {
		limit++ // next is one of them
	}
	if n >= limit {
		return fmt.Errorf("%w: certificate %s: its renewal chain was renewed %d times within the last %s (one certificate lifetime); "+
			"at most %d renewals per lifetime are allowed, try again later or ask an operator for a new certificate",
			ErrPermission, prev, n-(limit-MaxRenewalsPerLifetime), window, MaxRenewalsPerLifetime)
	}
	return nil
}
