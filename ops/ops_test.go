package ops_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// newService is a Service over a fresh store (with a CA unless noCA) and a
// trail of its own.
func newService(t *testing.T, noCA bool) (*ops.Service, *audit.Logger) {
	t.Helper()
	var store *pki.Store
	if noCA {
		store = pki.NewStore(t.TempDir())
	} else {
		store = pkitest.NewStore(t)
	}
	trail, err := audit.Open(filepath.Join(t.TempDir(), "audit"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	return &ops.Service{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml"), Audit: ops.Shared(trail)}, trail
}

func records(t *testing.T, trail *audit.Logger) []audit.Record {
	t.Helper()
	if err := trail.Flush(); err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Tail(trail.Dir(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

var (
	operator = identity.Agent{Name: "ops", Role: pki.RoleOperator, Transport: identity.TransportCLI}
	agent    = identity.Agent{Name: "bot", Serial: "0a", Role: pki.RoleAgent, Transport: identity.TransportStream}
)

// TestStateChangeRefusedWithoutAudit: no audit, no action, for every
// operation, whichever edge calls it.
func TestStateChangeRefusedWithoutAudit(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, false)
	iss := pkitest.Issue(t, svc.Store, "victim", pki.RoleAgent, time.Hour)
	svc.Audit = func() (ops.Trail, func(), error) { return nil, nil, errors.New("disk gone") }
	out := t.TempDir()
	ctx := t.Context()
	_, errInit := svc.Init(ctx, operator, ops.InitRequest{Hosts: []string{"localhost"}, Force: true})
	_, errIssue := svc.Issue(ctx, operator, ops.IssueRequest{Name: "c", OutDir: out})
	_, errRevoke := svc.Revoke(ctx, operator, ops.RevokeRequest{Serial: iss.Serial})
	for name, err := range map[string]error{"init": errInit, "issue": errIssue, "revoke": errRevoke} {
		if !errors.Is(err, ops.ErrUnaudited) {
			t.Errorf("%s without a trail: %v, want ErrUnaudited", name, err)
		}
	}
	if list, _ := svc.Store.List(); len(list) != 1 {
		t.Errorf("inventory = %v, want only the victim", list)
	}
	if revs, _ := svc.Store.Revocations(); len(revs) != 0 {
		t.Errorf("revoked without a record: %v", revs)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("bundle written without a record: %v", entries)
	}
}

// TestIssueNeverAboveTheActor: the privilege rule holds for every edge,
// before anything is recorded or issued.
func TestIssueNeverAboveTheActor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		actor identity.Agent
		role  string
		ok    bool
	}{
		{"operator issues operator", operator, "operator", true},
		{"agent issues agent", agent, "agent", true},
		{"agent issues operator", agent, "operator", false},
		{"no role issues agent", identity.Agent{Name: "x"}, "agent", false},
		{"unknown role issues agent", identity.Agent{Name: "x", Role: "admin"}, "agent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc, trail := newService(t, false)
			_, err := svc.Issue(t.Context(), tt.actor, ops.IssueRequest{Name: "c", Role: tt.role, OutDir: t.TempDir()})
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ops.ErrPermission) {
				t.Fatalf("err = %v, want ErrPermission", err)
			}
			if list, _ := svc.Store.List(); len(list) != 0 {
				t.Errorf("issued above the actor: %v", list)
			}
			if recs := records(t, trail); len(recs) != 0 {
				t.Errorf("a refused request left %d records", len(recs))
			}
		})
	}
}

// TestInitRecordsWhetherMTLSWasEnabled: the configuration is updated
// inside the audited action, so a failure to enable mTLS is the recorded
// outcome (the CLI used to record "ok" and fail afterwards).
func TestInitRecordsWhetherMTLSWasEnabled(t *testing.T) {
	t.Parallel()
	svc, trail := newService(t, true)
	if err := os.MkdirAll(svc.ConfigPath, 0o700); err != nil { // a directory where the file should be
		t.Fatal(err)
	}
	res, err := svc.Init(t.Context(), operator, ops.InitRequest{Hosts: []string{"localhost"}})
	if !errors.Is(err, ops.ErrNotEnabled) || res.InitResult == nil {
		t.Fatalf("Init = %+v, %v; want the CA and ErrNotEnabled", res, err)
	}
	recs := records(t, trail)
	if len(recs) != 2 {
		t.Fatalf("%d records, want started and ended", len(recs))
	}
	end := recs[1]
	if end.Event != audit.EventInit || end.Outcome != audit.OutcomeError || end.Result["mtls_enabled"] != false || end.Result["ca"] == nil {
		t.Errorf("ending record = %+v", end)
	}
	if end.Agent == nil || end.Agent.Name != "ops" || end.Transport != identity.TransportCLI {
		t.Errorf("record does not name the actor: %+v", end)
	}
}

// endFails is a trail whose starting records are written and whose ending
// records are not.
type endFails struct{}

func (endFails) Begin(audit.Record) (func(string, map[string]any, error) error, error) {
	return func(string, map[string]any, error) error { return errors.New("disk full") }, nil
}

type closer struct{ closed []string }

func (c *closer) CloseSerial(serial string) int { c.closed = append(c.closed, serial); return 1 }

// TestUnrecordedOutcomeStillFinishes: a revocation whose ending record
// fails was made all the same (its started record covers it), so its
// sessions are closed and its result returned, with ErrOutcomeUnrecorded.
func TestUnrecordedOutcomeStillFinishes(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, false)
	iss := pkitest.Issue(t, svc.Store, "victim", pki.RoleAgent, time.Hour)
	sessions := &closer{}
	svc.Audit, svc.Sessions = ops.Shared(endFails{}), sessions
	res, err := svc.Revoke(t.Context(), agent, ops.RevokeRequest{Serial: iss.Serial})
	if !errors.Is(err, ops.ErrOutcomeUnrecorded) {
		t.Fatalf("err = %v, want ErrOutcomeUnrecorded", err)
	}
	if res.Serial != iss.Serial || res.SessionsClosed != 1 || len(sessions.closed) != 1 {
		t.Errorf("result %+v, closed %v; want the revocation and its session closed", res, sessions.closed)
	}
}

