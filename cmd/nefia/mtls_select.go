package main

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/nefia/nefia/pki"
)

// listStates are the values of 'nefia mtls list --state', in the order the
// error message gives them.
var listStates = []pki.CertState{pki.StateActive, pki.StateExpired, pki.StateRevoked, pki.StateNotYet}

// listFilter is what 'nefia mtls list' keeps: every set field must match.
type listFilter struct {
	states   []pki.CertState // any of them; none: every state
	expiring time.Duration   // valid now and expiring within this; 0: no limit
	name     string          // path.Match glob; "": every name
	now      time.Time
}

// newListFilter checks the list flags, naming the first bad one.
func newListFilter(states, expiring, name string, now time.Time) (listFilter, error) {
	f := listFilter{name: name, now: now}
	for _, s := range splitList(states) {
		st := pki.CertState(strings.ToLower(s))
		if !slices.Contains(listStates, st) {
			return listFilter{}, usage(fmt.Errorf("--state %q: want active, expired, revoked or not_yet_valid", s))
		}
		f.states = append(f.states, st)
	}
	if states != "" && len(f.states) == 0 {
		return listFilter{}, usage(fmt.Errorf("--state %q: want active, expired, revoked or not_yet_valid", states))
	}
	if expiring != "" {
		d, err := pki.ParseDuration(expiring)
		if err != nil || d <= 0 {
			return listFilter{}, usage(fmt.Errorf("--expiring %q: want a positive duration such as 72h or 30d", expiring))
		}
		f.expiring = d
	}
	if _, err := path.Match(name, ""); err != nil {
		return listFilter{}, usage(fmt.Errorf("--name %q: not a valid glob (%v)", name, err))
	}
	return f, nil
}

// keep reports whether c passes the filter. --expiring keeps certificates
// still usable (active) whose NotAfter falls within the window.
func (f listFilter) keep(c pki.ListedCert) bool {
	if len(f.states) > 0 && !slices.Contains(f.states, c.State) {
		return false
	}
	if f.expiring > 0 && (c.State != pki.StateActive || c.NotAfter.After(f.now.Add(f.expiring))) {
		return false
	}
	if f.name != "" {
		if ok, _ := path.Match(f.name, c.Name); !ok {
			return false
		}
	}
	return true
}

// activeNamed returns the certificates named name that a revocation would
// stop: active ones and those not valid yet.
func activeNamed(list []pki.ListedCert, name string) []pki.ListedCert {
	var out []pki.ListedCert
	for _, c := range list {
		if c.Name == name && (c.State == pki.StateActive || c.State == pki.StateNotYet) {
			out = append(out, c)
		}
	}
	return out
}

// confirm asks on stderr whether to go ahead and reads the answer from
// stdin; only "y" or "yes" is yes. Without a terminal on stdin there is no
// one to ask, and a script must say --yes.
func confirm(e *env, question string) (bool, error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return false, usage(errors.New("--yes: stdin is not a terminal, so nefia cannot ask; add --yes to revoke them"))
	}
	fmt.Fprintf(e.stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(io.LimitReader(e.stdin, 256)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// certFileSerial reads the first certificate of a PEM file and returns its
// serial, with a warning when our CA did not sign it: any serial may be
// revoked (as with --serial), but a certificate from another CA was never
// accepted by this gateway, so revoking it is probably a mistake.
func certFileSerial(store *pki.Store, file string) (string, []string, error) {
	data, err := readLimited(file, 1<<20)
	if err != nil {
		return "", nil, usage(fmt.Errorf("--cert %q: %w", file, err))
	}
	var leaf *x509.Certificate
	for rest := data; leaf == nil; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return "", nil, usage(fmt.Errorf("--cert %q: no PEM CERTIFICATE in the file", file))
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if leaf, err = x509.ParseCertificate(b.Bytes); err != nil {
			return "", nil, usage(fmt.Errorf("--cert %q: %w", file, err))
		}
	}
	if leaf.IsCA {
		return "", nil, usage(fmt.Errorf("--cert %q: holds a CA certificate (%s), not a client certificate", file, leaf.Subject.CommonName))
	}
	var warnings []string
	caPEM, err := store.CACertPEM()
	if err != nil {
		return "", nil, err
	}
	var ca *x509.Certificate
	if b, _ := pem.Decode(caPEM); b != nil {
		ca, _ = x509.ParseCertificate(b.Bytes)
	}
	if ca == nil || leaf.CheckSignatureFrom(ca) != nil {
		warnings = append(warnings, fmt.Sprintf("%s was not issued by this CA (issuer %q); revoking its serial anyway", file, leaf.Issuer.String()))
	}
	return pki.FormatSerial(leaf.SerialNumber), warnings, nil
}
