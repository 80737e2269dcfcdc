package pki

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func testCerts(prefix string, n int) []IssuedCert {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	out := make([]IssuedCert, n)
	for i := range out {
		out[i] = IssuedCert{Serial: fmt.Sprintf("%x", 0x1000+i) + fmt.Sprintf("%x", len(prefix)+1), Name: fmt.Sprintf("%s-%d", prefix, i),
			Role: RoleAgent, NotBefore: at, NotAfter: at.Add(time.Hour), Fingerprint: "ab"}
	}
	return out
}

// TestInventoryAppendBytesIdentical proves that appending records leaves
// the inventory byte for byte as the full encoding of the whole list
// (issue 16, "Issuance").
func TestInventoryAppendBytesIdentical(t *testing.T) {
	t.Parallel()
	three := 3
	unicode := []IssuedCert{{Serial: "7f", Name: "agent-été-東京-🙂", Role: RoleOperator, Fingerprint: "cd", Renews: "1a"},
		{Serial: "80", Name: `q"uote\<&>`, Role: RoleAgent}}
	tests := []struct {
		name        string
		existing    []IssuedCert
		count       *int
		added       [][]IssuedCert // one append per element
		noInventory bool
	}{
		{name: "no file, one record", noInventory: true, added: [][]IssuedCert{testCerts("a", 1)}},
		{name: "empty list, one record", added: [][]IssuedCert{testCerts("a", 1)}},
		{name: "empty list, many records", added: [][]IssuedCert{testCerts("a", 7)}},
		{name: "one record, one", existing: testCerts("e", 1), added: [][]IssuedCert{testCerts("a", 1)}},
		{name: "many, many in several appends", existing: testCerts("e", 20), added: [][]IssuedCert{testCerts("a", 3), testCerts("bb", 1), testCerts("ccc", 5)}},
		{name: "revocation count in the header", existing: testCerts("e", 2), count: &three, added: [][]IssuedCert{testCerts("a", 2)}},
		{name: "unicode and escaped names", existing: testCerts("e", 1), added: [][]IssuedCert{unicode}},
		{name: "unicode into an empty list", added: [][]IssuedCert{unicode, testCerts("a", 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewStore(filepath.Join(t.TempDir(), "state"))
			if err := s.ensureDir(); err != nil {
				t.Fatal(err)
			}
			want := inventoryFile{Version: 1, Revocations: tt.count, Certificates: tt.existing}
			if !tt.noInventory {
				if err := s.writeInventory(want); err != nil {
					t.Fatal(err)
				}
			}
			for i, batch := range tt.added {
				if i%2 == 1 { // the other half from a cold cache: as a new process
					s = NewStore(s.Dir())
				}
				if err := s.appendInventory(batch); err != nil {
					t.Fatal(err)
				}
				want.Certificates = append(want.Certificates, batch...)
			}
			got, err := os.ReadFile(s.Path(IssuedFile))
			if err != nil {
				t.Fatal(err)
			}
			full, err := encodeRecords("x", want.header(), "certificates", want.Certificates)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, full) {
				t.Fatalf("appended file differs from the full encoding:\n got %q\nwant %q", got, full)
			}
		})
	}
}

