package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/goccy/go-yaml/parser"

	"github.com/nefia/nefia/config"
)

// FuzzLoad feeds arbitrary bytes to Load as nefia.yaml. It must not panic;
// it must refuse with one of the content errors (ErrMalformed, ErrUnknownKey,
// ErrVersion, ErrInvalid) or return a configuration that validates. And a
// file it accepts must stay editable: Set of a valid value succeeds, changes
// that key alone, and leaves a file that still loads.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	edits := []struct {
		key   string
		value any
		apply func(*config.Config)
	}{
		{"mcp.mtls.enabled", true, func(c *config.Config) { c.MCP.MTLS.Enabled = true }},
		{"mcp.mtls.max_connections", "7", func(c *config.Config) { c.MCP.MTLS.MaxConnections = 7 }},
		{"mcp.mtls.listen_addr", "127.0.0.1:1", func(c *config.Config) { c.MCP.MTLS.ListenAddr = "127.0.0.1:1" }},
		{"audit.max_size_mb", 3, func(c *config.Config) { c.Audit.MaxSizeMB = 3 }},
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "nefia.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		loaded, err := config.Load(path)
		if err != nil {
			if !errors.Is(err, config.ErrMalformed) && !errors.Is(err, config.ErrUnknownKey) &&
				!errors.Is(err, config.ErrVersion) && !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("Load = %v, not a content error", err)
			}
			return
		}
		if !loaded.Exists || loaded.Path != path {
			t.Fatalf("Load = %+v", loaded)
		}
		if err := loaded.Validate(); err != nil {
			t.Fatalf("Load returned a configuration that does not validate: %v", err)
		}

		e := edits[len(data)%len(edits)]
		if err := config.Set(path, e.key, e.value); err != nil {
			// Where the edit cannot be spliced into the text, Set re-renders
			// the syntax tree and refuses if the result would not load.
			// goccy/go-yaml cannot render everything it parses (it accepts
			// "key: |+1  0"), so a refusal is fair for a file whose own
			// rendering does not load as it did; otherwise it is a bug.
			if now, _ := os.ReadFile(path); !bytes.Equal(now, data) {
				t.Fatalf("Set(%s) failed (%v) but changed the file:\n%s", e.key, err, now)
			}
			if renders(t, dir, data, loaded.Config) {
				t.Fatalf("Set(%s) on a file that loads: %v\nfile:\n%s", e.key, err, data)
			}
			return
		}
		after, err := config.Load(path)
		if err != nil {
			edited, _ := os.ReadFile(path)
			t.Fatalf("after Set(%s) the file no longer loads: %v\nbefore:\n%s\nafter:\n%s", e.key, err, data, edited)
		}
		want := loaded.Config
		e.apply(&want)
		if !reflect.DeepEqual(after.Config, want) {
			t.Fatalf("Set(%s) changed more than that key:\nbefore %+v\nafter  %+v", e.key, loaded.Config, after.Config)
		}
	})
}

// renders reports whether the YAML printer reproduces data faithfully enough
// that the rendering loads as cfg.
func renders(t *testing.T, dir string, data []byte, cfg config.Config) bool {
	t.Helper()
	f, err := parser.ParseBytes(data, parser.ParseComments)
	if err != nil {
		return false
	}
	path := filepath.Join(dir, "rendered.yaml")
	if err := os.WriteFile(path, []byte(f.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(path)
	return err == nil && reflect.DeepEqual(loaded.Config, cfg)
}