// TestRevokeNeverAboveTheActor (review of issue 10/11): a policy may let an
// agent call nefia.mtls.revoke, but the operation still refuses to revoke a
// certificate of a higher role, or one the inventory cannot vouch for.
func TestRevokeNeverAboveTheActor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		actor  identity.Agent
		target string // "operator", "agent" or "unknown"
		ok     bool
	}{
		{"operator revokes operator", operator, "operator", true},
		{"operator revokes unknown serial", operator, "unknown", true},
		{"agent revokes agent", agent, "agent", true},
		{"agent revokes operator", agent, "operator", false},
		{"agent revokes unknown serial", agent, "unknown", false},
		{"no role revokes agent", identity.Agent{Name: "x"}, "agent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc, trail := newService(t, false)
			serial := "7f3a"
			if tt.target != "unknown" {
				serial = pkitest.Issue(t, svc.Store, "victim", pki.Role(tt.target), time.Hour).Serial
			}
			_, err := svc.Revoke(t.Context(), tt.actor, ops.RevokeRequest{Serial: serial})
			revs, _ := svc.Store.Revocations()
			if tt.ok {
				if err != nil || len(revs) != 1 {
					t.Fatalf("err = %v, revocations %v; want one", err, revs)
				}
				return
			}
			if !errors.Is(err, ops.ErrPermission) {
				t.Fatalf("err = %v, want ErrPermission", err)
			}
			if len(revs) != 0 {
				t.Errorf("revoked above the actor: %v", revs)
			}
			if recs := records(t, trail); len(recs) != 0 {
				t.Errorf("a refused request left %d records", len(recs))
			}
		})
	}
}

// TestInitOperatorsOnly: replacing the CA locks everyone out, so no policy
// can let an agent do it.
func TestInitOperatorsOnly(t *testing.T) {
	t.Parallel()
	for _, actor := range []identity.Agent{agent, {Name: "x"}, {Name: "x", Role: "admin"}} {
		svc, _ := newService(t, true)
		_, err := svc.Init(t.Context(), actor, ops.InitRequest{Hosts: []string{"localhost"}, Force: true})
		if !errors.Is(err, ops.ErrPermission) {
			t.Errorf("init by %+v: %v, want ErrPermission", actor, err)
		}
		if _, err := os.Stat(svc.Store.Path(pki.CACertFile)); err == nil {
			t.Errorf("init by %+v created a CA", actor)
		}
	}
}
