package audit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeedKey is the key the seed corpus's valid lines were sealed with
// (testdata/fuzz/FuzzVerifyLine). It is public, so the fuzzer starts from
// lines that verify and mutates them; a mutation must never still verify.
var fuzzSeedKey = bytes.Repeat([]byte{0x5e}, 32)

// FuzzVerifyLine holds the audit line verifier to its promise: no line
// verifies without the key. Arbitrary bytes never verify under a random key,
// as a line or as a whole file, and nothing panics. Under the seed corpus's
// public key, a line that verifies is exactly the line sealing its record
// produces, so no mutation of a sealed line verifies. And any record, whatever
// its strings, seals to a line that verifies and that fails again once any
// one of its bytes is changed (flip picks the byte and the bit).
func FuzzVerifyLine(f *testing.F) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), TrailFile)

	f.Fuzz(func(t *testing.T, line []byte, flip uint16) {
		if _, err := unseal(key, line); err == nil {
			t.Fatalf("a line verified under a key nobody has: %q", line)
		} else if !errors.Is(err, ErrBroken) {
			t.Fatalf("unseal = %v, not ErrBroken", err)
		}

		// A new file each run: truncating the old one would make ext4 flush
		// it (auto_da_alloc), which verification does not need.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, line, 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := VerifyFile(path, key)
		var ve *VerifyError
		switch {
		case len(line) == 0:
			if n != 0 || err != nil {
				t.Fatalf("empty file: %d records, %v", n, err)
			}
		case n != 0 || !errors.As(err, &ve) || ve.Line != 1:
			t.Fatalf("VerifyFile = %d records, %v; want a break at line 1", n, err)
		}

		if r, err := unseal(fuzzSeedKey, line); err == nil {
			hash := r.Hash
			again, err := seal(fuzzSeedKey, &r)
			if err != nil || !bytes.Equal(again, line) || r.Hash != hash {
				t.Fatalf("a line verified that sealing its record does not produce:\n got %q\nwant %q (%v)", line, again, err)
			}
		}

		s := string(line)
		r := Record{Event: EventToolCall, Tool: s, Agent: &Agent{Name: s}, Args: map[string]any{s: s, "n": len(line)},
			Outcome: OutcomeOK, Error: s, PrevHash: Genesis}
		sealed, err := seal(key, &r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := unseal(key, sealed)
		if err != nil || back.Hash != r.Hash || back.Tool != r.Tool && validUTF8(line) {
			t.Fatalf("a sealed record does not verify: %v (%q)", err, sealed)
		}
		if bytes.IndexByte(sealed, '\n') >= 0 {
			t.Fatalf("a sealed record spans lines: %q", sealed)
		}
		i := int(flip) % len(sealed)
		sealed[i] ^= 1 << (flip >> 13)
		if _, err := unseal(key, sealed); err == nil {
			t.Fatalf("changing byte %d of a sealed line went unnoticed: %q", i, sealed)
		}
	})
}

func validUTF8(b []byte) bool { return bytes.Equal(bytes.ToValidUTF8(b, nil), b) }
