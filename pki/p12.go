package pki

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/nefia/nefia/internal/atomicfile"
)

// MinP12PasswordLen is the shortest password a PKCS#12 bundle may have: the
// file holds a private key, and some clients refuse an empty password.
const MinP12PasswordLen = 8

// WriteP12 writes NAME.p12 into dir: the client's key, certificate and the
// CA, encrypted with password (AES-256-CBC, PBKDF2-SHA-256, SHA-256 MAC:
// go-pkcs12's Modern2023 encoder, which current OpenSSL, macOS and Windows
// read), for clients that take one file rather than PEM. It needs a key, so
// not for certificates issued from a CSR.
func WriteP12(dir string, iss *Issued, password string, force bool) (string, error) {
	if iss.KeyPEM == nil {
		return "", fmt.Errorf("pki: a PKCS#12 bundle needs the private key; a certificate issued from a CSR has none here")
	}
	if len(password) < MinP12PasswordLen {
		return "", fmt.Errorf("pki: PKCS#12 password must be at least %d characters", MinP12PasswordLen)
	}
	if err := CheckP12(dir, iss.Name, force); err != nil {
		return "", err
	}
	path := filepath.Join(dir, iss.Name+".p12")
	cert, err := ParseCertificatePEM(iss.CertPEM)
	if err != nil {
		return "", err
	}
	ca, err := ParseCertificatePEM(iss.CAPEM)
	if err != nil {
		return "", err
	}
	key, err := parseKey(iss.Name+".key", iss.KeyPEM)
	if err != nil {
		return "", err
	}
	data, err := pkcs12.Modern2023.WithRand(rand.Reader).Encode(key, cert, []*x509.Certificate{ca}, password)
	if err != nil {
		return "", fmt.Errorf("pki: encode %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return "", fmt.Errorf("pki: create %s: %w", dir, err)
	}
	return path, atomicfile.WriteFile(path, data, keyMode)
}

// CheckP12 reports ErrFileExists if NAME.p12 exists in dir and force is
// false; callers run it before Issue so a refusal issues nothing.
func CheckP12(dir, name string, force bool) error {
	if err := ValidateName(name); err != nil || force {
		return err
	}
	path := filepath.Join(dir, name+".p12")
	if ok, err := exists(path); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%w: %s (refusing to overwrite it; choose another name or force)", ErrFileExists, path)
	}
	return nil
}
