package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReloadWatch: the watch loop reloads on an edit made after the
// configuration was read but before watching began (upstreams starting),
// on SIGHUP even when the file is unchanged, and on an edit of the file
// without a signal; an unchanged file is not reloaded (issue 12 item 7).
func TestReloadWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nefia.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &reloader{path: path, log: slog.New(slog.DiscardHandler)}
	r.last, r.lastErr = r.version()
	// Edited while the upstreams start, before the loop runs.
	if err := os.WriteFile(path, []byte("version: 1\nmcp:\n  upstreams: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal)
	reloads := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.watch(ctx, 10*time.Millisecond, hup, func() { reloads <- struct{}{} })
	}()
	expect := func(what string) {
		t.Helper()
		select {
		case <-reloads:
		case <-time.After(10 * time.Second):
			t.Fatalf("no reload after %s", what)
		}
	}
	expect("an edit made before watching began")
	hup <- os.Interrupt // any signal value: the loop does not look at it
	expect("SIGHUP with the file unchanged")
	select {
	case <-reloads:
		t.Fatal("reloaded again with neither a signal nor an edit")
	case <-time.After(100 * time.Millisecond): // ten polls of an unchanged file
	}
	if err := os.WriteFile(path, []byte("version: 1\nmcp: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("an edit of the file")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	expect("the file's removal (which reload then refuses: config.Reload)")
	cancel()
	<-done
}
