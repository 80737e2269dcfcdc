// Package metrics exposes the gateway's Prometheus metrics: handshakes by
// outcome and refusal reason, open connections by transport and role, tool
// calls by tool and outcome with their latency, the revoked serials, audit
// write failures, the seconds left before the CA, the server certificate and the
// soonest client certificate expire, and the revocation store's age.
//
// It is an observe.Observer, so the gateway reports each event once and the
// log, the audit trail and the metrics each take what they need.
//
// Every label value is bounded: peers choose tool names and may cause
// errors of any text, and an unbounded label would let them grow the
// gateway's memory and every scraper's storage. Tool labels are the names of
// tools the server actually has (anything else is "other"); reasons are
// clipped and, past a fixed number of distinct values, folded into "other".
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nefia/nefia/observe"
)

// Namespace prefixes every metric name.
const Namespace = "nefia"

// Other is the label value that stands for any value past a bound.
const Other = "other"

const (
	maxReasons     = 32 // distinct reason labels before folding into Other
	maxLabelLength = 64
)

// Expiry is when the certificates the gateway depends on stop being valid;
// a zero time is a certificate that does not exist (no client certificate
// issued yet), which the gauge leaves out.
type Expiry struct {
	CA, Server, SoonestClient time.Time
}

// Options are what the metrics read from the rest of nefia at scrape time.
// Every func may be nil (the metric is then not exported).
type Options struct {
	// KnownTool reports whether a tool name is one the server serves, so
	// only real tool names become label values.
	KnownTool func(name string) bool
	// Expiry returns the certificates' expiry times.
	Expiry func() (Expiry, error)
	// StoreAge returns how long ago the gateway's view of the revocation
	// store was last confirmed current (read or found unchanged); ok is
	// false while it has never been.
	StoreAge func() (age time.Duration, ok bool)
	// Revoked returns how many serials the revocation store holds.
	Revoked func() int
	// Stale reports whether the gateway refuses new handshakes because
	// it cannot confirm its revocation view is current (issue 15: etcd
	// unreachable, watch broken), exported as a 0/1 gauge to alert on.
	Stale func() bool
	// AuditFailures returns how many audit records could not be written
	// since start (audit.Logger.Failures).
	AuditFailures func() uint64
	// Clock is the time expiry is measured from; nil is time.Now.
	Clock func() time.Time
}

// Metrics holds the registry and the instruments. The zero value is not
// usable; call New.
type Metrics struct {
	opts     Options
	registry *prometheus.Registry

	handshakes *prometheus.CounterVec
	open       *prometheus.GaugeVec
	closed     *prometheus.CounterVec
	calls      *prometheus.CounterVec
	latency    *prometheus.HistogramVec

	reasonsMu sync.Mutex
	reasons   map[string]struct{}
}

// New builds the instruments and registers them, with the Go runtime and
// process collectors, on a registry of their own (never the global one, so
// tests and several gateways in one process do not collide).
func New(opts Options) *Metrics {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	m := &Metrics{
		opts:     opts,
		registry: prometheus.NewRegistry(),
		reasons:  map[string]struct{}{},
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "handshakes_total",
			Help: "Connections by handshake outcome: ok (admitted) or refused, with the refusal reason.",
		}, []string{"outcome", "reason"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "connections_open",
			Help: "Admitted connections now open, by transport and role.",
		}, []string{"transport", "role"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_closed_total",
			Help: "Admitted connections that ended, by reason.",
		}, []string{"reason"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "tool_calls_total",
			Help: "Tool calls by tool and outcome (ok, error, denied); unknown tool names count as other.",
		}, []string{"tool", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "tool_call_duration_seconds",
			Help:    "Tool call latency inside the gateway, by tool.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"tool"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.handshakes, m.open, m.closed, m.calls, m.latency,
		&scrapeTime{m},
	)
	if opts.Stale != nil {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "revocation_store_stale",
			Help: "1 while the gateway cannot confirm its revocation view is current and refuses new handshakes, else 0.",
		}, func() float64 {
			if opts.Stale() {
				return 1
			}
			return 0
		}))
	}
	if opts.AuditFailures != nil {
		m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "audit_write_failures_total",
			Help: "Audit records that could not be written since start.",
		}, func() float64 { return float64(opts.AuditFailures()) }))
	}
	return m
}

// Handler serves the exposition format (text, or protobuf when asked).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the registry the instruments live on, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Connection implements observe.Observer.
func (m *Metrics) Connection(e observe.ConnEvent) {
	switch e.Kind {
	case observe.ConnRefused:
		m.handshakes.WithLabelValues("refused", m.reason(e.Reason)).Inc()
	case observe.ConnOpened:
		m.handshakes.WithLabelValues("ok", "").Inc()
		m.open.WithLabelValues(transport(e), role(e)).Inc()
	case observe.ConnClosed:
		m.open.WithLabelValues(transport(e), role(e)).Dec()
		m.closed.WithLabelValues(m.reason(e.Reason)).Inc()
	}
}

// Call implements observe.Observer.
func (m *Metrics) Call(e observe.CallEvent) {
	tool := Other
	if m.opts.KnownTool != nil && len(e.Tool) <= maxLabelLength && m.opts.KnownTool(e.Tool) {
		tool = e.Tool
	}
	outcome := e.Outcome
	switch outcome {
	case "ok", "error", "denied":
	default:
		outcome = Other
	}
	m.calls.WithLabelValues(tool, outcome).Inc()
	m.latency.WithLabelValues(tool).Observe(e.Duration.Seconds())
}

// reason bounds a reason label: clipped, and folded into Other once
// maxReasons distinct values have been seen.
func (m *Metrics) reason(r string) string {
	if len(r) > maxLabelLength {
		r = r[:maxLabelLength]
	}
	m.reasonsMu.Lock()
	defer m.reasonsMu.Unlock()
	if _, ok := m.reasons[r]; ok {
		return r
	}
	if len(m.reasons) >= maxReasons {
		return Other
	}
	m.reasons[r] = struct{}{}
	return r
}

func transport(e observe.ConnEvent) string {
	if e.Agent != nil && e.Agent.Transport != "" {
		return e.Agent.Transport
	}
	return e.Transport
}

func role(e observe.ConnEvent) string {
	if e.Agent == nil {
		return ""
	}
	return string(e.Agent.Role)
}
