package renewal_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/renewal"
)

// TestFilesNewer: a pair another process renewed into the same files is
// adopted only when it is a later, valid certificate of the same name from
// the same CA.
func TestFilesNewer(t *testing.T) {
	t.Parallel()
	store := pkitest.NewStore(t)
	roots := pkitest.CAPool(t, store)
	cur := pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour))
	foreign := pkitest.NewForeignCA(t).Sign(t, pkitest.Leaf{CN: "bot", OU: "agent", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(2 * time.Hour)})
	tests := []struct {
		name string
		disk tls.Certificate
		want bool
	}{
		{name: "the same certificate", disk: cur},
		{name: "renewed by another process", disk: pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, 2*time.Hour)), want: true},
		{name: "another name", disk: pkitest.KeyPair(t, pkitest.Issue(t, store, "other", pki.RoleAgent, 2*time.Hour))},
		{name: "not later", disk: pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, 30*time.Minute))},
		{name: "another CA", disk: foreign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			f := renewal.Files{Cert: filepath.Join(dir, "bot.crt"), Key: filepath.Join(dir, "bot.key")}
			certPEM, keyPEM := pkitest.EncodePair(t, tt.disk)
			if err := f.Write(keyPEM, certPEM); err != nil {
				t.Fatal(err)
			}
			kp, ok := f.Newer(cur, roots, time.Now())
			if ok != tt.want {
				t.Fatalf("Newer = %v, want %v", ok, tt.want)
			}
			if ok && kp.Leaf.SerialNumber.Cmp(tt.disk.Leaf.SerialNumber) != 0 {
				t.Errorf("Newer returned serial %x, want the one on disk", kp.Leaf.SerialNumber)
			}
		})
	}
}

// TestFilesWriteMode: the renewed key and certificate are 0600 and no
// staged file is left behind.
func TestFilesWriteMode(t *testing.T) {
	t.Parallel()
	store := pkitest.NewStore(t)
	dir := t.TempDir()
	f := renewal.Files{Cert: filepath.Join(dir, "bot.crt"), Key: filepath.Join(dir, "bot.key")}
	certPEM, keyPEM := pkitest.EncodePair(t, pkitest.KeyPair(t, pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)))
	if err := f.Write(keyPEM, certPEM); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.Cert, f.Key} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %04o, want 0600", p, err, fi.Mode().Perm())
		}
	}
	if _, err := os.Stat(f.Cert + renewal.PendingSuffix); !os.IsNotExist(err) {
		t.Errorf("staged file left: %v", err)
	}
}
