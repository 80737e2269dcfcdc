package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/nefia/nefia/internal/atomicfile"
)

// Issuance appends to the inventory instead of rewriting it (issue 16,
// "Issuance"): the new records' encoding overwrites the file's closing
// "\n]}\n" (or the "]}\n" of an empty list) with ",\n  {...}\n]}\n", so
// the file's bytes are exactly what writeRecords would produce for the
// whole list, and an issuance costs O(new records), not O(inventory).
// Concurrent issuers of one Store share one append and one fsync (group
// commit); across processes the state lock still serialises them.
//
// An append is not atomic the way a rename is. What a crash mid-append can
// leave, and what a reader makes of it (decodeInventory):
//
//	state          file                                        reading
//	complete       parses                                      as is
//	tail-torn      records, then a partial "]}" / record line  repaired: every complete record kept,
//	               / zero bytes, no complete record after it    the partial tail dropped
//	mid-corrupt    a damaged line with a complete record after  fail closed: ErrCorruptState
//	               it (also zeros inside an append whose end
//	               reached the disk: a page-torn write)
//	after-end      bytes after a complete "]}" line             fail closed: ErrCorruptState
//	header-torn    the first line is not the header            fail closed: ErrCorruptState
//
// Only the last append's records can be in the torn tail, and none of
// them was acknowledged (the issuer returns after the fsync), so repair
// never drops a certificate that was handed out. Earlier records are never
// rewritten by an append, so none of them can be lost. The next write
// replaces a repaired file whole (atomicfile.WriteFile) before appending.

// invCommit queues the records of concurrent issuers for one append.
type invCommit struct {
	pending []IssuedCert
	waiters []chan error
	leader  bool // a goroutine is appending; it takes what is queued next
}

// recordFile adds c to the inventory file, durably, sharing the append
// and its fsync with the issuers queued meanwhile.
func (s *Store) recordFile(c IssuedCert) error {
	done := make(chan error, 1)
	s.commitMu.Lock()
	s.commit.pending = append(s.commit.pending, c)
	s.commit.waiters = append(s.commit.waiters, done)
	if s.commit.leader {
		s.commitMu.Unlock()
		return <-done
	}
	s.commit.leader = true
	for len(s.commit.pending) > 0 {
		certs, waiters := s.commit.pending, s.commit.waiters
		s.commit.pending, s.commit.waiters = nil, nil
		s.commitMu.Unlock()
		err := s.appendInventory(certs)
		for _, w := range waiters {
			w <- err
		}
		s.commitMu.Lock()
	}
	s.commit.leader = false
	s.commitMu.Unlock()
	return <-done
}

// appendInventory adds certs to the inventory under the state lock: an
// append when the file is known to end as writeRecords ends it, else a
// whole rewrite (missing file, torn or hand-edited file).
func (s *Store) appendInventory(certs []IssuedCert) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	path := s.Path(IssuedFile)
	ver, verErr := atomicfile.VersionOf(path)
	if errors.Is(verErr, fs.ErrNotExist) {
		return s.writeInventory(inventoryFile{Version: 1, Certificates: certs})
	}
	if verErr != nil {
		return fmt.Errorf("pki: stat %s: %w", path, verErr)
	}
	// base is the cache entry the append extends: a lockless reader may
	// replace it meanwhile (with what it read, possibly this append's
	// bytes), and then the entry is dropped rather than extended twice.
	s.invMu.Lock()
	hit := s.inv != nil && s.invVer == ver && s.invSize > 0
	base := s.inv
	var m int
	var size int64
	if hit {
		m, size = len(s.inv.Certificates), s.invSize
	}
	s.invMu.Unlock()
	if !hit {
		inv, err := s.readInventory() // caches, with invSize when appendable
		if err != nil {
			return err
		}
		s.invMu.Lock()
		hit = s.inv != nil && s.invVer == ver && s.invSize > 0
		base = s.inv
		m, size = len(inv.Certificates), s.invSize
		s.invMu.Unlock()
		if !hit { // torn, hand-edited or replaced meanwhile: rewrite whole
			inv.Certificates = append(inv.Certificates, certs...)
			return s.writeInventory(inv)
		}
	}
	tail, err := appendEncoding(m, certs)
	if err != nil {
		return fmt.Errorf("pki: encode %s: %w", path, err)
	}
	off := size - int64(len(closing(m)))
	if err := atomicfile.WriteAtSync(path, tail, off); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	nver, verErr := atomicfile.VersionOf(path)
	s.invMu.Lock()
	defer s.invMu.Unlock()
	if verErr != nil || s.inv == nil || s.inv != base || s.invVer != ver {
		s.inv = nil
		return nil
	}
	s.inv.Certificates = append(s.inv.Certificates, certs...)
	s.invVer, s.invSize = nver, off+int64(len(tail))
	return nil
}

