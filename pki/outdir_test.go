package pki_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nefia/nefia/pki"
)

// TestCheckOutDir (issue 10 items 6 and 7): the destination check the CLI
// and the issue_client tool share.
func TestCheckOutDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	state := filepath.Join(root, "state")
	for _, d := range []string{filepath.Join(state, "audit"), filepath.Join(state, pki.ClientsDir), filepath.Join(root, "out")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	os.Symlink(state, filepath.Join(root, "to-state"))
	os.Symlink(filepath.Join(state, "audit"), filepath.Join(state, pki.ClientsDir, "to-audit"))
	os.Symlink(filepath.Join(root, "nowhere"), filepath.Join(root, "dangling"))

	tests := []struct {
		name, dir string
		want      error // nil: accepted
	}{
		{"new dir outside", filepath.Join(root, "new", "deeper"), nil},
		{"existing dir outside", filepath.Join(root, "out"), nil},
		{"clients subdir", filepath.Join(state, pki.ClientsDir, "team"), nil},
		{"empty", "", pki.ErrInvalidOutDir},
		{"blank", "  ", pki.ErrInvalidOutDir},
		{"state dir", state, pki.ErrOutDirInStateDir},
		{"state dir, trailing slash", state + "/", pki.ErrOutDirInStateDir},
		{"inside state dir", filepath.Join(state, "audit"), pki.ErrOutDirInStateDir},
		{"new dir inside state dir", filepath.Join(state, "archive", "x"), pki.ErrOutDirInStateDir},
		{"link to state dir", filepath.Join(root, "to-state"), pki.ErrOutDirInStateDir},
		{"through a link into state dir", filepath.Join(root, "to-state", "audit"), pki.ErrOutDirInStateDir},
		{"clients link into audit", filepath.Join(state, pki.ClientsDir, "to-audit"), pki.ErrOutDirInStateDir},
		{"dangling link", filepath.Join(root, "dangling", "x"), pki.ErrInvalidOutDir},
		{"a file", file, pki.ErrInvalidOutDir},
		{"below a file", filepath.Join(file, "x"), pki.ErrInvalidOutDir},
		{"proc", "/proc/self", pki.ErrInvalidOutDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pki.CheckOutDir(state, tt.dir)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckOutDir(%q) = %v, want %v", tt.dir, err, tt.want)
			}
			if matches, _ := filepath.Glob(filepath.Join(root, "*", ".nefia-probe-*")); len(matches) > 0 {
				t.Errorf("probe files left: %v", matches)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "new")); !os.IsNotExist(err) {
		t.Errorf("the check created a directory (%v)", err)
	}
}
