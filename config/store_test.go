package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreConfig: the mcp.mtls.store keys and mcp.gateway_id load from
// YAML, and every bad value is refused with an error naming its key path
// (issue 15 item 1).
func TestStoreConfig(t *testing.T) {
	t.Parallel()
	const head = "version: 1\nmcp:\n"
	tests := []struct {
		name  string
		yaml  string
		want  string // substring of the error; "" = loads
		check func(t *testing.T, c Config)
	}{
		{name: "defaults", yaml: head + "  mtls: {}\n", check: func(t *testing.T, c Config) {
			if c.MCP.MTLS.Store.Backend != StoreFile || c.MCP.MTLS.Store.MaxStaleness != 10*time.Second || c.MCP.MTLS.Store.Etcd.PrefixOrDefault() != "/nefia/" {
				t.Errorf("store defaults = %+v", c.MCP.MTLS.Store)
			}
			if c.MCP.GatewayIDOrHost() == "" {
				t.Error("GatewayIDOrHost is empty")
			}
		}},
		{name: "etcd full", yaml: head + "  gateway_id: gw-1\n  mtls:\n    store:\n      backend: etcd\n      max_staleness: 3s\n      etcd:\n        endpoints: [https://10.0.0.5:2379, https://10.0.0.6:2379]\n        prefix: /prod/nefia/\n        ca_file: /etc/etcd/ca.crt\n        cert_file: c.crt\n        key_file: c.key\n        auto_sync: true\n",
			check: func(t *testing.T, c Config) {
				s := c.MCP.MTLS.Store
				if s.Backend != StoreEtcd || s.MaxStaleness != 3*time.Second || len(s.Etcd.Endpoints) != 2 || s.Etcd.Prefix != "/prod/nefia/" || !s.Etcd.AutoSync || s.Etcd.KeyFile != "c.key" {
					t.Errorf("store = %+v", s)
				}
				if c.MCP.GatewayIDOrHost() != "gw-1" {
					t.Errorf("gateway id = %q", c.MCP.GatewayIDOrHost())
				}
			}},
		{name: "unknown backend", yaml: head + "  mtls:\n    store:\n      backend: consul\n", want: `mcp.mtls.store.backend: must be file or etcd, got "consul"`},
		{name: "etcd without endpoints", yaml: head + "  mtls:\n    store:\n      backend: etcd\n", want: "mcp.mtls.store.etcd.endpoints: the etcd backend needs at least one endpoint"},
		{name: "bad endpoint", yaml: head + "  mtls:\n    store:\n      backend: etcd\n      etcd:\n        endpoints: [10.0.0.5:2379]\n", want: `mcp.mtls.store.etcd.endpoints[0]: must be http://host:port or https://host:port`},
		{name: "http with tls files", yaml: head + "  mtls:\n    store:\n      backend: etcd\n      etcd:\n        endpoints: [http://10.0.0.5:2379]\n        ca_file: ca.crt\n", want: "mcp.mtls.store.etcd.endpoints[0]: is plain http while TLS files are set"},
		{name: "cert without key", yaml: head + "  mtls:\n    store:\n      etcd:\n        cert_file: c.crt\n", want: "mcp.mtls.store.etcd.key_file: cert_file and key_file go together"},
		{name: "prefix without slashes", yaml: head + "  mtls:\n    store:\n      etcd:\n        prefix: nefia\n", want: `mcp.mtls.store.etcd.prefix: must start and end with /`},
		{name: "staleness too short", yaml: head + "  mtls:\n    store:\n      max_staleness: 100ms\n", want: "mcp.mtls.store.max_staleness: must be between 500ms and 1h0m0s, got 100ms"},
		{name: "unknown etcd key", yaml: head + "  mtls:\n    store:\n      etcd:\n        endpoint: [http://a:1]\n", want: "endpoint"},
		{name: "gateway id with space", yaml: head + "  gateway_id: \"gw 1\"\n", want: `mcp.gateway_id: must not contain spaces`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "nefia.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Load(path)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tt.check(t, l.Config)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownKey) {
				t.Errorf("error %v is neither ErrInvalid nor ErrUnknownKey", err)
			}
		})
	}
}