// closing is how writeRecords ends a list of m records.
func closing(m int) string {
	if m == 0 {
		return "]}\n"
	}
	return "\n]}\n"
}

// appendEncoding is what replaces closing(m) when certs are added to a
// list of m records, so that the file reads as writeRecords would have
// written it.
func appendEncoding(m int, certs []IssuedCert) ([]byte, error) {
	var b bytes.Buffer
	if err := appendItems(&b, m, certs); err != nil {
		return nil, err
	}
	b.WriteString(closing(m + len(certs)))
	return b.Bytes(), nil
}

// decodeInventory parses the inventory's bytes. appendable is true when
// the file ends exactly as writeRecords ends it, so that records can be
// appended in place; torn is true when a crash mid-append left a partial
// tail, which is dropped (see the table above).
func decodeInventory(path string, data []byte) (inv inventoryFile, appendable, torn bool, err error) {
	if jerr := json.Unmarshal(data, &inv); jerr == nil {
		if inv.Version != 1 {
			return inv, false, false, fmt.Errorf("%w: %s: unsupported version %d", ErrCorruptState, path, inv.Version)
		}
		return inv, bytes.HasSuffix(data, []byte(closing(len(inv.Certificates)))), false, nil
	} else if inv, ok := repairInventory(data); ok {
		return inv, false, true, nil
	} else {
		return inventoryFile{}, false, false, fmt.Errorf("%w: %s: %v", ErrCorruptState, path, jerr)
	}
}

// repairInventory reads a torn inventory: the header line, then every
// complete record line, up to a tail in which no complete record follows.
// ok is false for any other damage, which must fail closed.
func repairInventory(data []byte) (inventoryFile, bool) {
	lines := bytes.Split(data, []byte("\n"))
	if !bytes.HasSuffix(lines[0], []byte(`"certificates":[`)) {
		return inventoryFile{}, false
	}
	inv, ok := inventoryHead(data)
	if !ok {
		return inventoryFile{}, false
	}
	i := 1
	for ; i < len(lines); i++ {
		c, rest, ok := recordLine(lines[i])
		if !ok {
			break
		}
		inv.Certificates = append(inv.Certificates, c)
		if !bytes.Equal(rest, []byte(",")) {
			// The last complete record; what follows it on its line
			// is torn tail: the old closing half overwritten (",]}"),
			// zeros where the data never reached the disk.
			i++
			break
		}
	}
	for ; i < len(lines); i++ {
		if _, _, ok := recordLine(lines[i]); ok || bytes.Equal(lines[i], []byte("]}")) {
			return inventoryFile{}, false // damage before a later record, or before the end
		}
	}
	return inv, true
}

// recordLine decodes one "  {...}" line; rest is what follows the object.
func recordLine(line []byte) (c IssuedCert, rest []byte, ok bool) {
	if !bytes.HasPrefix(line, []byte("  {")) {
		return c, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(line[2:]))
	if err := dec.Decode(&c); err != nil || c.Serial == "" {
		return c, nil, false
	}
	return c, line[2+dec.InputOffset():], true
}

// inventoryHead decodes the inventory's first line, as writeRecords
// writes it: everything but the certificates. ok is false for any other
// layout.
func inventoryHead(data []byte) (inv inventoryFile, ok bool) {
	if !bytes.HasPrefix(data, []byte(`{"version":1,`)) {
		return inventoryFile{}, false
	}
	if json.Unmarshal(headLine(data, "certificates"), &inv) != nil || inv.Version != 1 {
		return inventoryFile{}, false
	}
	inv.Certificates = nil
	return inv, true
}
