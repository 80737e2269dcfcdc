package metrics_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nefia/nefia/metrics"
)

// TestStaleGauge: nefia_revocation_store_stale follows the gateway's view,
// 1 while it refuses handshakes for want of a current view (issue 15).
func TestStaleGauge(t *testing.T) {
	t.Parallel()
	var stale atomic.Bool
	m := metrics.New(metrics.Options{Stale: stale.Load})
	tests := []struct {
		name  string
		stale bool
		want  string
	}{
		{name: "current", stale: false, want: "nefia_revocation_store_stale 0"},
		{name: "stale", stale: true, want: "nefia_revocation_store_stale 1"},
		{name: "recovered", stale: false, want: "nefia_revocation_store_stale 0"},
	}
	for _, tt := range tests {
		stale.Store(tt.stale)
		if body := scrape(t, m); !strings.Contains(body, tt.want) {
			t.Errorf("%s: want %q in\n%s", tt.name, tt.want, body)
		}
	}
}
