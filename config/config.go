package config

import (
	"errors"
	"fmt"
	"net"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// CurrentVersion is the only schema version this build understands. A file
// with another version is refused rather than half-understood.
const CurrentVersion = 1

// Config is the contents of nefia.yaml.
//
// Adding a key takes three lines: a field with a yaml tag here (unknown-key
// checks and Set find fields by tag, so every field needs one), its default in
// Default, and its check in Validate. A bool whose default is true must be a
// *bool, because ApplyDefaults cannot tell an explicit false from a missing
// one.
type Config struct {
	Version int   `yaml:"version"`
	MCP     MCP   `yaml:"mcp"`
	Audit   Audit `yaml:"audit"`
}

// Audit configures the audit trail (<state dir>/audit/audit.jsonl).
type Audit struct {
	// MaxSizeMB is the size at which the trail is rotated; the hash chain
	// continues into the new file.
	MaxSizeMB int `yaml:"max_size_mb"`
	// MaxFiles is how many rotated trail files are kept; the oldest beyond
	// it are removed after a rotation. 0 keeps all of them.
	MaxFiles int `yaml:"max_files"`
}

// MCP configures the MCP server.
type MCP struct {
	MTLS    MTLS    `yaml:"mtls"`
	Metrics Metrics `yaml:"metrics"`
	// ClientsDir is the only directory under which the issue_client tool
	// writes bundles (its out_dir must lie inside); empty means
	// <state dir>/clients. The CLI's --out-dir is not limited by it.
	ClientsDir string `yaml:"clients_dir"`
	// Policy is the authorization policy (package policy): which tools each
	// caller may list and call, by role and certificate name. Absent or
	// empty means the built-in default (operators everything, agents
	// nefia.mtls.status); a non-empty list replaces it entirely.
	Policy []PolicyRule `yaml:"policy"`
	// Upstreams are the MCP servers the gateway fronts (package upstream):
	// their tools are served as <name>.<tool> under the same policy.
	Upstreams []Upstream `yaml:"upstreams"`
	// GatewayID names this gateway in audit records and logs, so the
	// trails of several gateways sharing one store can be told apart;
	// empty means the host name (see GatewayIDOrHost).
	GatewayID string `yaml:"gateway_id"`
}

// PolicyRule is one entry of mcp.policy: the callers it matches may use the
// tools its Allow globs match.
type PolicyRule struct {
	Match PolicyMatch `yaml:"match"`
	Allow []string    `yaml:"allow"`
}

// PolicyMatch selects callers; every field given must match, and at least
// one must be given.
type PolicyMatch struct {
	// Role is agent or operator, compared exactly with the certificate's.
	Role string `yaml:"role"`
	// Name is a path.Match glob over the certificate name (CN).
	Name string `yaml:"name"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// ListenAddr is where /metrics is served, on a plain HTTP listener of
	// its own; empty (the default) serves no metrics. It must name a host:
	// 127.0.0.1:9090 keeps it on this machine, 0.0.0.0:9090 exposes it.
	ListenAddr string `yaml:"listen_addr"`
}

// MTLS configures the mutual-TLS listener. Empty certificate paths mean the
// files of the same name in the state directory, which the CLI resolves
// because only it knows the state directory.
type MTLS struct {
	Enabled        bool   `yaml:"enabled"`
	ListenAddr     string `yaml:"listen_addr"`
	CACertFile     string `yaml:"ca_cert_file"`
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	MaxConnections int    `yaml:"max_connections"`
	// MaxConnectionsPerClient caps the connections one certificate (by
	// serial) may hold at once, so one agent cannot take every slot. Above
	// MaxConnections it is the same as MaxConnections.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// OperatorReserve is how many of MaxConnections only operator
	// certificates may use, so an operator can always get in to revoke an
	// abuser. The gateway uses at most MaxConnections-1 of it, so a
	// one-slot gateway still admits someone.
	OperatorReserve int `yaml:"operator_reserve"`
	// IdleTimeout ends a raw session that has sent nothing for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AllowedOrigins lists the Origin header values the Streamable HTTP
	// transport accepts besides the gateway's own host (the MCP
	// specification requires servers to validate Origin).
	AllowedOrigins []string `yaml:"allowed_origins"`
	// ClientMaxDuration caps the lifetime of an issued client certificate,
	// for the CLI and the issue_client tool alike.
	ClientMaxDuration time.Duration `yaml:"client_max_duration"`
	// ExpiryWarning is how close to expiry an active client certificate
	// must be for status to list it as a problem (issue 13 item 4).
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
	// Store says where the inventory and the revocations live: files in
	// the state directory, or etcd shared by several gateways (issue 15).
	Store Store `yaml:"store"`
}

// Defaults for keys whose value is used outside this package too.
const (
	DefaultMaxConnectionsPerClient = 8
	DefaultOperatorReserve         = 2
	DefaultIdleTimeout             = 10 * time.Minute
	DefaultClientMaxDuration       = 90 * 24 * time.Hour
	// MinClientDuration is the shortest client certificate lifetime: a
	// shorter one would be expired, or nearly so, on arrival.
	MinClientDuration = time.Minute
	// DefaultExpiryWarning is mcp.mtls.expiry_warning's default: three
	// days' notice of a client certificate's expiry.
	DefaultExpiryWarning = 72 * time.Hour
)

// Default returns the configuration used when the file or a key is absent.
// The listener defaults to loopback so that enabling mTLS never exposes the
// server to the network by accident.
func Default() Config {
	return Config{
		Version: CurrentVersion,
		MCP: MCP{MTLS: MTLS{
			ListenAddr:              "127.0.0.1:19821",
			MaxConnections:          50,
			MaxConnectionsPerClient: DefaultMaxConnectionsPerClient,
			OperatorReserve:         DefaultOperatorReserve,
			IdleTimeout:             DefaultIdleTimeout,
			ClientMaxDuration:       DefaultClientMaxDuration,
			ExpiryWarning:           DefaultExpiryWarning,
			Store:                   Store{Backend: StoreFile, MaxStaleness: DefaultMaxStaleness},
		}},
		Audit: Audit{MaxSizeMB: 100},
	}
}

// ApplyDefaults sets every zero-valued field of c to its value in Default.
// It is for configurations built in code; Load does not need it, because it
// decodes the file on top of Default and a key written as 0 must stay 0 so
// that Validate can reject it.
func ApplyDefaults(c *Config) {
	fillZero(reflect.ValueOf(c).Elem(), reflect.ValueOf(Default()))
}

func fillZero(dst, def reflect.Value) {
	for i := range dst.NumField() {
		switch f := dst.Field(i); {
		case f.Kind() == reflect.Struct:
			fillZero(f, def.Field(i))
		case f.IsZero():
			f.Set(def.Field(i))
		}
	}
}

// Validate reports every problem with c, one error per key, joined with
// errors.Join. It never changes c: defaults are a separate step, so a value
// that validates is exactly the value that will be used.
func (c Config) Validate() error {
	m := c.MCP.MTLS
	var errs []error
	if c.Version != CurrentVersion {
		errs = append(errs, &keyError{"version", fmt.Sprintf("must be %d, got %d", CurrentVersion, c.Version), ErrVersion})
	}
	errs = append(errs,
		checkHostPort("mcp.mtls.listen_addr", m.ListenAddr),
		checkRange("mcp.mtls.max_connections", m.MaxConnections, 1, 10000),
		checkRange("mcp.mtls.max_connections_per_client", m.MaxConnectionsPerClient, 1, 10000),
		checkRange("mcp.mtls.operator_reserve", m.OperatorReserve, 0, 10000),
		checkDuration("mcp.mtls.idle_timeout", m.IdleTimeout, time.Second, 7*24*time.Hour),
		checkDuration("mcp.mtls.client_max_duration", m.ClientMaxDuration, MinClientDuration, 10*365*24*time.Hour),
		checkDuration("mcp.mtls.expiry_warning", m.ExpiryWarning, time.Minute, 365*24*time.Hour),
		checkOrigins("mcp.mtls.allowed_origins", m.AllowedOrigins),
		checkPath("mcp.mtls.ca_cert_file", m.CACertFile),
		checkPath("mcp.mtls.cert_file", m.CertFile),
		checkPath("mcp.mtls.key_file", m.KeyFile),
		checkPath("mcp.clients_dir", c.MCP.ClientsDir),
		checkMetricsAddr("mcp.metrics.listen_addr", c.MCP.Metrics.ListenAddr),
		checkRange("audit.max_size_mb", c.Audit.MaxSizeMB, 1, 1<<20),
		checkRange("audit.max_files", c.Audit.MaxFiles, 0, 1<<20),
	)
	errs = append(errs, checkStore("mcp.mtls.store", m.Store)...)
	errs = append(errs, checkGatewayID("mcp.gateway_id", c.MCP.GatewayID))
	errs = append(errs, checkPolicy("mcp.policy", c.MCP.Policy)...)
	errs = append(errs, checkUpstreams("mcp.upstreams", c.MCP.Upstreams)...)
	return errors.Join(errs...)
}

func invalid(key, format string, args ...any) error {
	return &keyError{key, fmt.Sprintf(format, args...), ErrInvalid}
}

func checkHostPort(key, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid(key, "must be host:port, got %q", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return invalid(key, "port must be a number from 0 to 65535, got %q", port)
	}
	return nil
}

// checkMetricsAddr allows the empty default (no metrics) and otherwise wants
// a host, so that all interfaces are never chosen by omission.
func checkMetricsAddr(key, addr string) error {
	if addr == "" {
		return nil
	}
	if err := checkHostPort(key, addr); err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(addr); host == "" {
		return invalid(key, "needs a host: 127.0.0.1%s for this machine only, 0.0.0.0%s to expose it, got %q", addr, addr, addr)
	}
	return nil
}

func checkRange(key string, v, lo, hi int) error {
	if v < lo || v > hi {
		return invalid(key, "must be between %d and %d, got %d", lo, hi, v)
	}
	return nil
}

func checkDuration(key string, v, lo, hi time.Duration) error {
	if v < lo || v > hi {
		return invalid(key, "must be between %s and %s, got %s", lo, hi, v)
	}
	return nil
}

// checkOrigins accepts scheme://host[:port] values, exactly as browsers send
// them in an Origin header, so a typo is an error at load time instead of a
// client that is refused with 403.
func checkOrigins(key string, origins []string) error {
	for _, o := range origins {
		scheme, hostport, ok := strings.Cut(o, "://")
		if !ok || (scheme != "https" && scheme != "http") || hostport == "" || strings.ContainsAny(hostport, "/?#@ ") {
			return invalid(key, "each entry must be an origin such as https://app.example.com:8443, got %q", o)
		}
	}
	return nil
}

// checkPolicy reports every problem of every rule, so that a policy that
// loads is one policy.New accepts: a malformed glob fails here, at load
// time, instead of silently matching nothing. The role names are
// pki.RoleAgent and pki.RoleOperator, spelled out because config imports
// no other nefia package.
func checkPolicy(key string, rules []PolicyRule) []error {
	var errs []error
	for i, r := range rules {
		at := fmt.Sprintf("%s[%d]", key, i)
		if r.Match.Role == "" && r.Match.Name == "" {
			errs = append(errs, invalid(at+".match", "needs role or name (or both); to match every caller of a role say role: agent or role: operator"))
		}
		if r.Match.Role != "" && r.Match.Role != "agent" && r.Match.Role != "operator" {
			errs = append(errs, invalid(at+".match.role", "must be agent or operator, got %q", r.Match.Role))
		}
		if r.Match.Name != "" {
			if _, err := path.Match(r.Match.Name, ""); err != nil {
				errs = append(errs, invalid(at+".match.name", "%q is not a valid glob (path.Match syntax)", r.Match.Name))
			}
		}
		if len(r.Allow) == 0 {
			errs = append(errs, invalid(at+".allow", "needs at least one tool name or glob"))
		}
		for j, p := range r.Allow {
			if _, err := path.Match(p, ""); p == "" || err != nil {
				errs = append(errs, invalid(fmt.Sprintf("%s.allow[%d]", at, j), "%q is not a valid tool name or glob (path.Match syntax)", p))
			}
		}
	}
	return errs
}

// checkPath rejects NUL because no OS accepts it in a path, and a path that
// cannot be opened should fail at load time rather than at server start.
// Relative paths are allowed and resolved by the caller.
func checkPath(key, p string) error {
	if strings.ContainsRune(p, 0) {
		return invalid(key, "must not contain a NUL byte")
	}
	return nil
}

// lookup finds the field for a dotted key such as "mcp.mtls.enabled" by yaml
// tag, so that the schema is defined once, by the struct.
func lookup(key string) (index []int, t reflect.Type, ok bool) {
	t = reflect.TypeFor[Config]()
	for _, name := range strings.Split(key, ".") {
		if t.Kind() != reflect.Struct {
			return nil, nil, false
		}
		f, ok := field(t, name)
		if !ok {
			return nil, nil, false
		}
		index, t = append(index, f.Index...), f.Type
	}
	return index, t, true
}

func field(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
