package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "two" {
		t.Fatalf("contents %q (%v), want two", data, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestWriteFileRefusesNonRegularTargets(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	for _, path := range []string{link, sub} {
		if err := WriteFile(path, []byte("x"), 0o600); !errors.Is(err, ErrNotRegular) {
			t.Errorf("WriteFile(%s) = %v, want ErrNotRegular", filepath.Base(path), err)
		}
	}
	if data, _ := os.ReadFile(target); string(data) != "keep" {
		t.Error("the symlink's target was overwritten")
	}
}

func TestWriteFileFailureLeavesOldContents(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing-dir", "f")
	if err := WriteFile(path, []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestLockSerializes(t *testing.T) {
	lock := filepath.Join(t.TempDir(), ".lock")
	counter := filepath.Join(filepath.Dir(lock), "counter")
	os.WriteFile(counter, []byte{0}, 0o600)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := Lock(lock)
			if err != nil {
				t.Error(err)
				return
			}
			defer unlock()
			b, _ := os.ReadFile(counter)
			if err := WriteFile(counter, []byte{b[0] + 1}, 0o600); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if b, _ := os.ReadFile(counter); b[0] != 20 {
		t.Fatalf("counter = %d, want 20: a read-modify-write was lost", b[0])
	}
}

func TestVersionOfChangesOnReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	WriteFile(path, []byte("a"), 0o600)
	v1, err := VersionOf(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := VersionOf(path); v != v1 {
		t.Fatal("version changed without a write")
	}
	WriteFile(path, []byte("a"), 0o600) // same size, same contents: a new inode
	if v2, _ := VersionOf(path); v2 == v1 {
		t.Fatal("replacement not detected")
	}
	if _, err := VersionOf(path + ".missing"); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestWriteFileRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.key")
	stale := filepath.Join(dir, ".c.key.tmp-123")
	fresh := filepath.Join(dir, ".c.key.tmp-456")
	other := filepath.Join(dir, ".d.key.tmp-789")
	for _, p := range []string{stale, fresh, other} {
		os.WriteFile(p, []byte("secret"), 0o600)
	}
	old := time.Now().Add(-2 * staleTempAge)
	os.Chtimes(stale, old, old)
	os.Chtimes(other, old, old)
	if err := WriteFile(path, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("stale temp file of the same target survived")
	}
	for _, p := range []string{fresh, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: a concurrent or unrelated write's temp file must stay", filepath.Base(p))
		}
	}
}

// TestStaleTempSweepOncePerMinute: the directory is globbed at most once
// a minute per path (issue 16), and a stale temp file is still removed by
// the first write after that minute.
func TestStaleTempSweepOncePerMinute(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "inv.json")
	if err := WriteFile(path, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".inv.json.tmp-1")
	os.WriteFile(stale, []byte("x"), 0o600)
	old := time.Now().Add(-2 * staleTempAge)
	os.Chtimes(stale, old, old)
	if err := WriteFile(path, []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatal("swept twice within a minute")
	}
	lastSweep.Store(path, time.Now().Add(-staleTempAge-time.Second))
	if err := WriteFile(path, []byte("3"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale temp file survived the sweep after a minute")
	}
}
