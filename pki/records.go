package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"time"
)

// ErrSerialTaken is returned by Records.AddIssued when the serial is
// already recorded: another issuer (a second gateway) got it first. Issue
// then draws a new serial and signs again.
var ErrSerialTaken = errors.New("pki: serial already recorded")

// ErrCRLSharedStore is returned by the CRL functions when the revocations
// live in shared records that cannot number CRLs (see CRLNumbers): a CRL
// from the state directory's revocation store would miss every revocation
// made in the shared store, and one numbered by this host alone could
// repeat a number another gateway used.
var ErrCRLSharedStore = errors.New("pki: the shared revocation store cannot number CRLs, so none is signed")

// ErrReplaceSharedCA refuses 'init --force' while the inventory and the
// revocations are shared (etcd): the new CA would be this host's alone,
// the shared store would keep the old CA's certificates and revocations,
// and the fleet would split between two CAs. Nothing is changed.
var ErrReplaceSharedCA = errors.New("pki: init --force would replace the CA of this host only, while the shared store " +
	"(mcp.mtls.store.backend: etcd) keeps the old CA's certificates and revocations, splitting the fleet; nothing was changed. " +
	"To start over with a new CA, set mcp.mtls.store.backend to file, run 'nefia mtls init --force', " +
	"choose a new mcp.mtls.store.etcd.prefix, run 'nefia mtls store migrate --to etcd', switch back to etcd and distribute the new CA files to every gateway")

// ErrJoinSharedCA refuses 'init' on a host without a CA while the
// inventory and the revocations are a shared store (etcd) that already
// exists: that store serves a fleet whose CA is elsewhere, and a new CA of
// this host's would split the fleet between two CAs, silently (issue 15's
// init --force refusal covered only a host that already had a CA).
// Nothing is changed.
var ErrJoinSharedCA = errors.New("pki: init would create a new CA for this host only, while the shared store " +
	"(mcp.mtls.store.backend: etcd) already serves a fleet with its own CA; nothing was changed. " +
	"Copy mtls_ca.crt (and mtls_ca.key, on a gateway that issues), mtls_server.crt and mtls_server.key from a gateway of the fleet " +
	"(or point mcp.mtls.ca_cert_file, cert_file and key_file at copies); for a new fleet, choose a new mcp.mtls.store.etcd.prefix")

// ErrSharedStoreAbsent is wrapped by the errors of shared records whose
// store was never created (etcd: no marker under the prefix): no fleet
// uses it yet, so 'init' may create a CA to migrate into it.
var ErrSharedStoreAbsent = errors.New("the shared store does not exist")

// ErrNoCAKey is returned when the CA certificate is present but its key is
// not: a gateway that shares a store but does not issue runs without the
// key, and refuses issuance with this error.
var ErrNoCAKey = errors.New("pki: this host holds no CA key, so it cannot issue certificates")

// Records is where the inventory and the revocations live when they are not
// the state directory's files (issue 15): a store shared by several
// gateways, such as etcd. Each method is one atomic step on the shared
// store, never a read-modify-write of everything, so revoking stays O(1)
// in the number of revocations and two issuers cannot record the same
// serial. Implementations must be safe for concurrent use.
type Records interface {
	// AddIssued records an issued certificate; ErrSerialTaken (wrapped)
	// when its serial is already recorded.
	AddIssued(c IssuedCert) error
	// AddRevocation records r unless its serial is already revoked; then
	// it returns the existing record and an error wrapping
	// ErrAlreadyRevoked.
	AddRevocation(r Revocation) (Revocation, error)
	// IssuedCert returns the inventory entry of a canonical serial.
	IssuedCert(serial string) (c IssuedCert, ok bool, err error)
	// Issued returns the whole inventory, in any order.
	Issued() ([]IssuedCert, error)
	// Revoked returns every revocation, in any order.
	Revoked() ([]Revocation, error)
}

// healthReporter is the optional capability of Records that can say
// whether they are usable now (etcd: quorum, or the gateway's view
// staleness); Status reports its error as a problem.
type healthReporter interface{ Health() error }

// sharedCreator is the optional capability of shared Records whose store
// must be created before use (etcd: its marker under the prefix). Init on
// a host without a CA creates it when absent: created says whether this
// call did, so that of two hosts initializing a new fleet only the first
// gets a CA of its own, and the second is refused (ErrJoinSharedCA).
type sharedCreator interface {
	// CreateShared creates the store, recording caFingerprint (Fingerprint
	// of the CA certificate) as the CA of its fleet.
	CreateShared(now time.Time, caFingerprint string) (created bool, err error)
}

// caChecker is the optional capability of shared Records that know the CA
// of their fleet: CheckCA fails, wrapping ErrForeignCA, when it is not the
// one whose Fingerprint is caFingerprint. Issuance asks before it records
// a certificate, so that a host with a CA of its own (a file store
// migrated into the wrong prefix, a fleet started over without a new
// prefix) cannot fill the fleet's inventory with certificates no other
// gateway accepts.
type caChecker interface {
	CheckCA(caFingerprint string) error
}

