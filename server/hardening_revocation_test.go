package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// TestRuntimeRevocationStoreCorruption (issue 7, item 6): mtls_revoked.json
// is damaged while the gateway serves. New handshakes must be refused (fail
// closed: a store that cannot be read could be hiding a revocation), the
// refusal audited with its reason, the log must say why without waiting for
// a client, and nefia.mtls.status must report the problem; once the file is
// restored, service resumes without a restart. One gateway goes through
// every case in turn, so recovery is proven repeatedly.
//
// Sessions that were open before the damage stay open: they were checked
// against the last readable store, and nothing can be revoked in a store
// that does not parse (pki refuses to rewrite it).
func TestRuntimeRevocationStoreCorruption(t *testing.T) {
	noLeaks(t)
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.RevocationPoll = 20 * time.Millisecond
	})
	path := gw.Store.Path(pki.RevokedFile)
	gone := gw.Issue("gone", pki.RoleAgent, time.Hour)
	if _, err := gw.Store.Revoke(gone.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	// Fold the revocation log (issue 16) into the store, so the store's
	// bytes hold the revocation the cases corrupt.
	if _, err := gw.Store.RefreshCRL(true); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	agent := gw.Cert("agent", pki.RoleAgent)
	ops := gw.Cert("ops", pki.RoleOperator)
	live, err := dialRPC(gw, gw.ClientConfig(&ops))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	inPlace := func(data []byte) func(t *testing.T) {
		return func(t *testing.T) { // as a crash mid-write or an editor would leave it
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T)
	}{
		{name: "truncated", corrupt: inPlace(good[:len(good)/2])},
		{name: "garbage", corrupt: inPlace([]byte("\x00\x9f\xffnot json at all\x01"))},
		{name: "empty", corrupt: inPlace(nil)},
		{name: "wrong version", corrupt: func(t *testing.T) {
			writeAtomic(t, path, edited(t, good, func(m map[string]any) { m["version"] = 7 }))
		}},
		{name: "malformed serial", corrupt: func(t *testing.T) {
			writeAtomic(t, path, edited(t, good, func(m map[string]any) {
				entry := m["revoked"].([]any)[0].(map[string]any)
				entry["serial"] = "zz-" + entry["serial"].(string)
			}))
		}},
		{name: "deleted", corrupt: func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A session ticket from before the damage, to try resuming with.
			resuming := gw.ClientConfig(&agent)
			resuming.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			if err := gw.Probe(resuming); err != nil {
				t.Fatalf("refused before the damage: %v", err)
			}
			mark := logs.len()
			before := len(gw.AuditRecords())
			tt.corrupt(t)

			// The log says why, before any client tries.
			waitFor(t, func() bool {
				return logs.has(mark, slog.LevelError, "revocation store unavailable", pki.RevokedFile)
			})
			// Fail closed, audited with the reason.
			if err := gw.Probe(gw.ClientConfig(&agent)); err == nil {
				t.Fatal("a handshake succeeded while the revocation store is damaged")
			}
			waitFor(t, func() bool {
				recs := gw.AuditRecords()
				for _, r := range recs[before:] {
					if r.Event == audit.EventConnectionRejected && r.Reason == server.ReasonRevocationErr &&
						r.Agent != nil && r.Agent.Name == "agent" {
						return true
					}
				}
				return false
			})
			// Resumption does not get around it either (the policy runs on
			// resumed handshakes too).
			if err := gw.Probe(resuming); err == nil {
				t.Error("a resumed handshake succeeded while the revocation store is damaged")
			}
			// The open session still works and status names the problem.
			res, err := live.status()
			if err != nil {
				t.Fatalf("status on a live session: %v", err)
			}
			problems, _ := res.StructuredContent["problems"].([]any)
			reported := false
			for _, p := range problems {
				if s, _ := p.(string); strings.Contains(s, pki.RevokedFile) {
					reported = true
				}
			}
			if !reported {
				t.Errorf("status does not report the damaged %s: problems %v", pki.RevokedFile, problems)
			}

			// Restored as pki writes it (atomically): service resumes.
			mark = logs.len()
			writeAtomic(t, path, good)
			if err := gw.Probe(gw.ClientConfig(&agent)); err != nil {
				t.Fatalf("still refused after the store was restored: %v", err)
			}
			waitFor(t, func() bool { return logs.has(mark, slog.LevelInfo, "revocation store readable again", "") })
			revoked := pkitest.KeyPair(t, gone)
			if err := gw.Probe(gw.ClientConfig(&revoked)); err == nil {
				t.Error("the revoked certificate gets in after the restore")
			}
			res, err = live.status()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range res.StructuredContent["problems"].([]any) {
				if strings.Contains(p.(string), pki.RevokedFile) {
					t.Errorf("status still reports %q after the restore", p)
				}
			}
		})
	}
}

// edited returns the JSON document doc changed by edit, whatever its layout.
func edited(t *testing.T, doc []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logRecorder is a slog.Handler that keeps every record for inspection.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

func (l *logRecorder) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// has reports whether a record from index from on has this level, a message
// containing msg and, unless attr is empty, an attribute value containing
// attr.
func (l *logRecorder) has(from int, level slog.Level, msg, attr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs[from:] {
		if r.Level != level || !strings.Contains(r.Message, msg) {
			continue
		}
		found := attr == ""
		r.Attrs(func(a slog.Attr) bool {
			found = found || strings.Contains(a.Value.String(), attr)
			return !found
		})
		if found {
			return true
		}
	}
	return false
}
