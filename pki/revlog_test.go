package pki_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestRevocationLogStates extends TestMissingRevocationStoreMatrix to the
// revocation log (issue 16): for each state of the store and its log, the
// gateway's checker and the next Revoke agree, a revocation recorded in
// the log is never forgotten, and where they fail closed nothing is
// written.
func TestRevocationLogStates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup damages the state after "a" was revoked (in the log).
		setup func(t *testing.T, s *pki.Store)
		// failClosed: the checker refuses, Revoke returns ErrCorruptState.
		failClosed bool
		// aRevoked: "a" is still revoked (false only where the torn line
		// was a's own, never acknowledged).
		aLost bool
	}{
		{name: "store and log", setup: func(*testing.T, *pki.Store) {}},
		{name: "log folded into the store", setup: func(t *testing.T, s *pki.Store) {
			if _, err := s.RefreshCRL(true); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "log missing, store says it keeps one", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			rm(t, s.Path(pki.RevokedLogFile))
		}},
		{name: "log missing, store from before the log", setup: func(t *testing.T, s *pki.Store) {
			if _, err := s.RefreshCRL(true); err != nil { // a into the store
				t.Fatal(err)
			}
			data, _ := os.ReadFile(s.Path(pki.RevokedFile))
			data = bytes.Replace(data, []byte(`{"version":2,`), []byte(`{"version":1,`), 1)
			write(t, s.Path(pki.RevokedFile), bytes.Replace(data, []byte(`"log":true,`), nil, 1))
			rm(t, s.Path(pki.RevokedLogFile))
		}},
		{name: "version 2 store without its log flag", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			data, _ := os.ReadFile(s.Path(pki.RevokedFile))
			write(t, s.Path(pki.RevokedFile), bytes.Replace(data, []byte(`"log":true,`), nil, 1))
		}},
		{name: "torn last line (no newline)", setup: func(t *testing.T, s *pki.Store) {
			appendTo(t, s.Path(pki.RevokedLogFile), `{"serial":"abc","revoked_at":"2026-`)
		}},
		{name: "zeros where an append never reached the disk", setup: func(t *testing.T, s *pki.Store) {
			appendTo(t, s.Path(pki.RevokedLogFile), "\x00\x00\x00\x00\x00\x00")
		}},
		{name: "a's own line torn", aLost: true, setup: func(t *testing.T, s *pki.Store) {
			p := s.Path(pki.RevokedLogFile)
			data, _ := os.ReadFile(p)
			write(t, p, data[:len(data)-5])
		}},
		{name: "complete line that does not parse", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			appendTo(t, s.Path(pki.RevokedLogFile), "{not json\n")
		}},
		{name: "zeros then a newline (page-torn)", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			appendTo(t, s.Path(pki.RevokedLogFile), "\x00\x00\x00\n")
		}},
		{name: "malformed serial in a line", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			appendTo(t, s.Path(pki.RevokedLogFile), `{"serial":"00AB","revoked_at":"2026-01-01T00:00:00Z","name":""}`+"\n")
		}},
		{name: "log is a directory", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			rm(t, s.Path(pki.RevokedLogFile))
			if err := os.Mkdir(s.Path(pki.RevokedLogFile), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "store missing, log holds revocations", failClosed: true, setup: func(t *testing.T, s *pki.Store) {
			rm(t, s.Path(pki.RevokedFile))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := pkitest.NewStore(t)
			a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
			b := pkitest.Issue(t, s, "b", pki.RoleAgent, time.Hour)
			if _, err := s.Revoke(a.Serial, "test"); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, s)
			storeBefore, _ := os.ReadFile(s.Path(pki.RevokedFile))
			logBefore, _ := os.ReadFile(s.Path(pki.RevokedLogFile))

			checkErr := pki.NewRevocationChecker(s.Path(pki.RevokedFile)).Check(pkitest.KeyPair(t, a).Leaf)
			_, revokeErr := s.Revoke(b.Serial, "")
			if tt.failClosed {
				if !errors.Is(checkErr, pki.ErrRevocationUnavailable) {
					t.Errorf("checker = %v, want ErrRevocationUnavailable", checkErr)
				}
				if !errors.Is(revokeErr, pki.ErrCorruptState) {
					t.Errorf("revoke = %v, want ErrCorruptState", revokeErr)
				}
				storeAfter, _ := os.ReadFile(s.Path(pki.RevokedFile))
				logAfter, _ := os.ReadFile(s.Path(pki.RevokedLogFile))
				if !bytes.Equal(storeBefore, storeAfter) || !bytes.Equal(logBefore, logAfter) {
					t.Error("a refused revoke wrote the store or its log")
				}
				return
			}
			if tt.aLost {
				if checkErr != nil {
					t.Errorf("checker = %v for a torn, unacknowledged line, want it ignored", checkErr)
				}
			} else if !errors.Is(checkErr, pki.ErrRevoked) {
				t.Errorf("checker = %v, want ErrRevoked", checkErr)
			}
			if revokeErr != nil {
				t.Fatalf("revoke = %v", revokeErr)
			}
			revs, err := s.Revocations()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{b.Serial: true}
			if !tt.aLost {
				want[a.Serial] = true
			}
			for _, r := range revs {
				delete(want, r.Serial)
			}
			if len(want) != 0 {
				t.Errorf("revocations %+v miss %v", revs, want)
			}
			// The next writer cut the torn tail: the log is whole lines.
			if data, _ := os.ReadFile(s.Path(pki.RevokedLogFile)); len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) || bytes.Contains(data, []byte{0}) {
				t.Errorf("log left torn: %q", data)
			}
			c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
			if err := c.Check(pkitest.KeyPair(t, b).Leaf); !errors.Is(err, pki.ErrRevoked) {
				t.Errorf("fresh checker on b = %v", err)
			}
		})
	}
}