// ErrForeignCA is returned when shared records belong to a fleet with
// another CA than this host's; nothing is recorded.
var ErrForeignCA = errors.New("pki: the shared store belongs to a fleet with another CA than this host's")

// WithRecords keeps the inventory and the revocations in r instead of the
// state directory's files; the CA and server files stay in the directory.
func WithRecords(r Records) Option { return func(s *Store) { s.records = r } }

// Records returns the shared records the Store uses, nil for the state
// directory's files.
func (s *Store) Records() Records { return s.records }

// revokeShared is RevokeReport on shared records: one conditional write,
// with the certificate's name from its inventory entry. The revocation
// count and the CRL are the file backend's (a lost file cannot happen to a
// replicated store); a CRL for other terminators is 'nefia mtls crl'.
func (s *Store) revokeShared(canon, reason string) (RevokeResult, error) {
	var res RevokeResult
	c, ok, err := s.records.IssuedCert(canon)
	switch {
	case err != nil:
		res.Warnings = append(res.Warnings, "the inventory cannot be read, so the certificate's name is unknown")
	case !ok:
		res.Warnings = append(res.Warnings, fmt.Sprintf("serial %s is not in the inventory; it is revoked anyway, check that it is the one you meant ('nefia mtls list')", canon))
	}
	r := Revocation{Serial: canon, RevokedAt: s.now().UTC(), Reason: reason, Name: c.Name}
	got, err := s.records.AddRevocation(r)
	if errors.Is(err, ErrAlreadyRevoked) {
		return RevokeResult{Revocation: got}, fmt.Errorf("%w: %s (%s) at %s", ErrAlreadyRevoked, canon, got.Name, got.RevokedAt.Format(time.RFC3339))
	}
	if err != nil {
		return RevokeResult{}, err
	}
	res.Revocation = got
	return res, nil
}

