package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Upstream is one entry of mcp.upstreams: an MCP server started as a
// command (stdio) or reached at a Streamable HTTP URL, whose tools the
// gateway serves as <Name>.<tool>.
type Upstream struct {
	// Name prefixes the upstream's tools; it is the audience of the
	// identity assertions sent to it.
	Name string `yaml:"name"`
	// Command is the program and its arguments, run without a shell.
	Command []string `yaml:"command"`
	// Env is added to the environment the command inherits, which is
	// only a few variables of nefia's own (PATH, HOME and the like; see
	// upstream.commandEnv): anything else it needs is set here, or named
	// in InheritEnv.
	Env map[string]string `yaml:"env"`
	// InheritEnv names more variables of nefia's own environment the
	// command inherits (a token or a proxy it needs), so that a secret
	// need not be written in nefia.yaml to reach it.
	InheritEnv []string `yaml:"inherit_env"`
	// URL is a Streamable HTTP endpoint: https, or http on a loopback
	// address only, so that identities and headers never cross a network
	// in clear text.
	URL string `yaml:"url"`
	// HeadersFile holds "Name: value" lines sent with every HTTP request
	// (tokens): secrets live in a file, never in nefia.yaml.
	HeadersFile string `yaml:"headers_file"`
	// CAFile, CertFile and KeyFile configure TLS to an https upstream: the
	// CA that signs its certificate (empty: the system roots) and a client
	// certificate for mutual TLS (both or neither).
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CallTimeout bounds each forwarded call; 0 means
	// DefaultUpstreamCallTimeout.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// Session is shared (one upstream session for every caller, the
	// default) or per_client: one upstream session (for a command, one
	// process) per client session, for stateful servers, started at the
	// client's first call and closed when its session ends.
	Session string `yaml:"session"`
	// MaxSessions caps the per_client sessions open at once; a client
	// beyond it gets a tool error. 0 means DefaultUpstreamMaxSessions.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerClient caps the per_client sessions one client
	// certificate holds at once, so that one certificate cannot take every
	// one of max_sessions. 0 means DefaultUpstreamMaxSessionsPerClient (or
	// max_sessions, if lower).
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
}

// Upstream defaults and names.
const (
	// DefaultUpstreamCallTimeout is the call_timeout of an entry without one.
	DefaultUpstreamCallTimeout = 60 * time.Second
	// SessionShared shares one upstream session between all callers.
	SessionShared = "shared"
	// SessionPerClient starts one upstream session per client session.
	SessionPerClient = "per_client"
	// DefaultUpstreamMaxSessions is the max_sessions of a per_client entry
	// without one: enough for a team's agents, few enough processes.
	DefaultUpstreamMaxSessions = 16
	// DefaultUpstreamMaxSessionsPerClient is the max_sessions_per_client of
	// a per_client entry without one: a few sessions (an agent's bridge,
	// a reconnect) per certificate, a quarter of the default max_sessions.
	DefaultUpstreamMaxSessionsPerClient = 4
	// MaxUpstreamMaxSessions bounds max_sessions.
	MaxUpstreamMaxSessions = 1000
	// ReservedUpstreamName is the prefix of nefia's own tools.
	ReservedUpstreamName = "nefia"
)

// Timeout returns the call timeout to use: CallTimeout, or the default.
func (u Upstream) Timeout() time.Duration {
	if u.CallTimeout == 0 {
		return DefaultUpstreamCallTimeout
	}
	return u.CallTimeout
}

// SessionCap returns the cap of per_client sessions: MaxSessions, or the
// default.
func (u Upstream) SessionCap() int {
	if u.MaxSessions == 0 {
		return DefaultUpstreamMaxSessions
	}
	return u.MaxSessions
}

// ClientSessionCap returns the cap of per_client sessions of one client
// certificate: MaxSessionsPerClient, or the default capped by SessionCap.
func (u Upstream) ClientSessionCap() int {
	if u.MaxSessionsPerClient == 0 {
		return min(DefaultUpstreamMaxSessionsPerClient, u.SessionCap())
	}
	return u.MaxSessionsPerClient
}

