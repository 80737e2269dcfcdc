package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const commented = `# nefia configuration
# (edited by hand)
version: 1

mcp:
  # mutual TLS for remote agents
  mtls:
    enabled: false # off until certs exist
    listen_addr: "127.0.0.1:19821"
    # CA from the state dir
    ca_cert_file: ''
    max_connections: 50 # per server
# end
`

func TestSet(t *testing.T) {
	tests := []struct {
		name    string
		initial string // "" with create means no file
		create  bool
		key     string
		value   any
		want    string
	}{
		{
			name: "keeps comments, alignment and order exactly",
			initial: `# nefia configuration
version: 1          # schema

mcp:
  # mutual TLS for remote agents


  mtls:
    listen_addr: 127.0.0.1:19821   # loopback only
    enabled:     false             # off until certs exist
    # the CA from the state dir
    ca_cert_file: ""
# end
`,
			key:   "mcp.mtls.enabled",
			value: true,
			want: `# nefia configuration
version: 1          # schema

mcp:
  # mutual TLS for remote agents


  mtls:
    listen_addr: 127.0.0.1:19821   # loopback only
    enabled:     true             # off until certs exist
    # the CA from the state dir
    ca_cert_file: ""
# end
`,
		},
		{
			name:    "keeps comments and order",
			initial: commented,
			key:     "mcp.mtls.enabled",
			value:   true,
			want:    strings.Replace(commented, "enabled: false #", "enabled: true #", 1),
		},
		{
			name:    "CRLF and non-ASCII before a comment",
			initial: "version: 1\r\nmcp:\r\n  mtls:\r\n    cert_file: \"/home/josé/s.crt\" # mine\r\n",
			key:     "mcp.mtls.cert_file",
			value:   "/srv/s.crt",
			want:    "version: 1\r\nmcp:\r\n  mtls:\r\n    cert_file: /srv/s.crt # mine\r\n",
		},
		{
			name:    "other integer type",
			initial: "version: 1\n",
			key:     "mcp.mtls.max_connections",
			value:   int64(64),
			want:    "version: 1\nmcp:\n  mtls:\n    max_connections: 64\n",
		},
		{
			name:    "value that needs quotes",
			initial: "version: 1\nmcp:\n  mtls:\n    key_file: a # k\n",
			key:     "mcp.mtls.key_file",
			value:   "#x",
			want:    "version: 1\nmcp:\n  mtls:\n    key_file: \"#x\" # k\n",
		},
		{
			name:    "tagged value is re-rendered",
			initial: "version: 1\nmcp:\n  mtls:\n    enabled: !!bool false  # t\n",
			key:     "mcp.mtls.enabled",
			value:   true,
			want:    "version: 1\nmcp:\n  mtls:\n    enabled: true # t\n",
		},
		{
			name:    "multi-line value is re-rendered",
			initial: "version: 1\nmcp:\n  mtls:\n    key_file: a\n      b\n    cert_file: c\n",
			key:     "mcp.mtls.key_file",
			value:   "/k",
			want:    "version: 1\nmcp:\n  mtls:\n    key_file: /k\n    cert_file: c\n",
		},
		{
			name:    "null value",
			initial: "version: 1\nmcp:\n  mtls:\n    listen_addr:\n",
			key:     "mcp.mtls.listen_addr",
			value:   ":1",
			want:    "version: 1\nmcp:\n  mtls:\n    listen_addr: :1\n",
		},
		{
			name:    "string value keeps other keys' quoting",
			initial: commented,
			key:     "mcp.mtls.ca_cert_file",
			value:   "/etc/nefia/ca.crt",
			want:    strings.Replace(commented, "ca_cert_file: ''", "ca_cert_file: /etc/nefia/ca.crt", 1),
		},
		{
			name:    "string from command line",
			initial: commented,
			key:     "mcp.mtls.max_connections",
			value:   "100",
			want:    strings.Replace(commented, "max_connections: 50 #", "max_connections: 100 #", 1),
		},
		{
			name:    "appends missing key at the section's indentation",
			initial: "version: 1\nmcp:\n    mtls:\n        enabled: true # on\n",
			key:     "mcp.mtls.key_file",
			value:   "/k",
			want:    "version: 1\nmcp:\n    mtls:\n        enabled: true # on\n        key_file: /k\n",
		},
		{
			name:    "insert keeps alignment elsewhere",
			initial: "version: 1     # v\nmcp:\n  mtls:\n    enabled: true   # on\n    # max_connections: 9\n\n\n# end\n",
			key:     "mcp.mtls.cert_file",
			value:   "/c",
			want:    "version: 1     # v\nmcp:\n  mtls:\n    enabled: true   # on\n    cert_file: /c\n    # max_connections: 9\n\n\n# end\n",
		},
		{
			name:    "insert with CRLF and no final newline",
			initial: "version: 1\r\nmcp:\r\n  mtls:\r\n    enabled: true",
			key:     "mcp.mtls.cert_file",
			value:   "/c",
			want:    "version: 1\r\nmcp:\r\n  mtls:\r\n    enabled: true\r\n    cert_file: /c\r\n",
		},
		{
			name:    "insert after a multi-line value is re-rendered",
			initial: "version: 1\nmcp:\n  mtls:\n    key_file: |\n      /k\n",
			key:     "mcp.mtls.cert_file",
			value:   "/c",
			want:    "version: 1\nmcp:\n  mtls:\n    key_file: |\n      /k\n    cert_file: /c\n",
		},
		{
			name:    "creates missing sections",
			initial: "# mine\nversion: 1 # schema\n",
			key:     "mcp.mtls.max_connections",
			value:   10,
			want:    "# mine\nversion: 1 # schema\nmcp:\n  mtls:\n    max_connections: 10\n",
		},
		{
			name:    "fills a null section",
			initial: "version: 1\nmcp: # later\n",
			key:     "mcp.mtls.enabled",
			value:   "true",
			want:    "version: 1\nmcp: # later\n  mtls:\n    enabled: true\n",
		},
		{
			name:    "flow mapping",
			initial: "version: 1\nmcp: {mtls: {enabled: true}}\n",
			key:     "mcp.mtls.listen_addr",
			value:   "[::1]:443",
			want:    "version: 1\nmcp: {mtls: {enabled: true, listen_addr: \"[::1]:443\"}}\n",
		},
		{
			name:    "comment-only file gets a version",
			initial: "# empty for now\n",
			key:     "mcp.mtls.enabled",
			value:   true,
			want:    "# empty for now\nversion: 1\nmcp:\n  mtls:\n    enabled: true\n",
		},
		{
			name:   "creates the file",
			create: true,
			key:    "mcp.mtls.enabled",
			value:  true,
			want:   "version: 1\nmcp:\n  mtls:\n    enabled: true\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "nefia.yaml")
			if !tt.create {
				path = writeFile(t, tt.initial)
			}
			if err := Set(path, tt.key, tt.value); err != nil {
				t.Fatalf("Set() error = %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("file after Set:\n%s\nwant:\n%s", got, tt.want)
			}
			if _, err := Load(path); err != nil {
				t.Errorf("Load() after Set: %v", err)
			}
		})
	}
}

func TestSetCreatesPrivateFileAndDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nefia")
	path := filepath.Join(dir, "nefia.yaml")
	if err := Set(path, "mcp.mtls.enabled", true); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o, want %o", p, got, want)
		}
	}
	l, err := Load(path)
	if err != nil || !l.MCP.MTLS.Enabled || !l.Exists {
		t.Errorf("Load() = %+v, %v; want enabled", l, err)
	}
}

func TestSetSameValueDoesNotRewrite(t *testing.T) {
	path := writeFile(t, commented)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Set(path, "mcp.mtls.max_connections", 50); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// An atomic write replaces the file, so the same file means no write.
	if !os.SameFile(before, after) {
		t.Error("Set of the current value rewrote the file")
	}
}

func TestSetKeepsMode(t *testing.T) {
	path := writeFile(t, "version: 1\n")
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Set(path, "mcp.mtls.enabled", true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o640 {
		t.Errorf("mode = %o, want 640", got)
	}
}

func TestSetRefuses(t *testing.T) {
	tests := []struct {
		name    string
		initial string
		key     string
		value   any
		is      error
		want    string
	}{
		{name: "corrupt file", initial: "version: 1\nmcp: [\n", key: "mcp.mtls.enabled", value: true, is: ErrMalformed, want: ":2:6:"},
		{name: "unknown key in file", initial: "version: 1\nmcp:\n  mtls:\n    listen_adr: x\n", key: "mcp.mtls.enabled", value: true, is: ErrUnknownKey, want: `"mcp.mtls.listen_adr"`},
		{name: "file without version", initial: "mcp: {}\n", key: "mcp.mtls.enabled", value: true, is: ErrVersion},
		{name: "unknown key", initial: commented, key: "mcp.mtls.listen_adr", value: "x", is: ErrUnknownKey, want: `unknown key "mcp.mtls.listen_adr"`},
		{name: "section", initial: commented, key: "mcp.mtls", value: "x", is: ErrUnknownKey},
		{name: "key below a leaf", initial: commented, key: "version.x", value: 1, is: ErrUnknownKey},
		{name: "wrong type", initial: commented, key: "mcp.mtls.enabled", value: "maybe", is: ErrInvalid, want: `config: mcp.mtls.enabled: cannot use "maybe" as bool`},
		{name: "empty string for int", initial: commented, key: "mcp.mtls.max_connections", value: "", is: ErrInvalid},
		{name: "int for string", initial: commented, key: "mcp.mtls.cert_file", value: 65, is: ErrInvalid},
		{name: "invalid result", initial: commented, key: "mcp.mtls.max_connections", value: 0, is: ErrInvalid, want: "mcp.mtls.max_connections: must be between 1 and 10000, got 0"},
		{name: "wrong version", initial: commented, key: "version", value: 2, is: ErrVersion},
		{name: "section is scalar", initial: "version: 1\nmcp: 3\n", key: "mcp.mtls.enabled", value: true, is: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.initial)
			err := Set(path, tt.key, tt.value)
			if err == nil {
				t.Fatal("Set() error = nil")
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Set() error = %v, want errors.Is %v and containing %q", err, tt.is, tt.want)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(tt.initial)) {
				t.Errorf("file changed after a refused Set:\n%s", got)
			}
		})
	}
}

