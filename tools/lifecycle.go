package tools

import (
	"fmt"
	"net"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// lifecycleProblems are the certificate-lifecycle findings of the status
// report (issue 13): a listen address the server certificate does not
// cover.
func lifecycleProblems(store *pki.Store, cfg config.Loaded, st pki.Status) []string {
	var out []string
	if p := uncoveredListenHost(st.Server, cfg.MCP.MTLS.ListenAddr); p != "" {
		out = append(out, p)
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
