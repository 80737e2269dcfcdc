package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCheckpointRemovedWhileOpen (review of issue 10): with a writer
// running, removing checkpoint.json and cutting the newest records used to
// be healed silently by the next append, which anchored the cut trail, so
// verify passed. The writer now refuses to go on, and a restart anchors the
// trail as found and says so on it.
func TestCheckpointRemovedWhileOpen(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{true, false} {
		dir := t.TempDir()
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := l.Append(Record{Event: EventRevoke, Outcome: OutcomeOK, Reason: "evidence"}, true); err != nil {
				t.Fatal(err)
			}
		}
		path := filepath.Join(dir, TrailFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.SplitAfter(data, []byte("\n"))
		keep := bytes.Join(lines[:len(lines)-3], nil) // the 2 newest records go
		if err := os.Remove(filepath.Join(dir, CheckpointFile)); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, int64(len(keep))); err != nil {
			t.Fatal(err)
		}
		err = l.Append(Record{Event: EventToolCall, Outcome: OutcomeOK}, durable)
		if err == nil {
			err = l.Flush()
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("durable=%v: writing on after the checkpoint vanished: %v, want ErrUnavailable", durable, err)
		}
		_ = l.Close()
		if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err == nil {
			t.Errorf("durable=%v: the checkpoint was re-created silently", durable)
		}
		l, err = Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
		out, _ := os.ReadFile(path)
		if !bytes.Contains(out, []byte(EventCheckpointCreated)) {
			t.Errorf("durable=%v: the restart anchored the trail without an %s record", durable, EventCheckpointCreated)
		}
	}
}
