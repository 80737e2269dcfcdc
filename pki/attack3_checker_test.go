package pki_test

import (
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestRevocationCheckSeesAStateDirectorySwappedUnderASymlink (attack
// review of issue 16 item 2): the handshake check trusts the directory
// watch's generation for up to watchRecheck (1 s) without a stat, and
// calls that exact. NewWatch refuses a state directory that is itself a
// symlink, but not one reached through a symlinked parent (a release or
// volume directory switched by re-pointing a link, the usual atomic
// deploy). inotify watches the inode the path named when the watch was
// made; the directory now behind the path gets no watch and its changes
// move no generation, so a check right after the switch still answers
// from the old directory's store: a certificate revoked in the new one
// passes the handshake for up to a second. On the base commit every
// check statted the path, so the very next check saw it.
func TestRevocationCheckSeesAStateDirectorySwappedUnderASymlink(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	victim := pkitest.Issue(t, s, "victim", pki.RoleAgent, time.Hour)
	serial, _ := new(big.Int).SetString(victim.Serial, 16)
	base := t.TempDir()
	before, after := filepath.Join(base, "release-1", "state"), filepath.Join(base, "release-2", "state")
	if err := os.CopyFS(before, os.DirFS(s.Dir())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(victim.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(after, os.DirFS(s.Dir())); err != nil {
		t.Fatal(err)
	}
	current := filepath.Join(base, "current")
	if err := os.Symlink(filepath.Dir(before), current); err != nil {
		t.Fatal(err)
	}
	c := pki.NewRevocationChecker(filepath.Join(current, "state", pki.RevokedFile))
	if !c.Watched() {
		t.Skip("no directory watch on this platform")
	}
	if revoked, err := c.IsRevoked(serial); revoked || err != nil {
		t.Fatalf("before the switch: revoked=%v, %v; want not revoked", revoked, err)
	}
	// Switch the link atomically to the release whose store revokes it.
	tmp := current + ".new"
	if err := os.Symlink(filepath.Dir(after), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, current); err != nil {
		t.Fatal(err)
	}
	if revoked, err := c.IsRevoked(serial); !revoked || err != nil {
		t.Errorf("the check right after the state directory behind the path was switched: revoked=%v, %v; want revoked (the store the path names revokes it)", revoked, err)
	}
}
