package pki_test

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// memRecords is an in-memory pki.Records, enough to test the Store's use
// of the seam without etcd (store/etcdstore tests the real one).
type memRecords struct {
	mu      sync.Mutex
	issued  map[string]pki.IssuedCert
	revoked map[string]pki.Revocation
	taken   int // AddIssued calls to refuse with ErrSerialTaken first
}

func newMem() *memRecords {
	return &memRecords{issued: map[string]pki.IssuedCert{}, revoked: map[string]pki.Revocation{}}
}

func (m *memRecords) AddIssued(c pki.IssuedCert) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.taken > 0 {
		m.taken--
		return pki.ErrSerialTaken
	}
	if _, ok := m.issued[c.Serial]; ok {
		return pki.ErrSerialTaken
	}
	m.issued[c.Serial] = c
	return nil
}

func (m *memRecords) AddRevocation(r pki.Revocation) (pki.Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.revoked[r.Serial]; ok {
		return old, pki.ErrAlreadyRevoked
	}
	m.revoked[r.Serial] = r
	return r, nil
}

func (m *memRecords) IssuedCert(serial string) (pki.IssuedCert, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.issued[serial]
	return c, ok, nil
}

func (m *memRecords) Issued() ([]pki.IssuedCert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []pki.IssuedCert
	for _, c := range m.issued {
		out = append(out, c)
	}
	return out, nil
}

func (m *memRecords) Revoked() ([]pki.Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []pki.Revocation
	for _, r := range m.revoked {
		out = append(out, r)
	}
	return out, nil
}

// TestStoreOnSharedRecords: with shared records the Store issues, lists
// and revokes through them and never touches the state directory's
// inventory or revocation files; a serial another issuer took is drawn
// again; the CRL, built from the files, is refused rather than signed
// without the shared revocations (issue 15 item 2).
func TestStoreOnSharedRecords(t *testing.T) {
	t.Parallel()
	files := pkitest.NewStore(t)
	mem := newMem()
	mem.taken = 2 // the first two serials drawn are "taken by another gateway"
	s := pki.NewStore(files.Dir(), pki.WithRecords(mem))
	iss, err := s.Issue(pki.IssueRequest{Name: "a", Duration: time.Hour})
	if err != nil {
		t.Fatalf("issue after two taken serials: %v", err)
	}
	if _, err := s.Revoke(iss.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(iss.Serial, "again"); !errors.Is(err, pki.ErrAlreadyRevoked) {
		t.Errorf("second revoke: %v, want ErrAlreadyRevoked", err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].State != pki.StateRevoked || list[0].Name != "a" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if fl, err := files.List(); err != nil || len(fl) != 0 {
		t.Errorf("the file inventory changed: %+v, %v", fl, err)
	}
	if rv, err := files.Revocations(); err != nil || len(rv) != 0 {
		t.Errorf("the file revocation store changed: %+v, %v", rv, err)
	}
	if _, err := s.RefreshCRL(true); !errors.Is(err, pki.ErrCRLSharedStore) {
		t.Errorf("RefreshCRL on shared records: %v, want ErrCRLSharedStore", err)
	}
	mem.taken = 3 // every attempt taken: Issue gives up
	if _, err := s.Issue(pki.IssueRequest{Name: "b", Duration: time.Hour}); !errors.Is(err, pki.ErrSerialTaken) {
		t.Errorf("issue with every serial taken: %v", err)
	}
}

// TestIssueWithoutCAKey: a host with the CA certificate but not its key
// refuses issuance with ErrNoCAKey, which the tool turns into a clear
// refusal (issue 15 item 2).
func TestIssueWithoutCAKey(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	if err := os.Remove(s.Path(pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Issue(pki.IssueRequest{Name: "a", Duration: time.Hour}); !errors.Is(err, pki.ErrNoCAKey) {
		t.Errorf("issue without the CA key: %v, want ErrNoCAKey", err)
	}
}
