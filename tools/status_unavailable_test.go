package tools_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

// unavailableRecords is shared storage that cannot be reached, like an etcd
// cluster without quorum: every read fails and Health says why.
type unavailableRecords struct{}

var errUnreachable = errors.New("context deadline exceeded")

func (unavailableRecords) AddIssued(pki.IssuedCert) error { return errUnreachable }
func (unavailableRecords) AddRevocation(pki.Revocation) (pki.Revocation, error) {
	return pki.Revocation{}, errUnreachable
}
func (unavailableRecords) IssuedCert(string) (pki.IssuedCert, bool, error) {
	return pki.IssuedCert{}, false, errUnreachable
}
func (unavailableRecords) Issued() ([]pki.IssuedCert, error)  { return nil, errUnreachable }
func (unavailableRecords) Revoked() ([]pki.Revocation, error) { return nil, errUnreachable }

type unhealthyRecords struct{ unavailableRecords }

func (unhealthyRecords) Health() error { return errUnreachable }

// TestStatusStoreUnavailable (issue 16 item 6): with the shared store
// unreachable, status reported "0 issued, 0 active, 0 expired, 0 revoked",
// an empty fleet that may hold thousands of certificates. The counts are now
// null, with the reason in clients_error and in the text.
func TestStatusStoreUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		records pki.Records
	}{
		{name: "health fails", records: unhealthyRecords{}},
		{name: "list fails", records: unavailableRecords{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			seed := pkitest.NewStore(t)
			s := pki.NewStore(seed.Dir(), pki.WithRecords(tt.records))
			r := tools.BuildStatus(s, config.Loaded{Config: config.Default()}, nil)
			if r.Clients != nil {
				t.Errorf("clients = %+v, want null (unknown)", *r.Clients)
			}
			if !strings.Contains(r.ClientsError, "store unavailable: ") || !strings.Contains(r.ClientsError, errUnreachable.Error()) {
				t.Errorf("clients_error = %q", r.ClientsError)
			}
			var m map[string]any
			data, _ := json.Marshal(r)
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			if v, ok := m["clients"]; !ok || v != nil {
				t.Errorf("JSON clients = %v (present %v), want null", v, ok)
			}
			if text := tools.RenderStatus(r); !strings.Contains(text, "client certificates: unknown (store unavailable: ") {
				t.Errorf("text:\n%s", text)
			}
		})
	}
}

// TestStatusFileBackendJSONUnchanged: the file backend's JSON keeps its
// counts object and gains no clients_error key.
func TestStatusFileBackendJSONUnchanged(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	data, err := json.Marshal(tools.BuildStatus(s, config.Loaded{Config: config.Default()}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"clients":{"issued":0,"active":0,"expired":0,"revoked":0}`) || strings.Contains(string(data), "clients_error") {
		t.Errorf("JSON: %s", data)
	}
}

// countingRecords is unhealthyRecords counting every access, each of
// which would wait for etcd's 5 s timeout.
type countingRecords struct {
	unhealthyRecords
	n *atomic.Int32
}

func (c countingRecords) Health() error { c.n.Add(1); return errUnreachable }
func (c countingRecords) Issued() ([]pki.IssuedCert, error) {
	c.n.Add(1)
	return nil, errUnreachable
}
func (c countingRecords) Revoked() ([]pki.Revocation, error) {
	c.n.Add(1)
	return nil, errUnreachable
}

// TestStatusStoreUnavailableAsksOnce: with the store out of reach, status
// asks it once; it used to ask again for the expiring certificates, so
// 'nefia mtls status' took two etcd timeouts (10 s) instead of one.
func TestStatusStoreUnavailableAsksOnce(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	s := pki.NewStore(pkitest.NewStore(t).Dir(), pki.WithRecords(countingRecords{n: &n}))
	if r := tools.BuildStatus(s, config.Loaded{Config: config.Default()}, nil); r.ClientsError == "" {
		t.Fatal("status found the store available")
	}
	if got := n.Load(); got != 1 {
		t.Errorf("status asked the unreachable store %d times, want 1", got)
	}
}
