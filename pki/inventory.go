package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// IssuedCert is one line of the inventory (mtls_issued.json): what was issued,
// to whom, for how long. The certificate itself is not kept: its fingerprint
// identifies it.
type IssuedCert struct {
	Serial      string    `json:"serial"`
	Name        string    `json:"name"`
	Role        Role      `json:"role"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Fingerprint string    `json:"fingerprint"`
	// Renews is the serial this certificate renewed (nefia.mtls.renew),
	// empty for a first issuance. Omitted when empty, so inventories
	// written before renewal existed read and write unchanged.
	Renews string `json:"renews,omitempty"`
}

// Lifetime is the validity the certificate was issued with, without the
// clock-skew backdating of NotBefore: what a renewal asks for again.
func (c IssuedCert) Lifetime() time.Duration {
	return c.NotAfter.Sub(c.NotBefore) - clockSkew
}

type inventoryFile struct {
	Version int `json:"version"`
	// Revocations is positive once a revocation was recorded in this
	// state directory: it is what tells a lost revocation store from one
	// that was never needed (see checkMissingStore). Since the revocation
	// log (issue 16) it is set on the first revocation (and by
	// ImportRecords), not raised on each, which would rewrite the whole
	// inventory per revocation. nil: an inventory written before the
	// count existed, which cannot vouch for anything.
	Revocations  *int         `json:"revocations,omitempty"`
	Certificates []IssuedCert `json:"certificates"`
}

// clone returns a copy of inv sharing nothing with it.
func (inv inventoryFile) clone() inventoryFile {
	out := inventoryFile{Version: inv.Version, Certificates: slices.Clone(inv.Certificates)}
	if inv.Revocations != nil {
		n := *inv.Revocations
		out.Revocations = &n
	}
	return out
}

// header renders the fields written before the certificates: the count
// goes first so a reader that needs only it can stop early.
func (inv inventoryFile) header() string {
	if inv.Revocations == nil {
		return ""
	}
	return `"revocations":` + strconv.Itoa(*inv.Revocations) + `,`
}

// readInventory loads mtls_issued.json. A missing file is an empty inventory
// (state dirs from before the first issuance); a corrupt one is an error. The
// result is the caller's to modify: cached entries are copied.
func (s *Store) readInventory() (inventoryFile, error) {
	path := s.Path(IssuedFile)
	ver, verErr := atomicfile.VersionOf(path)
	s.invMu.Lock()
	if verErr == nil && s.inv != nil && ver == s.invVer {
		inv := s.inv.clone()
		s.invMu.Unlock()
		return inv, nil
	}
	s.invMu.Unlock()

	data, err := atomicfile.ReadFileShared(path) // never mid-append
	if errors.Is(err, fs.ErrNotExist) {
		return inventoryFile{Version: 1}, nil
	}
	if err != nil {
		return inventoryFile{}, fmt.Errorf("pki: read %s: %w", path, err)
	}
	inv, appendable, torn, err := decodeInventory(path, data)
	if err != nil {
		return inv, err
	}
	if torn {
		s.logger().Warn("inventory torn by an interrupted append: its complete records are used, the partial tail is dropped at the next write",
			"file", IssuedFile)
	}
	size := int64(0)
	if appendable {
		size = int64(len(data))
	}
	s.cacheInventory(ver, verErr, inv, size)
	return inv, nil
}

// readInventoryFile is readInventory without a Store: the inventory at
// path, torn tails repaired, a missing file reported as fs.ErrNotExist.
func readInventoryFile(path string) (inventoryFile, error) {
	data, err := atomicfile.ReadFileShared(path)
	if err != nil {
		return inventoryFile{}, fmt.Errorf("pki: read %s: %w", path, err)
	}
	inv, _, _, err := decodeInventory(path, data)
	return inv, err
}

// writeInventory replaces the inventory and caches what it wrote.
func (s *Store) writeInventory(inv inventoryFile) error {
	path := s.Path(IssuedFile)
	data, err := encodeRecords(path, inv.header(), "certificates", inv.Certificates)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, recordMode); err != nil {
		return err
	}
	ver, err := atomicfile.VersionOf(path)
	s.cacheInventory(ver, err, inv, int64(len(data)))
	return nil
}

// cacheInventory keeps a private copy of inv as the contents of version ver
// (taken before the read, so a concurrent replacement only causes a re-read),
// and size when the file ends as writeRecords ends it (else 0).
func (s *Store) cacheInventory(ver atomicfile.Version, verErr error, inv inventoryFile, size int64) {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	if verErr != nil {
		s.inv = nil
		return
	}
	s.invVer, s.invSize = ver, size
	c := inv.clone()
	s.inv = &c
}

// CertState is where a client certificate is in its life.
type CertState string

// Certificate states, as reported by List and Status.
const (
	StateActive  CertState = "active"
	StateNotYet  CertState = "not_yet_valid"
	StateExpired CertState = "expired"
	StateRevoked CertState = "revoked"
)

// ListedCert is an inventory entry with its current state.
type ListedCert struct {
	IssuedCert
	State CertState `json:"state"`
}

// List returns every issued client certificate, oldest first, with its state
// at the Store's clock.
func (s *Store) List() ([]ListedCert, error) {
	if s.records != nil {
		return s.listShared()
	}
	inv, err := s.readInventory()
	if err != nil {
		return nil, err
	}
	revoked, err := s.readRevoked()
	if err != nil {
		return nil, err
	}
	isRevoked := make(map[string]bool, len(revoked.Revoked))
	for _, r := range revoked.Revoked {
		isRevoked[r.Serial] = true
	}
	now := s.now()
	out := make([]ListedCert, 0, len(inv.Certificates))
	for _, c := range inv.Certificates {
		out = append(out, ListedCert{IssuedCert: c, State: stateOf(c, isRevoked[c.Serial], now)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

func stateOf(c IssuedCert, revoked bool, now time.Time) CertState {
	switch {
	case revoked:
		return StateRevoked
	case now.After(c.NotAfter):
		return StateExpired
	case now.Before(c.NotBefore):
		return StateNotYet
	}
	return StateActive
}
