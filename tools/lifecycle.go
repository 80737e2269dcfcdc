package tools

import (
	"fmt"
	"net"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// maxExpiringListed bounds the client certificates named one by one in the
// report; the rest are counted.
const maxExpiringListed = 20

// lifecycleProblems are the certificate-lifecycle findings of the status
// report (issue 13): a listen address the server certificate does not
// cover, and active client certificates expiring within
// mcp.mtls.expiry_warning that nothing has renewed yet.
func lifecycleProblems(store *pki.Store, cfg config.Loaded, st pki.Status) []string {
	var out []string
	if p := uncoveredListenHost(st.Server, cfg.MCP.MTLS.ListenAddr); p != "" {
		out = append(out, p)
	}
	if st.ClientsError != "" {
		// The inventory could not be read a moment ago (etcd out of reach:
		// 5 s): reading it again would only double the wait, and Status
		// reports why already.
		return out
	}
	return append(out, expiringClients(store, cfg.MCP.MTLS.ExpiryWarning)...)
}

// expiringClients lists the active client certificates whose NotAfter is
// within window, except those an active renewal has replaced (their
// expiry is expected). A certificate shorter-lived than three windows is
// listed only in the last third of its life, when renewal (due at two
// thirds) is late: otherwise every default 24h certificate would be a
// problem from the moment it is issued. An unreadable inventory is
// reported by Status already.
func expiringClients(store *pki.Store, window time.Duration) []string {
	list, err := store.List()
	if err != nil || window <= 0 {
		return nil
	}
	renewed := map[string]bool{}
	for _, c := range list {
		if c.Renews != "" && c.State == pki.StateActive {
			renewed[c.Renews] = true
		}
	}
	now := store.Now()
	var out []string
	more := 0
	for _, c := range list {
		left := c.NotAfter.Sub(now)
		if c.State != pki.StateActive || left >= min(window, c.Lifetime()/3) || renewed[c.Serial] {
			continue
		}
		if len(out) == maxExpiringListed {
			more++
			continue
		}
		out = append(out, fmt.Sprintf("client certificate %q (%s, serial %s) expires in %s (%s); renew it (nefia mtls renew) or issue a new one",
			c.Name, c.Role, c.Serial, left.Round(time.Minute), c.NotAfter.UTC().Format(time.RFC3339)))
	}
	if more > 0 {
		out = append(out, fmt.Sprintf("%d more client certificates expire within %s (nefia mtls list shows them)", more, window))
	}
	return out
}

// uncoveredListenHost reports a listen address whose host is not among
// the server certificate's SANs: clients dialing it fail to verify the
// gateway. An unspecified host (0.0.0.0, ::) names no address to check.
func uncoveredListenHost(srv *pki.CertInfo, listenAddr string) string {
	if srv == nil {
		return ""
	}
	h, _, err := net.SplitHostPort(listenAddr)
	if err != nil || h == "" {
		return ""
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return ""
	}
	if pki.Covers(srv.SANs, h) {
		return ""
	}
	return fmt.Sprintf("the server certificate does not cover the listen address host %s (mcp.mtls.listen_addr); "+
		"clients dialing it cannot verify the gateway: run 'nefia mtls renew-server --hosts %s,...' with every name clients use", h, h)
}
