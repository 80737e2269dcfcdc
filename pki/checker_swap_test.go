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

// TestRevocationCheckSeesAStateDirectorySwappedUnderItsPath (attack
// review of issue 16 item 2): the handshake check trusts the directory
// watch's generation for up to watchRecheck (1 s) without a stat, and
// calls that exact. inotify watches the inode the path named when the
// watch was made. When another directory comes to be behind the same path
// without the watched one seeing an event of its own (a symlinked parent
// re-pointed, the usual atomic deploy; the parent directory renamed away
// and a restored copy renamed in: the watched directory keeps its own
// name, so no IN_MOVE_SELF), its changes move no generation, and the
// check right after still answers from the old directory's store: a
// certificate revoked in the store the path now names passes handshakes
// for up to a second. On the base commit every check statted the path,
// so the very next check saw it.
func TestRevocationCheckSeesAStateDirectorySwappedUnderItsPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// swap makes root (a symlink or a directory) name newRoot's
		// contents; root was made to name oldRoot's.
		link bool
		swap func(t *testing.T, root, oldRoot, newRoot string)
	}{
		{"symlinked parent re-pointed", true, func(t *testing.T, root, _, newRoot string) {
			tmp := root + ".new"
			if err := os.Symlink(newRoot, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, root); err != nil {
				t.Fatal(err)
			}
		}},
		{"parent directory renamed away and another renamed in", false, func(t *testing.T, root, _, newRoot string) {
			if err := os.Rename(root, root+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(newRoot, root); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := pkitest.NewStore(t)
			victim := pkitest.Issue(t, s, "victim", pki.RoleAgent, time.Hour)
			serial, _ := new(big.Int).SetString(victim.Serial, 16)
			base := t.TempDir()
			oldRoot, newRoot := filepath.Join(base, "release-1"), filepath.Join(base, "release-2")
			if err := os.CopyFS(filepath.Join(oldRoot, "state"), os.DirFS(s.Dir())); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Revoke(victim.Serial, "test"); err != nil {
				t.Fatal(err)
			}
			if err := os.CopyFS(filepath.Join(newRoot, "state"), os.DirFS(s.Dir())); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(base, "current")
			if tc.link {
				if err := os.Symlink(oldRoot, root); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Rename(oldRoot, root); err != nil {
				t.Fatal(err)
			}
			c := pki.NewRevocationChecker(filepath.Join(root, "state", pki.RevokedFile))
			if !c.Watched() {
				t.Skip("no directory watch on this platform")
			}
			if revoked, err := c.IsRevoked(serial); revoked || err != nil {
				t.Fatalf("before the swap: revoked=%v, %v; want not revoked", revoked, err)
			}
			tc.swap(t, root, oldRoot, newRoot)
			if revoked, err := c.IsRevoked(serial); !revoked || err != nil {
				t.Errorf("the check right after the state directory behind the path was swapped: revoked=%v, %v; want revoked (the store the path names revokes it)", revoked, err)
			}
		})
	}
}
