package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ExpiryWarning is how close to its NotAfter the server certificate must be
// for Status to report it as a problem.
const ExpiryWarning = 30 * 24 * time.Hour

// CAExpiryWarning is the same for the CA: a year, because replacing the CA
// means re-issuing every client certificate (issue 13 item 4).
const CAExpiryWarning = 365 * 24 * time.Hour

// Status is the health of the state directory: its certificates, client
// counts and every problem found. Problems name files by base name only, so
// the report can be shown to a remote caller without revealing host paths.
type Status struct {
	CA      *CertInfo    `json:"ca"`
	Server  *CertInfo    `json:"server"`
	Clients ClientCounts `json:"clients"`
	// ClientsError is why Clients could not be counted (the store is
	// unavailable); Clients is then all zero and must not be shown as counts.
	ClientsError string   `json:"clients_error,omitempty"`
	Problems     []string `json:"problems"`
}

// ClientCounts counts issued client certificates by state. Issued is the
// total; a revoked certificate counts as revoked even after it expires.
type ClientCounts struct {
	Issued  int `json:"issued"`
	Active  int `json:"active"`
	Expired int `json:"expired"`
	Revoked int `json:"revoked"`
}

// Status inspects the state directory. It never fails: whatever cannot be
// read becomes a problem in the report.
func (s *Store) Status() Status {
	st := Status{Problems: []string{}}
	problem := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		st.Problems = append(st.Problems, strings.ReplaceAll(msg, s.dir+string(filepath.Separator), ""))
	}
	now := s.now()

	if fi, err := os.Stat(s.dir); err != nil {
		problem("state directory: %v", baseErr(err))
	} else if fi.Mode().Perm()&0o077 != 0 {
		problem("state directory has mode %04o; it should be 0700", fi.Mode().Perm())
	}

	ca := s.statusPair("CA", CACertFile, CAKeyFile, now, CAExpiryWarning, problem)
	if ca != nil {
		info := DescribeCert(ca)
		st.CA = &info
	}
	srv := s.statusPair("server", ServerCertFile, ServerKeyFile, now, ExpiryWarning, problem)
	if srv != nil {
		info := DescribeCert(srv)
		st.Server = &info
		if ca != nil {
			if err := verifyServer(srv, ca, now); err != nil {
				problem("server certificate does not verify against the CA: %v", err)
			}
		}
	}

	// A missing revocation store is a problem either way. Where
	// revocations may have been recorded, List below reports it as lost
	// (the gateway refuses all handshakes); otherwise it counts as empty.
	if st.CA != nil {
		if _, err := os.Stat(s.Path(RevokedFile)); s.records == nil && errors.Is(err, fs.ErrNotExist) && checkMissingStore(s.dir) == nil {
			problem("revocation store %s is missing; no revocation was ever recorded, so it counts as empty until the next revoke creates it", RevokedFile)
		}
	}
	if h, ok := s.records.(healthReporter); ok {
		if err := h.Health(); err != nil {
			// The counts would wait for the same unreachable store.
			problem("revocation store: %v", err)
			st.ClientsError = fmt.Sprintf("store unavailable: %v", baseErr(err))
			return st
		}
	}
	list, err := s.List()
	if err != nil {
		problem("%v", baseErr(err))
		if s.records != nil {
			st.ClientsError = fmt.Sprintf("store unavailable: %v", baseErr(err))
			return st
		}
	}
	for _, c := range list {
		st.Clients.Issued++
		switch c.State {
		case StateActive:
			st.Clients.Active++
		case StateExpired:
			st.Clients.Expired++
		case StateRevoked:
			st.Clients.Revoked++
		}
	}
	return st
}

// statusPair reads a certificate and its key, reporting what is wrong with
// them; it returns the certificate when it could be parsed.
func (s *Store) statusPair(what, certName, keyName string, now time.Time, warn time.Duration, problem func(string, ...any)) *x509.Certificate {
	cert, err := readCert(s.Path(certName))
	if errors.Is(err, fs.ErrNotExist) {
		problem("%s certificate %s is missing (run 'nefia mtls init')", what, certName)
		return nil
	}
	if err != nil {
		problem("%s certificate: %v", what, baseErr(err))
		return nil
	}
	hint := ""
	if what == "server" {
		hint = "; renew it with 'nefia mtls renew-server'"
	}
	switch left := cert.NotAfter.Sub(now); {
	case left <= 0:
		problem("%s certificate expired on %s%s", what, cert.NotAfter.UTC().Format(time.RFC3339), hint)
	case left < warn:
		problem("%s certificate expires in %d days (%s)%s", what, int(left.Hours()/24), cert.NotAfter.UTC().Format(time.RFC3339), hint)
	}
	fi, err := os.Stat(s.Path(keyName))
	if err != nil {
		problem("%s key %s: %v", what, keyName, baseErr(err))
		return cert
	}
	if fi.Mode().Perm()&0o077 != 0 {
		problem("%s key %s has mode %04o; it should be 0600", what, keyName, fi.Mode().Perm())
	}
	key, err := readKey(s.Path(keyName))
	if err != nil {
		problem("%s key: %v", what, baseErr(err))
	} else if !publicKeysEqual(cert.PublicKey, key.Public()) {
		problem("%s key %s does not match %s", what, keyName, certName)
	}
	return cert
}

func verifyServer(srv, ca *x509.Certificate, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	_, err := srv.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// baseErr rewrites a path error to name only the file's base name.
func baseErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %v", pe.Op, filepath.Base(pe.Path), pe.Err)
	}
	return err
}
