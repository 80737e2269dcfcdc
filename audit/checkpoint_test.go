package audit_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
)

func checkpoint(t *testing.T, dir string) *audit.Checkpoint {
	t.Helper()
	ck, err := audit.ReadCheckpoint(dir)
	if err != nil || ck == nil {
		t.Fatalf("checkpoint: %v, %v", ck, err)
	}
	return ck
}

// TestCheckpointFollowsEveryWrite: the checkpoint names the last record
// once a durable append returns, and a batch of non-durable ones once it is
// synced (at the latest by Close), across two writers and a restart.
func TestCheckpointFollowsEveryWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := open(t, dir, audit.Options{SyncInterval: time.Hour})
	b := open(t, dir, audit.Options{SyncInterval: time.Hour})
	head := func() string {
		recs, _ := audit.Tail(dir, 1)
		return recs[0].Hash
	}
	appendN(t, a, 3, true)
	appendN(t, b, 2, true)
	if ck := checkpoint(t, dir); ck.Count != 5 || ck.Hash != head() {
		t.Errorf("after durable appends: checkpoint %d %s, want 5 %s", ck.Count, ck.Hash, head())
	}
	appendN(t, a, 4, false)
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	appendN(t, b, 1, true) // b counts a's batch on from the checkpoint's offset
	if ck := checkpoint(t, dir); ck.Count != 10 || ck.Hash != head() {
		t.Errorf("after a batch and a durable append: checkpoint %d %s, want 10 %s", ck.Count, ck.Hash, head())
	}
	appendN(t, a, 2, false)
	a.Close()
	b.Close()
	if ck := checkpoint(t, dir); ck.Count != 12 || ck.Hash != head() {
		t.Errorf("after close: checkpoint %d %s, want 12 %s", ck.Count, ck.Hash, head())
	}
	if n, err := verify(t, dir); err != nil || n != 12 {
		t.Fatalf("verify = %d, %v", n, err)
	}
}

// TestMaxFilesKeepsTheTrailVerifiable: audit.max_files removes the oldest
// rotated files; the checkpoint counts their records, so the rest still
// verifies, while removing a kept file by hand does not.
func TestMaxFilesKeepsTheTrailVerifiable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := open(t, dir, audit.Options{MaxSize: 2 << 10, MaxFiles: 2})
	for range 60 {
		appendN(t, l, 1, false)
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rotated, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(rotated) != 2 {
		t.Fatalf("%d rotated files kept, want 2", len(rotated))
	}
	n, err := verify(t, dir)
	if err != nil || n >= 60 || n == 0 {
		t.Fatalf("verify = %d, %v; want the kept records, fewer than 60", n, err)
	}
	if ck := checkpoint(t, dir); ck.Count != 60 || ck.Removed != uint64(60-n) {
		t.Errorf("checkpoint count %d removed %d; want 60 and %d", ck.Count, ck.Removed, 60-n)
	}
	os.Remove(rotated[0])
	if _, err := verify(t, dir); !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("verify without the oldest kept file = %v, want a deletion", err)
	}
}

// TestTrailWithoutCheckpoint: a trail written before checkpoints existed (or
// whose checkpoint and key were removed) fails verify until a writer opens
// it; the writer anchors it and says so on the trail.
func TestTrailWithoutCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := open(t, dir, audit.Options{})
	appendN(t, l, 3, true)
	l.Close()
	os.Remove(filepath.Join(dir, audit.CheckpointFile))
	os.Remove(filepath.Join(dir, audit.CheckpointKeyFile))
	if _, err := verify(t, dir); !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("verify without a checkpoint = %v, want it refused", err)
	}
	l = open(t, dir, audit.Options{})
	l.Close()
	if n, err := verify(t, dir); err != nil || n != 4 {
		t.Fatalf("verify after a writer anchored it = %d, %v", n, err)
	}
	recs, _ := audit.Tail(dir, 1)
	if recs[0].Event != audit.EventCheckpointCreated || !strings.Contains(recs[0].Reason, "3 records") {
		t.Errorf("last record = %+v, want %s", recs[0], audit.EventCheckpointCreated)
	}
	// A checkpoint whose key is gone is refused, not replaced.
	os.Remove(filepath.Join(dir, audit.CheckpointKeyFile))
	if _, err := audit.Open(dir, audit.Options{}); !errors.Is(err, audit.ErrUnavailable) {
		t.Errorf("open without the checkpoint key = %v, want ErrUnavailable", err)
	}
}

// TestWriterRefusesATrailThatLostItsHead: continuing a trail whose newest
// records were deleted, or replaced by others chained with the key, would
// bury the change under new records: Open refuses, and so does verify.
func TestWriterRefusesATrailThatLostItsHead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   string
	}{
		{"newest 2 deleted", func(t *testing.T, dir string) {
			writeLines(t, dir, lines(t, dir)[:3])
		}, "2 of the newest were removed"},
		{"newest 2 replaced by 3 chained with the key", func(t *testing.T, dir string) {
			other := t.TempDir()
			for _, name := range []string{audit.KeyFile} { // the HMAC key only
				data, _ := os.ReadFile(filepath.Join(dir, name))
				os.WriteFile(filepath.Join(other, name), data, 0o600)
			}
			writeLines(t, other, lines(t, dir)[:3])
			l := open(t, other, audit.Options{}) // anchors it: a 4th record
			appendN(t, l, 2, true)
			l.Close()
			writeLines(t, dir, lines(t, other))
		}, "the trail was rewritten"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l := open(t, dir, audit.Options{})
			appendN(t, l, 5, true)
			l.Close()
			tt.tamper(t, dir)
			if _, err := audit.Open(dir, audit.Options{}); !errors.Is(err, audit.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("open = %v, want a refusal saying %q", err, tt.want)
			}
			if _, err := verify(t, dir); !errors.Is(err, audit.ErrBroken) {
				t.Errorf("verify = %v, want ErrBroken", err)
			}
		})
	}
}
