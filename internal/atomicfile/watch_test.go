package atomicfile_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// watchOrSkip is NewWatch(paths...), skipping the test where the platform
// has no watch.
func watchOrSkip(t *testing.T, paths ...string) *atomicfile.Watch {
	t.Helper()
	w, err := atomicfile.NewWatch(paths...)
	if errors.Is(err, atomicfile.ErrWatchUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWatchSeesEveryChangeAtOnce: each way a watched file changes is
// reported by the very next Changed (no wait: the kernel queues the event in
// the system call), and a quiet directory reports nothing.
func TestWatchSeesEveryChangeAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, file, dir string)
	}{
		{"write in place", func(t *testing.T, file, _ string) {
			f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("x")
			f.Close()
		}},
		{"replace by rename", func(t *testing.T, file, _ string) {
			if err := atomicfile.WriteFile(file, []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"chmod", func(t *testing.T, file, _ string) { os.Chmod(file, 0o644) }},
		{"remove", func(t *testing.T, file, _ string) { os.Remove(file) }},
		{"new file in the directory", func(t *testing.T, _, dir string) {
			os.WriteFile(filepath.Join(dir, "other"), nil, 0o600)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := filepath.Join(dir, "f.json")
			if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			w := watchOrSkip(t, file, filepath.Join(dir, "missing.json"))
			if changed, err := w.Changed(); changed || err != nil {
				t.Fatalf("quiet directory: changed=%v, %v", changed, err)
			}
			tc.change(t, file, dir)
			if changed, err := w.Changed(); !changed || err != nil {
				t.Fatalf("after the change: changed=%v, %v", changed, err)
			}
			if changed, err := w.Changed(); changed || err != nil {
				t.Fatalf("second look: changed=%v, %v", changed, err)
			}
		})
	}
}

// TestWatchBreaksLoudly: a watched directory removed makes the watch report
// a change and an error from then on, and symlinks are refused up front.
func TestWatchBreaksLoudly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	w := watchOrSkip(t, filepath.Join(dir, "f"))
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if changed, err := w.Changed(); !changed || err == nil {
			t.Fatalf("after the directory moved: changed=%v, %v", changed, err)
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir+".old", link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, filepath.Join(link, "f")} {
		if _, err := atomicfile.NewWatch(p); err == nil {
			t.Errorf("NewWatch(%s): a symlink was accepted", p)
		}
	}
}

// TestWatchViewsShareOneWatch: every view of a shared watch learns of each
// change, whichever reads the kernel's queue first; after Close every view
// reports an error (its consumer stats from then on).
func TestWatchViewsShareOneWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "ca.crt")
	w := watchOrSkip(t, file)
	a, b := w.View(), w.View()
	if err := atomicfile.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*atomicfile.View{a, b} {
		if changed, err := v.Changed(); !changed || err != nil {
			t.Fatalf("a view missed the change: changed=%v, %v", changed, err)
		}
		if changed, err := v.Changed(); changed || err != nil {
			t.Fatalf("a view saw the change twice: changed=%v, %v", changed, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if changed, err := a.Changed(); !changed || err == nil {
		t.Fatalf("after Close: changed=%v, %v", changed, err)
	}
}

// TestWatchWaitBlocksUntilChange (issue 16 item 1): Wait parks until a
// change another process or goroutine makes, returns at once for a change
// made before it was called, honours its context, and returns the watch's
// error once it is closed, so a caller never waits on a dead watch.
func TestWatchWaitBlocksUntilChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "revoked.json")
	w := watchOrSkip(t, file)
	v := w.View()

	// Nothing changed: Wait times out with the context's error.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := v.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("quiet directory: Wait = %v, want the deadline", err)
	}

	// A change while waiting wakes it.
	woke := make(chan error, 1)
	go func() { woke <- v.Wait(t.Context()) }()
	if err := atomicfile.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Fatalf("Wait after a change: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after a change")
	}
	if changed, err := v.Changed(); !changed || err != nil {
		t.Fatalf("Changed after Wait: changed=%v, %v", changed, err)
	}

	// A change made before Wait (and read by another view) is not lost.
	other := w.View()
	if err := atomicfile.WriteFile(file, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, _ := other.Changed(); !changed {
		t.Fatal("the other view missed the change")
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	if err := v.Wait(ctx2); err != nil {
		t.Fatalf("Wait for a change made before it: %v", err)
	}
	v.Changed()

	// Close ends a waiting Wait with an error.
	go func() { woke <- v.Wait(t.Context()) }()
	time.AfterFunc(20*time.Millisecond, func() { w.Close() })
	select {
	case err := <-woke:
		if err == nil {
			t.Fatal("Wait on a closed watch returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if err := v.Wait(t.Context()); err == nil {
		t.Fatal("Wait after Close returned no error")
	}
}