// TestCheckerReadsLogIncrementally: a loaded checker learns of a new
// revocation by reading only the log's new line (the store is not
// re-read), and keeps every revocation across a fold, which replaces the
// store and empties the log.
func TestCheckerReadsLogIncrementally(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	var certs []*pki.Issued
	for _, n := range []string{"a", "b", "c"} {
		certs = append(certs, pkitest.Issue(t, s, n, pki.RoleAgent, time.Hour))
	}
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	storeBefore, _ := os.Stat(s.Path(pki.RevokedFile))
	if _, err := s.Revoke(certs[0].Serial, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(pkitest.KeyPair(t, certs[0]).Leaf); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("after a logged revocation: %v", err)
	}
	if after, _ := os.Stat(s.Path(pki.RevokedFile)); !os.SameFile(storeBefore, after) {
		t.Error("a revocation rewrote the store instead of appending to the log")
	}
	if _, err := s.RefreshCRL(true); err != nil { // a fold
		t.Fatal(err)
	}
	if _, err := s.Revoke(certs[1].Serial, ""); err != nil {
		t.Fatal(err)
	}
	for _, x := range certs[:2] {
		if err := c.Check(pkitest.KeyPair(t, x).Leaf); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("%s after a fold: %v", x.Name, err)
		}
	}
	if err := c.Check(pkitest.KeyPair(t, certs[2]).Leaf); err != nil {
		t.Fatalf("c: %v", err)
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
}

func rm(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, p, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestForceInitArchivesTheLog: a forced re-init archives the revocation
// log with the store it belongs to, so the archive keeps every
// revocation of the old CA generation.
func TestForceInitArchivesTheLog(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
	if _, err := s.Revoke(a.Serial, ""); err != nil {
		t.Fatal(err)
	}
	res, err := s.Init(pki.InitOptions{Hosts: []string{"localhost"}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	old := pki.NewStore(res.ArchivedTo)
	revs, err := old.Revocations()
	if err != nil || len(revs) != 1 || revs[0].Serial != a.Serial {
		t.Fatalf("archived revocations = %+v, %v", revs, err)
	}
	if revs, err := s.Revocations(); err != nil || len(revs) != 0 {
		t.Fatalf("new generation's revocations = %+v, %v", revs, err)
	}
}

// TestStoreWithLogIsVersion2: a store that keeps a log is written as
// version 2, so a nefia from before the log — which read only version 1
// and ignored the "log" field — refuses it (fails closed) instead of
// admitting certificates that only the log says are revoked. A store from
// before the log is converted with its (empty) log created first, so no
// crash leaves a store that names a log with none beside it.
func TestStoreWithLogIsVersion2(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
	if _, err := s.RefreshCRL(true); err != nil { // the store is written whole
		t.Fatal(err)
	}
	// Back to the layout of the release before the log: version 1, no log.
	data, _ := os.ReadFile(s.Path(pki.RevokedFile))
	data = bytes.Replace(data, []byte(`{"version":2,`), []byte(`{"version":1,`), 1)
	write(t, s.Path(pki.RevokedFile), bytes.Replace(data, []byte(`"log":true,`), nil, 1))
	rm(t, s.Path(pki.RevokedLogFile))

	if _, err := s.Revoke(a.Serial, "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path(pki.RevokedLogFile)); err != nil {
		t.Fatalf("no log after converting a store from before the log: %v", err)
	}
	if _, err := s.RefreshCRL(true); err != nil { // fold: the store is rewritten
		t.Fatal(err)
	}
	data, _ = os.ReadFile(s.Path(pki.RevokedFile))
	if !bytes.HasPrefix(data, []byte(`{"version":2,`)) || !bytes.Contains(data, []byte(`"log":true`)) {
		t.Fatalf("store with a log written as %.40q, want version 2 with \"log\":true", data)
	}
	// What the release before the log checked: version 1 only.
	var old struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &old); err != nil || old.Version == 1 {
		t.Fatalf("an older nefia would read this store as its own (version %d, %v)", old.Version, err)
	}
	if err := pki.NewRevocationChecker(s.Path(pki.RevokedFile)).Check(pkitest.KeyPair(t, a).Leaf); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("checker = %v, want ErrRevoked", err)
	}
}
