package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

// TestClippedSubjectKeepsDigestAndTail: padding a resource URI past the
// clip limit used to hide its target (only the head of tool, 256 bytes, and
// of args.uri, 1 KiB, was kept). A clipped tool, reason and argument now
// keep the tail and the SHA-256 of the whole string, and the record stays
// bounded (issue 12, attack item 2).
func TestClippedSubjectKeepsDigestAndTail(t *testing.T) {
	t.Parallel()
	uri := "file:///srv/shared/" + strings.Repeat("./", 4000) + "../../etc/shadow"
	subject := "docs.resource:" + uri
	dir := filepath.Join(t.TempDir(), "audit")
	l := open(t, dir, audit.Options{})
	r := audit.Record{Event: audit.EventToolCall, Outcome: audit.OutcomeDenied, Tool: subject,
		Reason: "refused: " + uri, Args: map[string]any{"uri": uri}}
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
	var got audit.Record
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, recorded, whole string
		limit                 int
	}{
		{"tool", got.Tool, subject, 512},
		{"reason", got.Reason, r.Reason, 2048},
		{"args.uri", got.Args["uri"].(string), uri, 2048},
	} {
		sum := sha256.Sum256([]byte(tc.whole))
		if !strings.HasSuffix(tc.recorded, "../../etc/shadow") {
			t.Errorf("%s: the tail is lost: …%q", tc.name, tc.recorded[max(0, len(tc.recorded)-40):])
		}
		if !strings.Contains(tc.recorded, hex.EncodeToString(sum[:])) {
			t.Errorf("%s: no digest of the whole string: %.200q", tc.name, tc.recorded)
		}
		if len(tc.recorded) > tc.limit {
			t.Errorf("%s: %d bytes recorded, want at most %d", tc.name, len(tc.recorded), tc.limit)
		}
	}
}