// upstreamName is what can prefix a tool name: lowercase, short, without
// the dot that separates it from the tool.
var upstreamName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// checkUpstreams reports every problem of every entry, naming it by index
// (mcp.upstreams[1].url) so that the user finds the entry to fix.
func checkUpstreams(key string, ups []Upstream) []error {
	var errs []error
	seen := map[string]int{}
	for i, u := range ups {
		at := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case !upstreamName.MatchString(u.Name):
			errs = append(errs, invalid(at+".name", "must match [a-z][a-z0-9_-]{0,31}, got %q", u.Name))
		case u.Name == ReservedUpstreamName:
			errs = append(errs, invalid(at+".name", "%q is reserved for nefia's own tools", u.Name))
		default:
			if j, dup := seen[u.Name]; dup {
				errs = append(errs, invalid(at+".name", "%q is already the name of %s[%d]", u.Name, key, j))
			}
			seen[u.Name] = i
		}
		switch {
		case len(u.Command) > 0 && u.URL != "":
			errs = append(errs, invalid(at, "has both command and url; give exactly one"))
		case len(u.Command) == 0 && u.URL == "":
			errs = append(errs, invalid(at, "needs command (a stdio server) or url (Streamable HTTP)"))
		case len(u.Command) > 0:
			if u.Command[0] == "" {
				errs = append(errs, invalid(at+".command", "the program (first element) must not be empty"))
			}
			for k := range u.Env {
				if !envName(k) {
					errs = append(errs, invalid(at+".env", "%q is not an environment variable name", k))
				}
			}
			for _, k := range u.InheritEnv {
				if !envName(k) {
					errs = append(errs, invalid(at+".inherit_env", "%q is not an environment variable name", k))
				}
			}
			for _, k := range []struct{ key, v string }{{"headers_file", u.HeadersFile}, {"ca_file", u.CAFile}, {"cert_file", u.CertFile}, {"key_file", u.KeyFile}} {
				if k.v != "" {
					errs = append(errs, invalid(at+"."+k.key, "applies to url upstreams only"))
				}
			}
		default:
			if err := checkUpstreamURL(at+".url", u.URL); err != nil {
				errs = append(errs, err)
			}
			if len(u.Env) > 0 {
				errs = append(errs, invalid(at+".env", "applies to command upstreams only"))
			}
			if len(u.InheritEnv) > 0 {
				errs = append(errs, invalid(at+".inherit_env", "applies to command upstreams only"))
			}
		}
		if (u.CertFile == "") != (u.KeyFile == "") {
			errs = append(errs, invalid(at+".key_file", "cert_file and key_file go together; give both or neither"))
		}
		for _, p := range []struct{ key, v string }{{"headers_file", u.HeadersFile}, {"ca_file", u.CAFile}, {"cert_file", u.CertFile}, {"key_file", u.KeyFile}} {
			if err := checkPath(at+"."+p.key, p.v); err != nil {
				errs = append(errs, err)
			}
		}
		if u.CallTimeout != 0 {
			if err := checkDuration(at+".call_timeout", u.CallTimeout, 100*time.Millisecond, time.Hour); err != nil {
				errs = append(errs, err)
			}
		}
		switch u.Session {
		case "", SessionShared:
		case SessionPerClient:
			if u.MaxSessions != 0 {
				if err := checkRange(at+".max_sessions", u.MaxSessions, 1, MaxUpstreamMaxSessions); err != nil {
					errs = append(errs, err)
				}
			}
		default:
			errs = append(errs, invalid(at+".session", "must be shared or per_client, got %q", u.Session))
		}
		if u.MaxSessions != 0 && u.Session != SessionPerClient {
			errs = append(errs, invalid(at+".max_sessions", "applies to session: per_client only"))
		}
		switch {
		case u.MaxSessionsPerClient == 0:
		case u.Session != SessionPerClient:
			errs = append(errs, invalid(at+".max_sessions_per_client", "applies to session: per_client only"))
		case u.MaxSessionsPerClient < 1 || u.MaxSessionsPerClient > u.SessionCap():
			errs = append(errs, invalid(at+".max_sessions_per_client", "must be between 1 and max_sessions (%d), got %d", u.SessionCap(), u.MaxSessionsPerClient))
		}
	}
	return errs
}

// checkUpstreamURL wants https, or http to a loopback address: the agent's
// identity and the headers file's secrets are sent with every request.
func checkUpstreamURL(key, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return invalid(key, "must be an absolute URL such as https://tools.internal:8443/mcp, got %q", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return invalid(key, "http is allowed on loopback only (127.0.0.1, ::1, localhost); use https for %q", u.Host)
	}
	return invalid(key, "scheme must be https (or http on loopback), got %q", u.Scheme)
}

// envName reports whether k can name an environment variable (of env: or
// inherit_env:): not empty, and neither "=" nor NUL, which would end it.
func envName(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00")
}
