package audit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

// TestScan (issue 14 item 2): Scan reads every record across rotations,
// oldest first; a torn last line (an append in progress) is skipped, a
// broken line anywhere else is an error.
func TestScan(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := open(t, dir, audit.Options{MaxSize: 2 << 10})
	appendN(t, l, 40, true)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl")); len(files) == 0 {
		t.Fatal("no rotation: the test needs several files")
	}
	count := func() (int, error) {
		var n int
		err := audit.Scan(dir, func(audit.Record) error { n++; return nil })
		return n, err
	}
	all, err := count()
	if err != nil || all < 40 {
		t.Fatalf("Scan: %d records, %v; want at least the 40 appended", all, err)
	}

	trail := filepath.Join(dir, audit.TrailFile)
	f, err := os.OpenFile(trail, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"torn","ev`)
	f.Close()
	if n, err := count(); err != nil || n != all {
		t.Fatalf("with a torn last line: %d records, %v; want %d and no error", n, err, all)
	}

	data, _ := os.ReadFile(trail)
	if err := os.WriteFile(trail, []byte("not json\n"+string(data)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := count(); err == nil || !strings.Contains(err.Error(), "not a record") {
		t.Fatalf("with a broken first line: %v; want an error", err)
	}
}
