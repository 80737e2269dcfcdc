package pki

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nefia/nefia/internal/atomicfile"
)

// BundlePaths are the files a client bundle consists of.
type BundlePaths struct {
	Cert string `json:"cert"`
	// Key is empty when the certificate was issued from a CSR.
	Key string `json:"key,omitempty"`
	CA  string `json:"ca"`
	// P12 is the PKCS#12 bundle, when one was asked for (WriteP12).
	P12 string `json:"p12,omitempty"`
}

// BundlePathsFor returns where the bundle of name goes in dir.
func BundlePathsFor(dir, name string) BundlePaths {
	return BundlePaths{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		CA:   filepath.Join(dir, "ca.crt"),
	}
}

// CheckBundle reports ErrFileExists if writing name's bundle into dir would
// overwrite a certificate or key and force is false. Callers run it before
// Issue so a refusal issues nothing.
func CheckBundle(dir, name string, force bool) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if force {
		return nil
	}
	p := BundlePathsFor(dir, name)
	for _, path := range []string{p.Key, p.Cert} {
		ok, err := exists(path)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: %s (refusing to overwrite it; choose another name or force)", ErrFileExists, path)
		}
	}
	return nil
}

// WriteBundle writes NAME.key (0600, when there is a key), NAME.crt and
// ca.crt into dir, creating it 0700. The key goes first, after any
// certificate it replaces has been removed: a crash leaves a key without a
// certificate, never a certificate without its key or beside another's.
func WriteBundle(dir string, iss *Issued, force bool) (BundlePaths, error) {
	if err := CheckBundle(dir, iss.Name, force); err != nil {
		return BundlePaths{}, err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return BundlePaths{}, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	p := BundlePathsFor(dir, iss.Name)
	if force {
		// Overwriting: the old certificate goes first, and durably, or a
		// crash between the key and certificate writes below would leave
		// the old certificate beside a new key that does not match it
		// (found by TestCrashConsistency, issue 7). A link or directory is
		// left alone for the atomic write to refuse, as before.
		if fi, err := os.Lstat(p.Cert); err == nil && fi.Mode().IsRegular() {
			if err := os.Remove(p.Cert); err != nil {
				return BundlePaths{}, fmt.Errorf("pki: remove old %s: %w", p.Cert, err)
			}
			if err := atomicfile.SyncDir(dir); err != nil {
				return BundlePaths{}, err
			}
		}
	}
	if iss.KeyPEM != nil {
		if err := atomicfile.WriteFile(p.Key, iss.KeyPEM, keyMode); err != nil {
			return BundlePaths{}, err
		}
	} else {
		// A key left from an earlier issuance does not match this
		// certificate; leaving it beside the new one would only mislead.
		if err := os.Remove(p.Key); err != nil && !errors.Is(err, os.ErrNotExist) {
			return BundlePaths{}, fmt.Errorf("pki: remove stale %s: %w", p.Key, err)
		}
		p.Key = ""
	}
	if err := atomicfile.WriteFile(p.Cert, iss.CertPEM, certMode); err != nil {
		return BundlePaths{}, err
	}
	// Every bundle in a directory shares ca.crt; rewriting an identical one
	// (two fsyncs) is the common case when a gateway issues many.
	if !sameRegularFile(p.CA, iss.CAPEM) {
		if err := atomicfile.WriteFile(p.CA, iss.CAPEM, certMode); err != nil {
			return BundlePaths{}, err
		}
	}
	return p, nil
}

// sameRegularFile reports whether path is a regular file (not a link to one)
// holding exactly data.
func sameRegularFile(path string, data []byte) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(data)) {
		return false
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}
