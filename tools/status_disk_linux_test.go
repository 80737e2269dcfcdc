//go:build linux

package tools_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

// TestStatusWarnsOfAFullAuditDisk: a full audit disk refuses every state
// change, so status says so once the trail's file system is above 90% used
// (issue 10 item 12), without naming a path.
func TestStatusWarnsOfAFullAuditDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root)")
	}
	store := pkitest.NewStore(t)
	dir := filepath.Join(store.Dir(), "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })

	warning := func() string {
		for _, p := range tools.BuildStatus(store, config.Loaded{}, nil).Problems {
			if strings.Contains(p, "audit trail's file system") {
				return p
			}
		}
		return ""
	}
	if p := warning(); p != "" {
		t.Fatalf("empty disk: %q", p)
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for chunk := make([]byte, 4096); ; {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	p := warning()
	if !strings.Contains(p, "100% full") || strings.Contains(p, store.Dir()) {
		t.Errorf("full disk: problem %q; want a 100%% warning without the path", p)
	}
}
