package tools_test

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

// TestRevoke: revocation is idempotent, and every call closes the serial's
// live sessions, the repeat included.
func TestRevoke(t *testing.T) {
	e := newEnv(t)
	iss := pkitest.Issue(t, e.store, "laptop", pki.RoleAgent, time.Hour)
	e.sessions.live[iss.Serial] = 2

	first := e.call(tools.NameRevoke, map[string]any{"serial": iss.Serial, "reason": "laptop lost"})
	var out tools.RevokeOutput
	e.wantOK(tools.NameRevoke, first, &out)
	want := tools.RevokeOutput{Serial: iss.Serial, Name: "laptop", RevokedAt: pkitest.Epoch, Reason: "laptop lost", SessionsClosed: 2}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("first revoke = %+v, want %+v", out, want)
	}

	// Later, in another form of the same serial (openssl prints colons and
	// capitals); a session that survived must still be closed.
	e.clock.Advance(time.Hour)
	e.sessions.live[iss.Serial] = 1
	second := e.call(tools.NameRevoke, map[string]any{"serial": colonUpper(iss.Serial), "reason": "again"})
	e.wantOK(tools.NameRevoke, second, &out)
	want = tools.RevokeOutput{Serial: iss.Serial, Name: "laptop", RevokedAt: pkitest.Epoch, Reason: "laptop lost", AlreadyRevoked: true, SessionsClosed: 1}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("second revoke = %+v, want %+v (the original record)", out, want)
	}
	if !strings.Contains(second.text(), "Already revoked") {
		t.Errorf("text = %q", second.text())
	}

	if got := e.sessions.calls(); !slices.Equal(got, []string{iss.Serial, iss.Serial}) {
		t.Errorf("CloseSerial calls = %v, want the canonical serial twice", got)
	}
	revs, err := e.store.Revocations()
	if err != nil || len(revs) != 1 {
		t.Errorf("revocation store = %v, %v; want one entry", revs, err)
	}
}

func TestRevokeStdio(t *testing.T) {
	e := newEnv(t, stdioMode())
	iss := pkitest.Issue(t, e.store, "c", pki.RoleOperator, time.Hour)
	r := e.call(tools.NameRevoke, map[string]any{"serial": iss.Serial})
	var out tools.RevokeOutput
	e.wantOK(tools.NameRevoke, r, &out)
	if out.SessionsClosed != 0 || out.AlreadyRevoked {
		t.Errorf("got %+v", out)
	}
}

func TestRevokeBadInput(t *testing.T) {
	tests := []struct {
		name string
		args map[string]any
		want []string
	}{
		{"missing serial", map[string]any{}, []string{`"serial" is required`}},
		{"blank serial", map[string]any{"serial": "  "}, []string{`"serial" is required`}},
		{"serial is a number", map[string]any{"serial": 1234}, []string{`"serial" must be a string`}},
		{"serial not hex", map[string]any{"serial": "xyz"}, []string{`"serial"`, "not hexadecimal"}},
		{"serial zero", map[string]any{"serial": "00"}, []string{`"serial"`, "positive"}},
		{"reason with newline", map[string]any{"serial": "abcdef", "reason": "a\nb"}, []string{`"reason"`, "control characters"}},
		{"reason with a bidi override", map[string]any{"serial": "abcdef", "reason": "ok\u202egnp.exe"}, []string{`"reason"`, "U+202E"}},
		{"reason with a zero-width joiner", map[string]any{"serial": "abcdef", "reason": "a\u200db"}, []string{`"reason"`, "U+200D"}},
		{"reason too long", map[string]any{"serial": "abcdef", "reason": strings.Repeat("x", pki.MaxReasonLen+1)}, []string{`"reason"`, "at most"}},
		{"reason ill-typed", map[string]any{"serial": "abcdef", "reason": []string{"x"}}, []string{`"reason" must be a string`}},
		{"unknown argument", map[string]any{"serial": "abcdef", "name": "x"}, []string{`unknown argument "name"`, "reason, serial"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			pkitest.Issue(t, e.store, "c", pki.RoleAgent, time.Hour)
			e.wantRefused(tools.NameRevoke, e.call(tools.NameRevoke, tt.args), tt.want...)
			if revs, _ := e.store.Revocations(); len(revs) != 0 {
				t.Errorf("a refused revoke recorded %v", revs)
			}
			if calls := e.sessions.calls(); len(calls) != 0 {
				t.Errorf("a refused revoke closed sessions of %v", calls)
			}
		})
	}
}

// TestRevokeUnknownSerial (issue 10 item 5): with the inventory missing, a
// live certificate could not be revoked ("unknown serial"). Any
// well-formed serial is revoked now, with a warning in the result.
func TestRevokeUnknownSerial(t *testing.T) {
	e := newEnv(t)
	iss := pkitest.Issue(t, e.store, "c", pki.RoleAgent, time.Hour)
	if err := os.Remove(e.store.Path(pki.IssuedFile)); err != nil {
		t.Fatal(err)
	}
	r := e.call(tools.NameRevoke, map[string]any{"serial": iss.Serial})
	var out tools.RevokeOutput
	e.wantOK(tools.NameRevoke, r, &out)
	if out.Serial != iss.Serial || len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "not in the inventory") ||
		!strings.Contains(r.text(), "Warning: ") {
		t.Errorf("revoke of a serial the inventory lacks = %+v\n%s", out, r.text())
	}
	if revs, err := e.store.Revocations(); err != nil || len(revs) != 1 || revs[0].Serial != iss.Serial {
		t.Errorf("store = %+v, %v", revs, err)
	}
}

func TestRevokeCorruptState(t *testing.T) {
	e := newEnv(t)
	iss := pkitest.Issue(t, e.store, "c", pki.RoleAgent, time.Hour)
	writeFile(t, e.store.Path(pki.RevokedFile), `{"version": 1, "revoked": [{"serial": "XYZ"}]}`)
	r := e.call(tools.NameRevoke, map[string]any{"serial": iss.Serial})
	e.wantRefused(tools.NameRevoke, r, "failed", pki.RevokedFile)
	if calls := e.sessions.calls(); len(calls) != 0 {
		t.Errorf("sessions closed although the revocation was not recorded: %v", calls)
	}
}

// colonUpper renders a serial as openssl does: upper case, octets joined by
// colons.
func colonUpper(serial string) string {
	if len(serial)%2 == 1 {
		serial = "0" + serial
	}
	var parts []string
	for i := 0; i < len(serial); i += 2 {
		parts = append(parts, strings.ToUpper(serial[i:i+2]))
	}
	return strings.Join(parts, ":")
}
