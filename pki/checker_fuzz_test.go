package pki_test

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/nefia/nefia/pki"
)

// FuzzRevocationStore writes arbitrary bytes as mtls_revoked.json, replacing a
// store the checker has already loaded, and holds the checker to its
// contract: it never panics; it either loads the file or fails closed with
// ErrRevocationUnavailable (never falling back to the store it had before);
// and when it loads, it agrees with the Store's own reading of the file
// (which List and status use) on every serial: each listed serial is
// revoked, and serials not listed are not.
func FuzzRevocationStore(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, pki.RevokedFile)
	store := pki.NewStore(dir)
	// prior is revoked in the store the checker loads first.
	const prior = "5eed"
	priorPath := filepath.Join(dir, "prior.json")
	priorStore := []byte(`{"version":1,"revoked":[{"serial":"` + prior + `","revoked_at":"2026-01-02T03:04:05Z","name":"prior"}]}`)
	if err := os.WriteFile(priorPath, priorStore, 0o600); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		// A link, not a copy: the prior store is not rewritten every run.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.Link(priorPath, path); err != nil {
			t.Fatal(err)
		}
		c := pki.NewRevocationChecker(path)
		if revoked, err := c.IsRevoked(hexInt(prior)); !revoked || err != nil {
			t.Fatalf("prior store: revoked %v, %v", revoked, err)
		}
		replace(t, path, data)

		revs, storeErr := store.Revocations()
		probes := []*big.Int{hexInt(prior), big.NewInt(1), big.NewInt(0), big.NewInt(-1), new(big.Int).Lsh(big.NewInt(1), 160)}
		listed := map[string]bool{}
		for _, r := range revs {
			if storeErr != nil {
				break // what the Store read is not a store
			}
			n := hexInt(r.Serial)
			listed[string(n.Bytes())] = true
			probes = append(probes, n, new(big.Int).Add(n, big.NewInt(1)), new(big.Int).Neg(n))
		}

		for _, p := range probes {
			revoked, err := c.IsRevoked(p)
			if err != nil {
				if !errors.Is(err, pki.ErrRevocationUnavailable) {
					t.Fatalf("IsRevoked(%x) = %v, not ErrRevocationUnavailable", p, err)
				}
				if revoked {
					t.Fatalf("IsRevoked(%x) reports revoked together with an error", p)
				}
				if storeErr == nil {
					t.Fatalf("the checker fails closed (%v) on a store the Store reads (%d entries)", err, len(revs))
				}
				continue
			}
			if storeErr != nil {
				t.Fatalf("the checker loaded a store the Store refuses (%v)", storeErr)
			}
			if want := p.Sign() > 0 && listed[string(p.Bytes())]; revoked != want {
				t.Fatalf("IsRevoked(%x) = %v, the store lists it: %v", p, revoked, want)
			}
		}
		if storeErr != nil && !errors.Is(storeErr, pki.ErrCorruptState) {
			t.Fatalf("Store.Revocations = %v, not ErrCorruptState", storeErr)
		}
	})
}

// replace puts data at path as a new file (a new inode), as every nefia
// writer does, so the checker sees a new version. The old file is removed
// first: renaming over it would make ext4 start flushing the new one's data
// (auto_da_alloc) on every run, which the checker does not need.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".fuzz"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func hexInt(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic("not hex: " + s)
	}
	return n
}