// listShared is List on shared records.
func (s *Store) listShared() ([]ListedCert, error) {
	inv, err := s.records.Issued()
	if err != nil {
		return nil, err
	}
	revoked, err := s.records.Revoked()
	if err != nil {
		return nil, err
	}
	isRevoked := make(map[string]bool, len(revoked))
	for _, r := range revoked {
		isRevoked[r.Serial] = true
	}
	now := s.now()
	out := make([]ListedCert, 0, len(inv))
	for _, c := range inv {
		out = append(out, ListedCert{IssuedCert: c, State: stateOf(c, isRevoked[c.Serial], now)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

// ImportRecords adds to the state directory's files the certificates and
// revocations they do not hold yet (by serial), under the state lock: the
// way back from a shared store ('nefia mtls store migrate --to file').
// Entries already present are left as they are, so running it twice
// changes nothing; the revocation count is raised so that a store lost
// later is recognised as lost. It returns how many of each it added.
func (s *Store) ImportRecords(certs []IssuedCert, revs []Revocation) (addedCerts, addedRevs int, err error) {
	for _, r := range revs {
		if canon, err := ParseSerial(r.Serial); err != nil || canon != r.Serial {
			return 0, 0, fmt.Errorf("%w: revocation of a malformed serial %q", ErrCorruptState, r.Serial)
		}
	}
	unlock, err := s.lock()
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	inv, err := s.readInventory()
	if err != nil {
		return 0, 0, err
	}
	rf, err := s.readRevoked()
	if err != nil {
		return 0, 0, err
	}
	have := make(map[string]bool, len(inv.Certificates))
	for _, c := range inv.Certificates {
		have[c.Serial] = true
	}
	for _, c := range certs {
		if !have[c.Serial] {
			inv.Certificates = append(inv.Certificates, c)
			have[c.Serial] = true
			addedCerts++
		}
	}
	revoked := make(map[string]bool, len(rf.Revoked))
	for _, r := range rf.Revoked {
		revoked[r.Serial] = true
	}
	for _, r := range revs {
		if !revoked[r.Serial] {
			rf.Revoked = append(rf.Revoked, r)
			revoked[r.Serial] = true
			addedRevs++
		}
	}
	if addedCerts == 0 && addedRevs == 0 {
		return 0, 0, nil
	}
	n := len(rf.Revoked)
	if inv.Revocations != nil {
		n = max(n, *inv.Revocations)
	}
	inv.Revocations = &n
	// The count first, then the store, as RevokeReport does.
	if err := s.writeInventory(inv); err != nil {
		return 0, 0, err
	}
	if err := s.writeRevoked(rf); err != nil {
		return 0, 0, err
	}
	return addedCerts, addedRevs, nil
}

// NameLookup is the optional capability of Records that can return one
// name's certificates without reading the whole inventory (etcd: a
// per-name index written by the issuance's own transaction). Without it,
// ListNamed filters List.
type NameLookup interface {
	IssuedByName(name string) ([]IssuedCert, error)
}

// RevocationLookup is the optional capability of Records that can read the
// revocation of one serial without reading every revocation.
type RevocationLookup interface {
	RevocationOf(serial string) (r Revocation, ok bool, err error)
}

// ListNamed returns the certificates named name with their states, oldest
// first: what issue-client --force, revoke --name and the renewal chain
// rule need, read per name on shared records (never O(all serials)).
func (s *Store) ListNamed(name string) ([]ListedCert, error) {
	nl, ok := s.records.(NameLookup)
	if !ok {
		list, err := s.List()
		if err != nil {
			return nil, err
		}
		out := list[:0:0]
		for _, c := range list {
			if c.Name == name {
				out = append(out, c)
			}
		}
		return out, nil
	}
	certs, err := nl.IssuedByName(name)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]ListedCert, 0, len(certs))
	for _, c := range certs {
		_, revoked, err := s.RevocationOf(c.Serial)
		if err != nil {
			return nil, err
		}
		out = append(out, ListedCert{IssuedCert: c, State: stateOf(c, revoked, now)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

// RevocationOf returns the revocation of a canonical serial, ok false when
// it is not revoked: one key on shared records that can, a scan of the
// revocation store otherwise.
func (s *Store) RevocationOf(serial string) (Revocation, bool, error) {
	if rl, ok := s.records.(RevocationLookup); ok {
		return rl.RevocationOf(serial)
	}
	revs, err := s.Revocations()
	if err != nil {
		return Revocation{}, false, err
	}
	for _, r := range revs {
		if r.Serial == serial {
			return r, true, nil
		}
	}
	return Revocation{}, false, nil
}

// lookupShared is Lookup on shared records: the serial's inventory entry
// and its revocation, two keys.
func (s *Store) lookupShared(canon string) (ListedCert, bool, error) {
	c, ok, err := s.records.IssuedCert(canon)
	if err != nil || !ok {
		return ListedCert{}, false, err
	}
	_, revoked, err := s.RevocationOf(canon)
	if err != nil {
		return ListedCert{}, false, err
	}
	return ListedCert{IssuedCert: c, State: stateOf(c, revoked, s.now())}, true, nil
}

// CRLNumbers is the optional capability of Records that reserve CRL
// numbers for every gateway sharing them (etcd: one key incremented in a
// transaction), so the CRLs the CA-holding gateways sign carry strictly
// increasing numbers whichever of them signs.
type CRLNumbers interface {
	// NextCRLNumber reserves and returns a number greater than every one
	// reserved before, and at least atLeast.
	NextCRLNumber(atLeast int64) (int64, error)
}

// refreshSharedCRL is refreshCRL on shared records (issue 15): the
// revocations are read from the records (a prefix read on etcd), the
// number is reserved there, and the CRL is signed with this host's CA key
// into CRLFile. The file is kept when it already lists exactly the
// revoked serials and is not near its nextUpdate.
func (s *Store) refreshSharedCRL(force bool) ([]byte, CRLInfo, error) {
	numbers, ok := s.records.(CRLNumbers)
	if !ok {
		return nil, CRLInfo{}, ErrCRLSharedStore
	}
	ca, key, err := s.LoadCA()
	if err != nil {
		return nil, CRLInfo{}, err
	}
	revs, err := s.records.Revoked()
	if err != nil {
		return nil, CRLInfo{}, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, CRLInfo{}, err
	}
	defer unlock()
	if !force {
		if der, crl, err := readCRL(s.Path(CRLFile), ca); err == nil && sameSerials(crl, revs) &&
			s.now().Before(crl.NextUpdate.Add(-CRLRefreshMargin)) && !s.now().Before(crl.ThisUpdate) {
			return der, describeCRL(crl, false), nil
		}
	}
	// Never below this host's own last CRL (one signed before the store
	// moved to etcd): numbers only ever increase.
	published, _ := publishedCRLNumber(s.Path(CRLFile))
	n, err := numbers.NextCRLNumber(published + 1)
	if err != nil {
		return nil, CRLInfo{}, err
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i].Serial < revs[j].Serial })
	return s.writeCRL(ca, key, revokedFile{Version: 1, CRLNumber: n, Revoked: revs})
}

// sameSerials reports whether crl lists exactly the serials of revs.
func sameSerials(crl *x509.RevocationList, revs []Revocation) bool {
	if len(crl.RevokedCertificateEntries) != len(revs) {
		return false
	}
	want := make(map[string]bool, len(revs))
	for _, r := range revs {
		want[r.Serial] = true
	}
	for _, e := range crl.RevokedCertificateEntries {
		if !want[FormatSerial(e.SerialNumber)] {
			return false
		}
	}
	return true
}
