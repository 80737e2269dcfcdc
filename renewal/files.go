package renewal

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// ErrStaged means a staged certificate (Cert+PendingSuffix) exists but
// cannot be read: someone has to look at the directory.
var ErrStaged = errors.New("renewal: the staged certificate cannot be read")

// PendingSuffix names the staged certificate of a renewal whose key is
// already in place (see Files.Write).
const PendingSuffix = ".renew"

// LockSuffix names the lock file beside the certificate that renewals of
// the same files take where a directory cannot be locked (Windows; see
// Files.Lock).
const LockSuffix = ".lock"

// Lock takes an exclusive lock for renewing the files, waiting for another
// holder, and returns what releases it: on the certificate's directory
// itself where the system allows it (Unix: nothing is created), else on
// Cert+LockSuffix (created 0600). Renew holds it from its check for a newer
// pair to the files' write, so that two processes on one certificate
// directory (two bridges) never both renew the same certificate: the
// second would revoke the first's new certificate, since a renewal chain
// keeps one successor.
func (f Files) Lock() (unlock func(), err error) {
	if d, err := os.Open(filepath.Dir(f.Cert)); err == nil {
		if atomicfile.LockFile(d) == nil {
			return func() {
				atomicfile.UnlockFile(d)
				d.Close()
			}, nil
		}
		d.Close()
	}
	unlock, err = atomicfile.Lock(f.Cert + LockSuffix)
	if err != nil {
		return nil, fmt.Errorf("renewal: %w", err)
	}
	return unlock, nil
}

// Files are the key and certificate a renewal replaces.
type Files struct {
	Cert, Key string
}

// Write replaces the key and certificate so that every reader sees a
// matching pair or, after a crash, a recoverable state: the certificate is
// staged durably first, then the key replaced atomically, then the staged
// certificate renamed over the old one. Only a crash between the last two
// steps leaves the new key beside the old certificate, with the new one
// staged as Cert+PendingSuffix (FinishPending completes it). Both files are
// 0600: the directory holds a private key, and nothing else needs to read
// the certificate.
func (f Files) Write(keyPEM, certPEM []byte) error {
	staged := f.Cert + PendingSuffix
	if err := atomicfile.WriteFile(staged, certPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		_ = os.Remove(staged)
		return err
	}
	if err := os.Rename(staged, f.Cert); err != nil {
		return fmt.Errorf("the new key is in %s, but moving %s over %s failed (move it by hand): %w", f.Key, staged, f.Cert, err)
	}
	return atomicfile.SyncDir(filepath.Dir(f.Cert))
}

// FinishPending completes a renewal interrupted after its key was written:
// a staged Cert+PendingSuffix that matches Key is moved over Cert; one that
// does not (the crash came before the key) is removed. Read errors of the
// staged file wrap ErrStaged.
func (f Files) FinishPending() error {
	staged := f.Cert + PendingSuffix
	certPEM, err := os.ReadFile(staged)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStaged, err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err == nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if err := os.Rename(staged, f.Cert); err != nil {
				return fmt.Errorf("finish the interrupted renewal: %w", err)
			}
			return atomicfile.SyncDir(filepath.Dir(f.Cert))
		}
	}
	// Staged before the key was replaced: Cert and Key are still the old,
	// matching pair.
	if err := os.Remove(staged); err != nil {
		return fmt.Errorf("remove the stale %s: %w", staged, err)
	}
	return nil
}

// Newer returns the pair in the files when it is a later certificate of
// the same name than cur, valid now and chaining to roots: another process
// using the same directory (a second bridge) renewed it. Adopting it rather
// than renewing again matters, because a second renewal of cur would revoke
// that process's certificate (a renewal chain keeps one successor).
func (f Files) Newer(cur tls.Certificate, roots *x509.CertPool, now time.Time) (tls.Certificate, bool) {
	if cur.Leaf == nil {
		return tls.Certificate{}, false
	}
	kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil || kp.Leaf == nil {
		return tls.Certificate{}, false
	}
	l := kp.Leaf
	if l.SerialNumber.Cmp(cur.Leaf.SerialNumber) == 0 || l.Subject.CommonName != cur.Leaf.Subject.CommonName ||
		!l.NotAfter.After(cur.Leaf.NotAfter) {
		return tls.Certificate{}, false
	}
	if _, err := l.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return tls.Certificate{}, false
	}
	return kp, true
}
