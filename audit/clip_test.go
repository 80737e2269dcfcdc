package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

// TestEveryPeerFieldIsClipped puts 1 MB of `<` (six bytes each once
// escaped) into each string field a peer can reach, one at a time and all
// at once: every record must stay under audit.MaxRecordBytes, say it was
// clipped, and verify.
func TestEveryPeerFieldIsClipped(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("<", 1<<20)
	tests := []struct {
		name string
		set  func(r *audit.Record)
	}{
		{"tool", func(r *audit.Record) { r.Tool = huge }},
		{"agent name", func(r *audit.Record) { r.Agent = &audit.Agent{Name: huge} }},
		{"agent serial", func(r *audit.Record) { r.Agent = &audit.Agent{Serial: huge} }},
		{"session id", func(r *audit.Record) { r.SessionID = huge }},
		{"remote addr", func(r *audit.Record) { r.RemoteAddr = huge }},
		{"transport", func(r *audit.Record) { r.Transport = huge }},
		{"error", func(r *audit.Record) { r.Error = huge }},
		{"reason", func(r *audit.Record) { r.Reason = huge }},
		{"args value, nested", func(r *audit.Record) {
			r.Args = map[string]any{"a": map[string]any{"b": []any{huge}}}
		}},
		{"args key", func(r *audit.Record) { r.Args = map[string]any{huge: 1} }},
		{"many args", func(r *audit.Record) {
			r.Args = map[string]any{}
			for i := range 200 {
				r.Args[strings.Repeat("k", i+1)] = strings.Repeat("<", 1000)
			}
		}},
		{"result", func(r *audit.Record) { r.Result = map[string]any{"x": huge} }},
		{"everything", func(r *audit.Record) {
			r.Tool, r.SessionID, r.RemoteAddr, r.Transport, r.Error, r.Reason = huge, huge, huge, huge, huge, huge
			r.Agent = &audit.Agent{Name: huge, Serial: huge, Role: huge}
			r.Args = map[string]any{"a": huge, "b": huge}
			r.Result = map[string]any{"a": huge}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "audit")
			l := open(t, dir, audit.Options{})
			r := audit.Record{Event: audit.EventToolCall, Outcome: audit.OutcomeError}
			tt.set(&r)
			if err := l.Append(r, true); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, audit.TrailFile))
			if err != nil {
				t.Fatal(err)
			}
			line := bytes.TrimSuffix(data, []byte("\n"))
			if len(line) > audit.MaxRecordBytes {
				t.Errorf("record is %d bytes; the cap is %d", len(line), audit.MaxRecordBytes)
			}
			if !bytes.Contains(line, []byte("[clipped ")) && !bytes.Contains(line, []byte(`"_omitted"`)) {
				t.Errorf("record does not say it was clipped: %.300s", line)
			}
			if n, err := verify(t, dir); err != nil || n != 1 {
				t.Errorf("verify = %d, %v", n, err)
			}
		})
	}
}

func TestClip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"short", "abc", 3, "abc"},
		{"cut", "abcdef", 2, "ab…[clipped 4 bytes]"},
		{"rune boundary", "aé", 2, "a…[clipped 2 bytes]"},
	}
	for _, tt := range tests {
		if got := audit.Clip(tt.in, tt.max); got != tt.want {
			t.Errorf("%s: Clip(%q, %d) = %q, want %q", tt.name, tt.in, tt.max, got, tt.want)
		}
	}
}
