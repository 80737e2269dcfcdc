//go:build linux

package server_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends. It
// skips the test when it cannot (not root, or no mount privilege).
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// fill writes a file in dir until the file system is full and returns it.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestFullAuditDiskRecoversWithoutRestart fills the file system of the
// audit trail: a state change is refused (no audit, no action), and its
// partial write is cut off the trail. Once space is freed, a revoke succeeds on the
// same gateway, without a restart, and the chain verifies. Before issue 10
// item 12 the partial write set a sticky "broken" flag: every
// state-changing call stayed refused until the gateway was restarted.
func TestFullAuditDiskRecoversWithoutRestart(t *testing.T) {
	store := pkitest.NewStore(t)
	auditDir := filepath.Join(store.Dir(), "audit")
	mountTmpfs(t, auditDir, "1m")
	gw := servertest.StartWithStore(t, store)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	victim := gw.Issue("victim", pki.RoleAgent, time.Hour)
	gw.AuditRecords() // flush what is pending
	trail := filepath.Join(auditDir, audit.TrailFile)

	issued, _ := gw.Store.List()
	filler := fill(t, auditDir)
	before, err := os.Stat(trail)
	if err != nil {
		t.Fatal(err)
	}
	// The started record (6 KiB once the 1,000 `<` of its out_dir are
	// escaped) is larger than what is left of the trail's last page, so the
	// write fails part-way whenever that page is not exactly full. (The
	// operation validates its arguments before it records them, so the
	// padding is a valid, long out_dir rather than an unknown argument.)
	res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "unaudited",
		"out_dir": strings.Repeat(strings.Repeat("<", 200)+"/", 5)})
	if !res.IsError || !strings.Contains(res.Content[0].(mcp.TextContent).Text, "audit trail is unavailable") {
		t.Fatalf("issue_client on a full audit disk: %+v", res.Content)
	}
	if inv, _ := gw.Store.List(); len(inv) != len(issued) {
		t.Fatalf("issued without an audit record: %v", inv)
	}
	after, err := os.Stat(trail)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Errorf("trail is %d bytes after the failed write, was %d: the partial record was not cut", after.Size(), before.Size())
	}
	t.Logf("full disk: trail %d bytes, %d bytes of slack in its last page", before.Size(), (4096-before.Size()%4096)%4096)
	if revs, _ := gw.Store.Revocations(); len(revs) != 0 {
		t.Fatalf("revoked without an audit record: %v", revs)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	res = servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial, "reason": "disk freed"})
	if res.IsError {
		t.Fatalf("revoke after space came back: %v", res.Content)
	}
	if revs, _ := gw.Store.Revocations(); len(revs) != 1 {
		t.Errorf("revocations = %v, want the victim's", revs)
	}
	gw.VerifyAudit()
}
