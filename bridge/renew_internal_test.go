package bridge

import (
	"crypto/x509"
	"testing"
	"time"
)

// TestRenewAt: two thirds of the lifetime the certificate was issued with
// (nefia backdates NotBefore by a minute, which is not lifetime), ± 5% of
// it, never later than a tenth of it before expiry.
func TestRenewAt(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		life     time.Duration
		backdate time.Duration
		r        float64
		want     time.Duration // after issuance
	}{
		{name: "1m, middle", life: time.Minute, backdate: time.Minute, r: 0.5, want: 40 * time.Second},
		{name: "1m, earliest", life: time.Minute, backdate: time.Minute, r: 0, want: 37 * time.Second},
		{name: "1m, latest", life: time.Minute, backdate: time.Minute, r: 1, want: 43 * time.Second},
		{name: "24h, middle", life: 24 * time.Hour, backdate: time.Minute, r: 0.5, want: 16 * time.Hour},
		{name: "24h, latest", life: 24 * time.Hour, backdate: time.Minute, r: 1, want: 16*time.Hour + 72*time.Minute},
		// Every nefia certificate is backdated; one that is not is renewed
		// a few seconds late, which is harmless.
		{name: "not backdated", life: 30 * time.Hour, backdate: 0, r: 0.5, want: 20*time.Hour + 20*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			leaf := &x509.Certificate{NotBefore: issued.Add(-tt.backdate), NotAfter: issued.Add(tt.life)}
			got := renewAt(leaf, tt.r).Sub(issued)
			if d := got - tt.want; d < -time.Second || d > time.Second {
				t.Errorf("renewAt = issuance + %v, want + %v", got, tt.want)
			}
			if latest := tt.life - tt.life/10; got > latest {
				t.Errorf("renewAt = issuance + %v, later than %v", got, latest)
			}
		})
	}
}

func TestRetryCap(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tt := range []struct {
		name string
		life time.Duration
		want time.Duration
	}{
		{name: "1m", life: time.Minute, want: 3 * time.Second},
		{name: "1h", life: time.Hour, want: 3 * time.Minute},
		{name: "24h", life: 24 * time.Hour, want: 5 * time.Minute},
	} {
		leaf := &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(tt.life)}
		if got := retryCap(leaf); got != tt.want {
			t.Errorf("%s: retryCap = %v, want %v", tt.name, got, tt.want)
		}
	}
}
