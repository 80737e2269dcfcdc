package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nefia/nefia/config"
)

// TestReload: for a running process a missing file or one without keys is
// ErrNoConfig, not the defaults Load gives at start; a file that loads is
// read as Load reads it, and one that does not is Load's error.
func TestReload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content *string // nil: no file
		want    error   // nil: loads
	}{
		{"missing", nil, config.ErrNoConfig},
		{"empty", ptr(""), config.ErrNoConfig},
		{"blank lines", ptr("\n\n  \n"), config.ErrNoConfig},
		{"comments only", ptr("# rewriting\n---\n"), config.ErrNoConfig},
		{"valid", ptr("version: 1\nmcp:\n  policy: []\n"), nil},
		{"malformed", ptr("version: 1\nmcp: [broken\n"), config.ErrMalformed},
		{"no version", ptr("mcp: {}\n"), config.ErrVersion},
		// Keys after a first-line comment, on lines YAML breaks and a
		// split on "\n" does not (from an attack review of Reload: before,
		// every reload of this file was refused as holding no keys).
		{"CR line ends", ptr("# nefia\rversion: 1\rmcp:\r  policy:\r    - match: {role: operator}\r      allow: [nefia.mtls.init]\r"), nil},
		// The parser keeps U+0085 and U+2028 inside a comment: Load reads
		// these as the defaults, so Reload refuses them.
		{"comment through NEL", ptr("# nefia\u0085version: 1\n"), config.ErrNoConfig},
		{"comment through LS", ptr("# nefia\u2028version: 1\n"), config.ErrNoConfig},
		{"comments on CR lines", ptr("# one\r# two\r"), config.ErrNoConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "nefia.yaml")
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := config.Reload(path)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Reload = %v, want %v", err, tt.want)
			}
			if err == nil && (!got.Exists || got.Path != path) {
				t.Fatalf("Reload = %+v, want the file's configuration", got)
			}
			if tt.want == config.ErrNoConfig {
				// At start the same file means the defaults.
				if _, err := config.Load(path); err != nil {
					t.Fatalf("Load of the same file: %v, want the defaults", err)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }
