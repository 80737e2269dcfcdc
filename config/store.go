package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"
)

// Store backends (mcp.mtls.store.backend).
const (
	// StoreFile keeps the inventory and the revocations in the state
	// directory: one gateway per state directory.
	StoreFile = "file"
	// StoreEtcd keeps them in etcd, shared by every gateway configured
	// with the same endpoints and prefix.
	StoreEtcd = "etcd"
)

// DefaultMaxStaleness is mcp.mtls.store.max_staleness's default: how long a
// gateway on etcd may go without confirming its revocation view is current
// before it refuses new handshakes.
const DefaultMaxStaleness = 10 * time.Second

// DefaultEtcdPrefix is mcp.mtls.store.etcd.prefix when none is given.
const DefaultEtcdPrefix = "/nefia/"

// Store is mcp.mtls.store: where the inventory and the revocation store
// live. The CA and server certificate files stay files either way.
type Store struct {
	// Backend is StoreFile (the default) or StoreEtcd.
	Backend string `yaml:"backend"`
	// Etcd is used when Backend is StoreEtcd.
	Etcd Etcd `yaml:"etcd"`
	// MaxStaleness is how long a gateway on etcd may go without confirming
	// that its in-memory revocation set is current; beyond it new
	// handshakes are refused (fail closed) until it has caught up.
	MaxStaleness time.Duration `yaml:"max_staleness"`
}

// Etcd is mcp.mtls.store.etcd: how to reach the etcd cluster.
type Etcd struct {
	// Endpoints are dialled exactly as given (proxies and load balancers
	// included): the client does not discover the members' own addresses
	// unless AutoSync is set.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix every nefia key lives under; empty means
	// DefaultEtcdPrefix.
	Prefix string `yaml:"prefix"`
	// CAFile, CertFile and KeyFile are the etcd client's TLS files: the CA
	// that signed etcd's server certificates, and this client's
	// certificate and key for etcd's client authentication.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// AutoSync lets the client replace Endpoints with the member list the
	// cluster reports; off by default, since it bypasses the operator's
	// proxies and load balancers.
	AutoSync bool `yaml:"auto_sync"`
}

// PrefixOrDefault returns Prefix, or DefaultEtcdPrefix when it is empty.
func (e Etcd) PrefixOrDefault() string {
	if e.Prefix == "" {
		return DefaultEtcdPrefix
	}
	return e.Prefix
}

// GatewayIDOrHost returns mcp.gateway_id, or the host name when it is
// empty ("unknown" if even that cannot be told), so audit records always
// say which gateway wrote them.
func (m MCP) GatewayIDOrHost() string {
	if m.GatewayID != "" {
		return m.GatewayID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "unknown"
}

// checkStore validates mcp.mtls.store; the etcd keys are checked only
// when the etcd backend is chosen, but then all of them, so one run names
// every problem.
func checkStore(key string, s Store) []error {
	var errs []error
	switch s.Backend {
	case StoreFile, StoreEtcd:
	default:
		errs = append(errs, invalid(key+".backend", "must be %s or %s, got %q", StoreFile, StoreEtcd, s.Backend))
	}
	errs = append(errs, checkDuration(key+".max_staleness", s.MaxStaleness, 500*time.Millisecond, time.Hour))
	e := s.Etcd
	errs = append(errs,
		checkPath(key+".etcd.ca_file", e.CAFile),
		checkPath(key+".etcd.cert_file", e.CertFile),
		checkPath(key+".etcd.key_file", e.KeyFile),
	)
	if (e.CertFile == "") != (e.KeyFile == "") {
		errs = append(errs, invalid(key+".etcd.key_file", "cert_file and key_file go together: set both or neither"))
	}
	if e.Prefix != "" && (!strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/")) {
		errs = append(errs, invalid(key+".etcd.prefix", "must start and end with /, such as /nefia/, got %q", e.Prefix))
	}
	if s.Backend != StoreEtcd {
		return errs
	}
	if len(e.Endpoints) == 0 {
		errs = append(errs, invalid(key+".etcd.endpoints", "the etcd backend needs at least one endpoint, such as https://10.0.0.5:2379"))
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			errs = append(errs, invalid(fmt.Sprintf("%s.etcd.endpoints[%d]", key, i), "must be http://host:port or https://host:port, got %q", ep))
			continue
		}
		if u.Scheme == "http" && (e.CAFile != "" || e.CertFile != "") {
			errs = append(errs, invalid(fmt.Sprintf("%s.etcd.endpoints[%d]", key, i), "is plain http while TLS files are set; use https://"))
		}
	}
	return errs
}

// checkGatewayID keeps the gateway id printable and short: it is written
// into every audit record and log line.
func checkGatewayID(key, id string) error {
	if len(id) > 128 {
		return invalid(key, "must be at most 128 bytes, got %d", len(id))
	}
	if strings.ContainsFunc(id, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return invalid(key, "must not contain spaces or control characters, got %q", id)
	}
	return nil
}