// TestInventoryTornAppend names each state a crash mid-append can leave
// and checks that no earlier record is lost, that the repair is
// deterministic (the next issuance writes exactly the full encoding of
// the kept records plus the new one), and that damage that is not a torn
// tail fails closed.
func TestInventoryTornAppend(t *testing.T) {
	t.Parallel()
	old := testCerts("old", 5)
	added := testCerts("new", 3)
	before, _ := encodeRecords("x", "", "certificates", old)
	after, _ := encodeRecords("x", "", "certificates", append(slicesClone(old), added...))
	off := len(before) - len(closing(len(old)))
	type state struct {
		name string
		data []byte
	}
	var states []state
	// Every prefix of the append as it overwrote the old closing: the
	// first k bytes new, the old closing's remainder after them.
	for k := 0; k <= len(after)-off; k++ {
		d := append([]byte{}, after[:off+k]...)
		if k < len(before)-off {
			d = append(d, before[off+k:]...)
		}
		states = append(states, state{fmt.Sprintf("overwrite prefix %d", k), d})
	}
	// The size grew but the data never reached the disk: zeros.
	zeros := append(append([]byte{}, before[:off]...), make([]byte, len(after)-off)...)
	states = append(states, state{"zero-filled append", zeros})
	// Zeros in the middle of the appended region, its end intact.
	mid := append([]byte{}, after...)
	for i := off + 10; i < off+30; i++ {
		mid[i] = 0
	}

	for _, st := range states {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			s := storeWithInventory(t, st.data)
			inv, err := s.readInventory()
			if err != nil {
				t.Fatalf("a torn tail must be repaired, got %v", err)
			}
			if len(inv.Certificates) < len(old) {
				t.Fatalf("lost earlier records: %d of %d kept", len(inv.Certificates), len(old))
			}
			for i, c := range old {
				if inv.Certificates[i] != c {
					t.Fatalf("record %d changed: %+v", i, inv.Certificates[i])
				}
			}
			if err := checkMissingStore(s.Dir()); err == nil && len(inv.Certificates) > 0 {
				t.Fatal("checkMissingStore judged a torn inventory listing certificates (no count) as never revocable")
			}
			extra := testCerts("z", 1)
			if err := s.recordFile(extra[0]); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(s.Path(IssuedFile))
			want, _ := encodeRecords("x", "", "certificates", append(inv.Certificates, extra...))
			if !bytes.Equal(got, want) {
				t.Fatalf("repair is not the full encoding of the kept records:\n got %q\nwant %q", got, want)
			}
		})
	}

	lines := bytes.SplitAfter(after, []byte("\n"))
	failClosed := []state{
		{"mid-corrupt: a damaged line before complete records", bytes.Join([][]byte{lines[0], lines[1], []byte("  {\"ser\x00\x00\n"), bytes.Join(lines[3:], nil)}, nil)},
		{"header-torn", after[5:]},
		{"page-torn: zeros inside the appended records, their end intact", mid},
		{"garbage after the closing", append(append([]byte{}, after...), "x"...)},
	}
	for _, st := range failClosed {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			s := storeWithInventory(t, st.data)
			if _, err := s.readInventory(); !errors.Is(err, ErrCorruptState) {
				t.Fatalf("want ErrCorruptState, got %v", err)
			}
			if err := s.recordFile(testCerts("z", 1)[0]); !errors.Is(err, ErrCorruptState) {
				t.Fatalf("issuance over damage: want ErrCorruptState, got %v", err)
			}
			if got, _ := os.ReadFile(s.Path(IssuedFile)); !bytes.Equal(got, st.data) {
				t.Fatal("a damaged inventory was written over")
			}
		})
	}
}

func slicesClone(c []IssuedCert) []IssuedCert { return append([]IssuedCert(nil), c...) }

// TestInventoryConcurrentIssuers: 8 goroutines on each of two Stores (two
// processes' worth of caches) on one directory record 400 certificates;
// every one is in the inventory, once, and the file is the full encoding.
func TestInventoryConcurrentIssuers(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	stores := []*Store{NewStore(dir), NewStore(dir)}
	var wg sync.WaitGroup
	for si, s := range stores {
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					c := IssuedCert{Serial: fmt.Sprintf("%x", 0x10000+si*1000+w*100+i), Name: fmt.Sprintf("w%d-%d", w, i), Role: RoleAgent}
					if err := s.recordFile(c); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	inv, err := NewStore(dir).readInventory()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range inv.Certificates {
		if seen[c.Serial] {
			t.Fatalf("serial %s recorded twice", c.Serial)
		}
		seen[c.Serial] = true
	}
	if len(seen) != 400 {
		t.Fatalf("recorded %d of 400", len(seen))
	}
	got, _ := os.ReadFile(filepath.Join(dir, IssuedFile))
	want, _ := encodeRecords("x", "", "certificates", inv.Certificates)
	if !bytes.Equal(got, want) {
		t.Fatal("file is not the full encoding of its records")
	}
}

// storeWithInventory is a new Store whose inventory file holds data as it is.
func storeWithInventory(t *testing.T, data []byte) *Store {
	t.Helper()
	s := NewStore(filepath.Join(t.TempDir(), "state"))
	if err := s.ensureDir(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(IssuedFile), data, recordMode); err != nil {
		t.Fatal(err)
	}
	return s
}