// TestSetConcurrent runs Sets of different keys at once, with readers in
// between. Without the lock, writers that read the same old file overwrite
// each other's keys; without atomic writes, a reader sees a torn file.
func TestSetConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nefia.yaml")
	want := Default()
	want.MCP.MTLS = MTLS{
		MaxConnectionsPerClient: DefaultMaxConnectionsPerClient, OperatorReserve: DefaultOperatorReserve,
		IdleTimeout: DefaultIdleTimeout, ClientMaxDuration: DefaultClientMaxDuration, ExpiryWarning: DefaultExpiryWarning, Store: Store{Backend: StoreFile, MaxStaleness: DefaultMaxStaleness},
		Enabled:        true,
		ListenAddr:     "127.0.0.1:9000",
		CACertFile:     "/ca",
		CertFile:       "/cert",
		KeyFile:        "/key",
		MaxConnections: 99,
	}
	sets := []struct {
		key   string
		value any
	}{
		{"mcp.mtls.enabled", true},
		{"mcp.mtls.listen_addr", want.MCP.MTLS.ListenAddr},
		{"mcp.mtls.ca_cert_file", want.MCP.MTLS.CACertFile},
		{"mcp.mtls.cert_file", want.MCP.MTLS.CertFile},
		{"mcp.mtls.key_file", want.MCP.MTLS.KeyFile},
		{"mcp.mtls.max_connections", want.MCP.MTLS.MaxConnections},
	}
	const goroutines = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*goroutines)
	for i := range goroutines {
		s := sets[i%len(sets)]
		wg.Go(func() {
			if err := Set(path, s.key, s.value); err != nil {
				errs <- fmt.Errorf("Set(%s): %w", s.key, err)
			}
		})
		wg.Go(func() {
			if _, err := Load(path); err != nil {
				errs <- fmt.Errorf("concurrent Load: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config, want) {
		t.Errorf("after concurrent Sets: %+v, want %+v", got.Config, want)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "nefia.yaml" && e.Name() != "nefia.yaml.lock" {
			t.Errorf("stray file %s left behind", e.Name())
		}
	}
}
