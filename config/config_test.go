package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	want := Config{Version: 1, MCP: MCP{MTLS: MTLS{
		Enabled:                 false,
		ListenAddr:              "127.0.0.1:19821",
		MaxConnections:          50,
		MaxConnectionsPerClient: 8,
		OperatorReserve:         2,
		IdleTimeout:             10 * time.Minute,
		ClientMaxDuration:       90 * 24 * time.Hour,
		ExpiryWarning:           72 * time.Hour,
		Store:                   Store{Backend: StoreFile, MaxStaleness: DefaultMaxStaleness},
	}}, Audit: Audit{MaxSizeMB: 100}}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() = %+v, want %+v", got, want)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestApplyDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{name: "zero", in: Config{}, want: Default()},
		{
			name: "keeps set values",
			in:   Config{MCP: MCP{MTLS: MTLS{Enabled: true, ListenAddr: ":1", CertFile: "c", MaxConnections: 7}}},
			want: Config{Version: 1, MCP: MCP{MTLS: MTLS{Enabled: true, ListenAddr: ":1", CertFile: "c", MaxConnections: 7,
				MaxConnectionsPerClient: 8, OperatorReserve: 2, IdleTimeout: 10 * time.Minute, ClientMaxDuration: 90 * 24 * time.Hour, ExpiryWarning: 72 * time.Hour, Store: Store{Backend: StoreFile, MaxStaleness: DefaultMaxStaleness}}}, Audit: Audit{MaxSizeMB: 100}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in
			ApplyDefaults(&got)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ApplyDefaults(%+v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // substrings, one per expected problem
		is     error
	}{
		{name: "defaults", modify: func(*Config) {}},
		{name: "ipv6 and port 0", modify: func(c *Config) { c.MCP.MTLS.ListenAddr = "[::1]:0" }},
		{name: "relative paths", modify: func(c *Config) { c.MCP.MTLS.CertFile = "certs/s.crt" }},
		{name: "version 0", modify: func(c *Config) { c.Version = 0 }, want: []string{"version: must be 1, got 0"}, is: ErrVersion},
		{name: "version 2", modify: func(c *Config) { c.Version = 2 }, want: []string{"version: must be 1, got 2"}, is: ErrVersion},
		{name: "no port", modify: func(c *Config) { c.MCP.MTLS.ListenAddr = "localhost" }, want: []string{`mcp.mtls.listen_addr: must be host:port, got "localhost"`}, is: ErrInvalid},
		{name: "empty addr", modify: func(c *Config) { c.MCP.MTLS.ListenAddr = "" }, want: []string{`mcp.mtls.listen_addr: must be host:port, got ""`}, is: ErrInvalid},
		{name: "port too big", modify: func(c *Config) { c.MCP.MTLS.ListenAddr = "127.0.0.1:65536" }, want: []string{`mcp.mtls.listen_addr: port must be a number from 0 to 65535, got "65536"`}, is: ErrInvalid},
		{name: "named port", modify: func(c *Config) { c.MCP.MTLS.ListenAddr = "127.0.0.1:https" }, want: []string{`got "https"`}, is: ErrInvalid},
		{name: "max_connections 0", modify: func(c *Config) { c.MCP.MTLS.MaxConnections = 0 }, want: []string{"mcp.mtls.max_connections: must be between 1 and 10000, got 0"}, is: ErrInvalid},
		{name: "per client 0", modify: func(c *Config) { c.MCP.MTLS.MaxConnectionsPerClient = 0 }, want: []string{"mcp.mtls.max_connections_per_client: must be between 1 and 10000, got 0"}, is: ErrInvalid},
		{name: "operator reserve negative", modify: func(c *Config) { c.MCP.MTLS.OperatorReserve = -1 }, want: []string{"mcp.mtls.operator_reserve: must be between 0 and 10000, got -1"}, is: ErrInvalid},
		{name: "idle timeout 0", modify: func(c *Config) { c.MCP.MTLS.IdleTimeout = 0 }, want: []string{"mcp.mtls.idle_timeout: must be between 1s and 168h0m0s, got 0s"}, is: ErrInvalid},
		{name: "client max duration 30s", modify: func(c *Config) { c.MCP.MTLS.ClientMaxDuration = 30 * time.Second }, want: []string{"mcp.mtls.client_max_duration: must be between 1m0s and"}, is: ErrInvalid},
		{name: "origin without scheme", modify: func(c *Config) { c.MCP.MTLS.AllowedOrigins = []string{"app.example.com"} }, want: []string{`mcp.mtls.allowed_origins: each entry must be an origin`}, is: ErrInvalid},
		{name: "origin with path", modify: func(c *Config) { c.MCP.MTLS.AllowedOrigins = []string{"https://a.example/x"} }, want: []string{`got "https://a.example/x"`}, is: ErrInvalid},
		{name: "audit max_files negative", modify: func(c *Config) { c.Audit.MaxFiles = -1 }, want: []string{"audit.max_files: must be between 0 and 1048576, got -1"}, is: ErrInvalid},
		{name: "metrics without host", modify: func(c *Config) { c.MCP.Metrics.ListenAddr = ":9090" }, want: []string{`mcp.metrics.listen_addr: needs a host: 127.0.0.1:9090 for this machine only`}, is: ErrInvalid},
		{name: "metrics not host:port", modify: func(c *Config) { c.MCP.Metrics.ListenAddr = "9090" }, want: []string{`mcp.metrics.listen_addr: must be host:port`}, is: ErrInvalid},
		{name: "max_connections 10001", modify: func(c *Config) { c.MCP.MTLS.MaxConnections = 10001 }, want: []string{"got 10001"}, is: ErrInvalid},
		{name: "NUL in ca_cert_file", modify: func(c *Config) { c.MCP.MTLS.CACertFile = "a\x00b" }, want: []string{"mcp.mtls.ca_cert_file: must not contain a NUL byte"}, is: ErrInvalid},
		{name: "NUL in cert_file", modify: func(c *Config) { c.MCP.MTLS.CertFile = "\x00" }, want: []string{"mcp.mtls.cert_file:"}, is: ErrInvalid},
		{name: "NUL in key_file", modify: func(c *Config) { c.MCP.MTLS.KeyFile = "\x00" }, want: []string{"mcp.mtls.key_file:"}, is: ErrInvalid},
		{name: "policy", modify: func(c *Config) { c.MCP.Policy = examplePolicy() }},
		{name: "policy rule without match", modify: func(c *Config) {
			c.MCP.Policy = []PolicyRule{{Allow: []string{"*"}}}
		}, want: []string{"mcp.policy[0].match: needs role or name"}, is: ErrInvalid},
		{name: "policy unknown role", modify: func(c *Config) {
			c.MCP.Policy = []PolicyRule{{Match: PolicyMatch{Role: "admin"}, Allow: []string{"*"}}}
		}, want: []string{`mcp.policy[0].match.role: must be agent or operator, got "admin"`}, is: ErrInvalid},
		{name: "policy malformed name glob", modify: func(c *Config) {
			c.MCP.Policy = []PolicyRule{{Match: PolicyMatch{Name: "ci-["}, Allow: []string{"*"}}}
		}, want: []string{`mcp.policy[0].match.name: "ci-[" is not a valid glob`}, is: ErrInvalid},
		{name: "policy without allow", modify: func(c *Config) {
			c.MCP.Policy = []PolicyRule{{Match: PolicyMatch{Role: "agent"}}}
		}, want: []string{"mcp.policy[0].allow: needs at least one"}, is: ErrInvalid},
		{name: "policy malformed and empty allow globs", modify: func(c *Config) {
			c.MCP.Policy = append(examplePolicy(), PolicyRule{Match: PolicyMatch{Role: "agent"}, Allow: []string{"ok", "fs.[read", ""}})
		}, want: []string{`mcp.policy[3].allow[1]: "fs.[read" is not a valid`, `mcp.policy[3].allow[2]: "" is not a valid`}, is: ErrInvalid},
		{
			name: "all problems reported",
			modify: func(c *Config) {
				c.Version = 3
				c.MCP.MTLS.ListenAddr = "x"
				c.MCP.MTLS.MaxConnections = -1
			},
			want: []string{"version:", "mcp.mtls.listen_addr:", "mcp.mtls.max_connections:"},
			is:   ErrVersion,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			before := c
			err := c.Validate()
			if !reflect.DeepEqual(c, before) {
				t.Errorf("Validate changed the config: %+v -> %+v", before, c)
			}
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			if lines := strings.Split(err.Error(), "\n"); len(lines) != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d: %v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
}

// TestFieldsHaveYAMLTags guards the schema walk: unknown-key detection and
// Set find fields by tag, so an untagged field would be unreachable.
func TestFieldsHaveYAMLTags(t *testing.T) {
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Tag.Get("yaml") == "" {
				t.Errorf("%s.%s has no yaml tag", typ.Name(), f.Name)
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				walk(f.Type.Elem())
			}
		}
	}
	walk(reflect.TypeFor[Config]())
}

// examplePolicy is the mcp.policy of the policy package's documentation.
func examplePolicy() []PolicyRule {
	return []PolicyRule{
		{Match: PolicyMatch{Role: "agent"}, Allow: []string{"nefia.mtls.status", "fs.read_*", "fs.list_*"}},
		{Match: PolicyMatch{Name: "ci-*"}, Allow: []string{"tickets.*"}},
		{Match: PolicyMatch{Role: "operator"}, Allow: []string{"*"}},
	}
}
