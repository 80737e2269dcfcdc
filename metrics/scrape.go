package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	expiryDesc = prometheus.NewDesc(Namespace+"_certificate_expiry_seconds",
		"Seconds until a certificate expires (negative once expired): the CA, the server certificate, and the soonest-expiring active client certificate.",
		[]string{"certificate"}, nil)
	storeAgeDesc = prometheus.NewDesc(Namespace+"_revocation_store_age_seconds",
		"Seconds since the gateway last confirmed its view of the revocation store is current.",
		nil, nil)
	revokedDesc = prometheus.NewDesc(Namespace+"_revoked_certificates",
		"Serials in the revocation store.",
		nil, nil)
)

// scrapeTime computes the gauges that depend on the moment of the scrape
// (seconds left, age), so they are exact when read rather than as of the
// last event.
type scrapeTime struct{ m *Metrics }

func (s *scrapeTime) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- storeAgeDesc
	ch <- revokedDesc
}

func (s *scrapeTime) Collect(ch chan<- prometheus.Metric) {
	o := s.m.opts
	now := o.Clock()
	if o.Expiry != nil {
		exp, err := o.Expiry()
		if err != nil {
			// The scrape shows the failure instead of stale figures.
			ch <- prometheus.NewInvalidMetric(expiryDesc, err)
		} else {
			for _, c := range []struct {
				label string
				at    time.Time
			}{{"ca", exp.CA}, {"server", exp.Server}, {"client_soonest", exp.SoonestClient}} {
				if !c.at.IsZero() {
					ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, c.at.Sub(now).Seconds(), c.label)
				}
			}
		}
	}
	if o.StoreAge != nil {
		if age, ok := o.StoreAge(); ok {
			ch <- prometheus.MustNewConstMetric(storeAgeDesc, prometheus.GaugeValue, age.Seconds())
		}
	}
	if o.Revoked != nil {
		ch <- prometheus.MustNewConstMetric(revokedDesc, prometheus.GaugeValue, float64(o.Revoked()))
	}
}
