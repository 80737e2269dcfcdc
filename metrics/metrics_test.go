package metrics_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/metrics"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/pki"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func newMetrics(t *testing.T, expiryErr error) *metrics.Metrics {
	t.Helper()
	return metrics.New(metrics.Options{
		KnownTool: func(n string) bool { return n == "nefia.mtls.status" },
		Expiry: func() (metrics.Expiry, error) {
			return metrics.Expiry{CA: now.Add(time.Hour), Server: now.Add(-time.Minute)}, expiryErr
		},
		StoreAge:      func() (time.Duration, bool) { return 1500 * time.Millisecond, true },
		Revoked:       func() int { return 3 },
		AuditFailures: func() uint64 { return 1 },
		Clock:         func() time.Time { return now },
	})
}

func TestEventsCounted(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, nil)
	agent := &identity.Agent{Name: "a", Serial: "01", Role: pki.RoleAgent, Transport: identity.TransportStream}
	m.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Reason: "unknown CA"})
	m.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Reason: "unknown CA"})
	m.Connection(observe.ConnEvent{Kind: observe.ConnOpened, Agent: agent})
	m.Connection(observe.ConnEvent{Kind: observe.ConnOpened, Agent: agent})
	m.Connection(observe.ConnEvent{Kind: observe.ConnClosed, Agent: agent, Reason: "revoked"})
	m.Call(observe.CallEvent{Tool: "nefia.mtls.status", Outcome: "ok", Duration: time.Millisecond})
	m.Call(observe.CallEvent{Tool: "nefia.mtls.status", Outcome: "denied"})
	m.Call(observe.CallEvent{Tool: strings.Repeat("x", 1<<20), Outcome: "error"})

	want := `
# HELP nefia_handshakes_total Connections by handshake outcome: ok (admitted) or refused, with the refusal reason.
# TYPE nefia_handshakes_total counter
nefia_handshakes_total{outcome="ok",reason=""} 2
nefia_handshakes_total{outcome="refused",reason="unknown CA"} 2
# HELP nefia_connections_open Admitted connections now open, by transport and role.
# TYPE nefia_connections_open gauge
nefia_connections_open{role="agent",transport="mtls-stream"} 1
# HELP nefia_tool_calls_total Tool calls by tool and outcome (ok, error, denied); unknown tool names count as other.
# TYPE nefia_tool_calls_total counter
nefia_tool_calls_total{outcome="denied",tool="nefia.mtls.status"} 1
nefia_tool_calls_total{outcome="error",tool="other"} 1
nefia_tool_calls_total{outcome="ok",tool="nefia.mtls.status"} 1
# HELP nefia_audit_write_failures_total Audit records that could not be written since start.
# TYPE nefia_audit_write_failures_total counter
nefia_audit_write_failures_total 1
# HELP nefia_certificate_expiry_seconds Seconds until a certificate expires (negative once expired): the CA, the server certificate, and the soonest-expiring active client certificate.
# TYPE nefia_certificate_expiry_seconds gauge
nefia_certificate_expiry_seconds{certificate="ca"} 3600
nefia_certificate_expiry_seconds{certificate="server"} -60
# HELP nefia_revocation_store_age_seconds Seconds since the gateway last confirmed its view of the revocation store is current.
# TYPE nefia_revocation_store_age_seconds gauge
nefia_revocation_store_age_seconds 1.5
# HELP nefia_revoked_certificates Serials in the revocation store.
# TYPE nefia_revoked_certificates gauge
nefia_revoked_certificates 3
`
	names := []string{"nefia_handshakes_total", "nefia_connections_open", "nefia_tool_calls_total",
		"nefia_audit_write_failures_total", "nefia_certificate_expiry_seconds", "nefia_revocation_store_age_seconds", "nefia_revoked_certificates"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// TestLabelsBounded: peers choose reasons' and tools' text (an error
// message, a tool name); neither may grow the number of series without
// bound.
func TestLabelsBounded(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, nil)
	for i := range 1000 {
		m.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Reason: strings.Repeat("r", i)})
		m.Call(observe.CallEvent{Tool: strings.Repeat("t", i), Outcome: "ok"})
	}
	n, err := testutil.GatherAndCount(m.Registry(), "nefia_handshakes_total", "nefia_tool_calls_total")
	if err != nil {
		t.Fatal(err)
	}
	if n > 33+1 {
		t.Errorf("%d series after 1000 distinct reasons and tool names, want at most 34", n)
	}
}

// TestExpiryError: a scrape while the certificates cannot be read says so
// rather than serving stale figures, and the other metrics still come.
func TestExpiryError(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, errors.New("read CA: permission denied"))
	body := scrape(t, m)
	if strings.Contains(body, "nefia_certificate_expiry_seconds{") {
		t.Errorf("expiry gauge present despite the error:\n%s", body)
	}
	if !strings.Contains(body, "nefia_revoked_certificates 3") {
		t.Errorf("other metrics missing:\n%s", body)
	}
}

// TestPromtool validates the exposition with Prometheus's own checker
// (Debian package prometheus; .ci/run installs it).
func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed (apt-get install prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	m := newMetrics(t, nil)
	m.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Reason: "revoked"})
	m.Call(observe.CallEvent{Tool: "nefia.mtls.status", Outcome: "ok", Duration: time.Millisecond})
	body := scrape(t, m)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
