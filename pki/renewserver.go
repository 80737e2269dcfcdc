package pki

import (
	"fmt"
	"net"
	"strings"
)

// RenewServer replaces the server certificate and key with new ones under
// the existing CA: hosts become the SANs, or the current certificate's SANs
// when hosts is empty. Clients keep trusting the gateway (same CA), and a
// running gateway's reloader picks the files up without dropping sessions.
// The key is written before the certificate (writePair): a reader that
// catches the pair in between sees a mismatch and keeps what it had.
func (s *Store) RenewServer(hosts []string) (CertInfo, error) {
	unlock, err := s.lock()
	if err != nil {
		return CertInfo{}, err
	}
	defer unlock()
	caCert, caKey, err := s.LoadCA()
	if err != nil {
		return CertInfo{}, err
	}
	if len(hosts) == 0 {
		cur, err := readCert(s.Path(ServerCertFile))
		if err != nil {
			return CertInfo{}, fmt.Errorf("read the current server certificate for its names (or give the hosts): %w", err)
		}
		hosts = DescribeCert(cur).SANs
		if len(hosts) == 0 {
			return CertInfo{}, fmt.Errorf("%w: the current server certificate names no host; give the hosts", ErrInvalidHost)
		}
	}
	dns, ips, err := parseHosts(hosts)
	if err != nil {
		return CertInfo{}, err
	}
	key, err := newKey()
	if err != nil {
		return CertInfo{}, err
	}
	cert, err := createServerCert(caCert, caKey, key, dns, ips, s.now())
	if err != nil {
		return CertInfo{}, err
	}
	if err := s.writePair(ServerCertFile, cert.Raw, ServerKeyFile, key); err != nil {
		return CertInfo{}, err
	}
	return DescribeCert(cert), nil
}

// WithListenHost returns hosts with the host of listenAddr added when it is
// a name or a specific address the hosts do not list already: clients dial
// the listen address, so the server certificate must cover it. An
// unspecified or empty host (0.0.0.0, ::) adds nothing.
func WithListenHost(hosts []string, listenAddr string) []string {
	h, _, err := net.SplitHostPort(listenAddr)
	if err != nil || h == "" {
		return hosts
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return hosts
	}
	if Covers(hosts, h) {
		return hosts
	}
	return append(append([]string(nil), hosts...), h)
}

// Covers reports whether a certificate with these SANs is valid for host
// (an IP address compared as an address, a name case-insensitively; no
// wildcards, which nefia never issues).
func Covers(sans []string, host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	ip := net.ParseIP(host)
	for _, s := range sans {
		if ip != nil {
			if sip := net.ParseIP(s); sip != nil && sip.Equal(ip) {
				return true
			}
			continue
		}
		if strings.EqualFold(strings.TrimSuffix(s, "."), strings.TrimSuffix(host, ".")) {
			return true
		}
	}
	return false
}
