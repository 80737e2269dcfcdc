package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nefia/nefia/internal/atomicfile"
)

// TestWatchFollowsThePathNotTheDirectory: a watch follows the directory
// it was given, so another directory put behind the same path by a change
// above it (a parent renamed away and another renamed in, a symlinked
// parent re-pointed) raised no event and a caller trusting the watch kept
// answering from the old directory (attack review 3). Such a change now
// breaks the watch, so callers stat; an unrelated entry of an ancestor
// changes nothing.
func TestWatchFollowsThePathNotTheDirectory(t *testing.T) {
	t.Parallel()
	mkdir := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		setup  func(t *testing.T, root string) (watched string)
		change func(t *testing.T, root string)
		broken bool
	}{
		{"parent renamed away, another renamed in", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "p", "state"))
			return filepath.Join(root, "p", "state", "f")
		}, func(t *testing.T, root string) {
			mkdir(t, filepath.Join(root, "q", "state"))
			must(t, os.Rename(filepath.Join(root, "p"), filepath.Join(root, "old")))
			must(t, os.Rename(filepath.Join(root, "q"), filepath.Join(root, "p")))
		}, true},
		{"symlinked parent re-pointed", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "v1", "state"))
			mkdir(t, filepath.Join(root, "v2", "state"))
			must(t, os.Symlink("v1", filepath.Join(root, "current")))
			return filepath.Join(root, "current", "state", "f")
		}, func(t *testing.T, root string) {
			must(t, os.Symlink("v2", filepath.Join(root, "next")))
			must(t, os.Rename(filepath.Join(root, "next"), filepath.Join(root, "current")))
		}, true},
		{"another entry of an ancestor", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "p", "state"))
			return filepath.Join(root, "p", "state", "f")
		}, func(t *testing.T, root string) {
			mkdir(t, filepath.Join(root, "unrelated"))
			must(t, os.WriteFile(filepath.Join(root, "p", "sibling"), nil, 0o600))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			w, err := atomicfile.NewWatch(tt.setup(t, root))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			before, err := w.Generation()
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, root)
			after, err := w.Generation()
			if tt.broken && err == nil {
				t.Fatalf("the watch still trusted after the path moved to another directory (generation %d → %d)", before, after)
			}
			if !tt.broken && (err != nil || after != before) {
				t.Fatalf("an unrelated change reported: generation %d → %d, err %v", before, after, err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
