package pki_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestParseSerial(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"0a1b2c", "a1b2c", true},
		{"0A:1B:2C", "a1b2c", true},
		{" DEADbeef ", "deadbeef", true},
		{"0xff", "ff", true},
		{"", "", false},
		{"00", "", false},
		{"xyz", "", false},
		{"-1", "", false},
		{"::", "", false},
		{strings.Repeat("f", 60), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := pki.ParseSerial(tt.in)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("ParseSerial(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
			if err != nil && !errors.Is(err, pki.ErrInvalidSerial) {
				t.Errorf("error %v is not ErrInvalidSerial", err)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pkitest.NewStore(t, pki.WithClock(clock))
	iss := pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)
	other := pkitest.Issue(t, s, "other", pki.RoleAgent, time.Hour)

	// Accept openssl's upper-case, colon-separated form.
	n, _ := new(big.Int).SetString(iss.Serial, 16)
	var colon []string
	for _, b := range n.Bytes() {
		colon = append(colon, fmt.Sprintf("%02X", b))
	}
	rev, err := s.Revoke(strings.Join(colon, ":"), "key leaked")
	if err != nil {
		t.Fatal(err)
	}
	if rev.Serial != iss.Serial || rev.Name != "bot" || rev.Reason != "key leaked" || !rev.RevokedAt.Equal(pkitest.Epoch) {
		t.Errorf("revocation = %+v", rev)
	}

	clock.Advance(time.Minute)
	again, err := s.Revoke(iss.Serial, "again")
	if !errors.Is(err, pki.ErrAlreadyRevoked) || again != rev {
		t.Errorf("second revoke = %+v, %v; want the original record and ErrAlreadyRevoked", again, err)
	}

	for _, tt := range []struct {
		name, serial, reason string
		want                 error
	}{
		{"malformed serial", "zz", "", pki.ErrInvalidSerial},
		{"control chars in reason", other.Serial, "a\nb", nil},
		{"reason too long", other.Serial, strings.Repeat("r", pki.MaxReasonLen+1), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(s.Path(pki.RevokedFile))
			_, err := s.Revoke(tt.serial, tt.reason)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if after, _ := os.ReadFile(s.Path(pki.RevokedFile)); !bytes.Equal(before, after) {
				t.Error("a refused revoke changed the store")
			}
		})
	}
	list, _ := s.List()
	states := map[string]pki.CertState{}
	for _, c := range list {
		states[c.Name] = c.State
	}
	if states["bot"] != pki.StateRevoked || states["other"] != pki.StateActive {
		t.Errorf("states = %v", states)
	}
	if st := s.Status(); st.Clients != (pki.ClientCounts{Issued: 2, Active: 1, Revoked: 1}) {
		t.Errorf("status counts = %+v", st.Clients)
	}
}

func TestCorruptRevocationStore(t *testing.T) {
	s := pkitest.NewStore(t)
	iss := pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)
	for _, garbage := range []string{"", "{", `{"version":1,"revoked":[{"serial":"XYZ"}]}`, `{"version":7,"revoked":[]}`, `[1,2]`} {
		if err := os.WriteFile(s.Path(pki.RevokedFile), []byte(garbage), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Revoke(iss.Serial, ""); !errors.Is(err, pki.ErrCorruptState) || !strings.Contains(err.Error(), pki.RevokedFile) {
			t.Errorf("%q: revoke err = %v, want ErrCorruptState naming the file", garbage, err)
		}
		if data, _ := os.ReadFile(s.Path(pki.RevokedFile)); string(data) != garbage {
			t.Errorf("%q: corrupt store was rewritten", garbage)
		}
		if st := s.Status(); len(st.Problems) == 0 {
			t.Errorf("%q: status reports no problem", garbage)
		}
	}
}

func TestConcurrentRevokesLoseNothing(t *testing.T) {
	s := pkitest.NewStore(t)
	const n = 30
	serials := make([]string, n)
	for i := range serials {
		serials[i] = pkitest.Issue(t, s, fmt.Sprintf("c%d", i), pki.RoleAgent, time.Hour).Serial
	}
	var wg sync.WaitGroup
	for _, serial := range serials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Revoke(serial, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	revs, err := s.Revocations()
	if err != nil || len(revs) != n {
		t.Fatalf("store holds %d revocations (%v), want %d", len(revs), err, n)
	}
}
