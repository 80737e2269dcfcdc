package pki

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// revokeFile is RevokeReport on the state directory's files (issue 16):
// one fsynced line appended to the revocation log, so that the gateway
// refuses the certificate before the CRL, which needs the whole list, is
// signed. Nothing before the append is O(revocations) beyond reading the
// store's bytes once: the duplicate check looks for the serial's encoding
// in them (a hit is confirmed by a full read), the inventory name is one
// line of the inventory. The full read, the CRL and, every foldEvery
// lines, the store's rewrite (a fold) follow the append, before
// RevokeReport returns.
func (s *Store) revokeFile(canon, reason string) (RevokeResult, error) {
	unlock, err := s.lock()
	if err != nil {
		return RevokeResult{}, err
	}
	defer unlock()
	logPath := s.Path(RevokedLogFile)
	lg, err := readRevLog(logPath)
	if err != nil {
		return RevokeResult{}, err
	}
	storePath := s.Path(RevokedFile)
	storeData, err := os.ReadFile(storePath)
	var head revokedFile
	ok := false
	switch {
	case err == nil:
		head, ok = storeHead(storeData)
		ok = ok && bytes.HasSuffix(storeData, []byte("]}\n"))
	case !errors.Is(err, fs.ErrNotExist):
		return RevokeResult{}, fmt.Errorf("pki: read %s: %w", storePath, err)
	}
	crlBase := max(head.CRLNumber, lg.maxCRL)
	if !ok || !head.Log || !lg.exists || bytes.Contains(storeData, serialKey(canon)) || logHas(lg, canon) {
		// The slow path: no store yet, a store from before the log or
		// not laid out as nefia writes it, or a serial that may be
		// revoked already. The whole read judges it (and fails closed
		// on damage); writing the store whole creates or converts it.
		rf, err := s.readRevoked()
		if err != nil {
			return RevokeResult{}, err
		}
		for _, r := range rf.Revoked {
			if r.Serial == canon {
				return RevokeResult{Revocation: r}, fmt.Errorf("%w: %s (%s) at %s", ErrAlreadyRevoked, canon, r.Name, r.RevokedAt.Format(time.RFC3339))
			}
		}
		if err := s.writeRevoked(rf); err != nil {
			return RevokeResult{}, err
		}
		storeData, err = os.ReadFile(storePath)
		if err != nil {
			return RevokeResult{}, fmt.Errorf("pki: read %s: %w", storePath, err)
		}
		lg, crlBase = revLog{exists: true}, rf.CRLNumber
	}

	var res RevokeResult
	warn := func(format string, args ...any) { res.Warnings = append(res.Warnings, fmt.Sprintf(format, args...)) }
	name, count, invErr := s.inventoryEntry(canon)
	if invErr != nil {
		warn("%s cannot be read, so the certificate's name is unknown and the revocation count was not raised; repair it", IssuedFile)
	} else {
		if name == "" {
			warn("serial %s is not in the inventory (%s); it is revoked anyway, check that it is the one you meant ('nefia mtls list')", canon, IssuedFile)
		}
		if count <= 0 {
			// The first revocation: the count must say "recorded"
			// before the store holds one (checkMissingStore).
			n := bytes.Count(storeData, []byte(`"serial":"`)) + len(lg.entries) + 1
			if err := s.raiseRevocationCount(n); err != nil {
				warn("the revocation count in %s could not be raised; if %s is lost, the loss may go unnoticed", IssuedFile, RevokedFile)
			}
		}
	}
	res.Revocation = Revocation{Serial: canon, RevokedAt: s.now().UTC(), Reason: reason, Name: name}
	// The CRL number is reserved by the same write that records the
	// revocation; the CRL follows (issue 13 item 6).
	crlNumber, crlErr := s.nextCRLNumber(revokedFile{CRLNumber: crlBase})
	e := logEntry{Revocation: res.Revocation}
	if crlErr == nil {
		e.CRLNumber = crlNumber
	}
	if err := appendRevLog(logPath, lg.size, e); err != nil {
		return RevokeResult{}, err
	}
	// Recorded: the gateway refuses the certificate from here on.
	rf, err := s.readRevoked()
	if err != nil {
		s.logger().Warn("CRL not regenerated after a revocation: the store cannot be read whole", "err", err)
		warn("the revocation is recorded, but %s cannot be read whole, so %s was not regenerated; repair it", RevokedFile, CRLFile)
		return res, nil
	}
	if len(lg.entries)+1 >= foldEvery {
		if err := s.writeRevoked(rf); err != nil {
			s.logger().Warn("revocation log not folded into the store", "err", err)
		}
	}
	if crlErr != nil {
		s.logger().Warn("CRL not regenerated after a revocation", "err", crlErr)
		warn("the revocation is recorded, but the CRL number is out of range, so %s was not regenerated; other TLS terminators do not see it", CRLFile)
	} else if w := s.revokeCRL(rf); w != "" {
		warn("%s", w)
	}
	return res, nil
}

func logHas(lg revLog, canon string) bool {
	for _, e := range lg.entries {
		if e.Serial == canon {
			return true
		}
	}
	return false
}

// inventoryEntry returns the inventory name of a serial ("" when it is
// not listed) and the inventory's revocation count (0 when it has none),
// from the cached inventory or from the one line of the file that holds
// the serial, without parsing the rest.
func (s *Store) inventoryEntry(canon string) (name string, count int, err error) {
	path := s.Path(IssuedFile)
	ver, verErr := atomicfile.VersionOf(path)
	s.invMu.Lock()
	if verErr == nil && s.inv != nil && s.invVer == ver {
		for _, c := range s.inv.Certificates {
			if c.Serial == canon {
				name = c.Name
				break
			}
		}
		if s.inv.Revocations != nil {
			count = *s.inv.Revocations
		}
		s.invMu.Unlock()
		return name, count, nil
	}
	s.invMu.Unlock()
	data, err := atomicfile.ReadFileShared(path) // never mid-append
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	inv, ok := inventoryHead(data)
	if !ok { // not laid out as nefia writes it: read it whole
		full, err := s.readInventory()
		if err != nil {
			return "", 0, err
		}
		inv = full
		for _, c := range full.Certificates {
			if c.Serial == canon {
				name = c.Name
			}
		}
	} else if i := bytes.Index(data, []byte(`{"serial":"`+canon+`"`)); i >= 0 {
		line, _, _ := bytes.Cut(data[i:], []byte("\n"))
		if c, _, ok := recordLine(append([]byte("  "), line...)); ok {
			name = c.Name
		}
	}
	if inv.Revocations != nil {
		count = *inv.Revocations
	}
	return name, count, nil
}

// raiseRevocationCount sets the inventory's revocation count to at least n.
func (s *Store) raiseRevocationCount(n int) error {
	inv, err := s.readInventory()
	if err != nil {
		return err
	}
	if inv.Revocations != nil {
		n = max(n, *inv.Revocations)
	}
	inv.Revocations = &n
	return s.writeInventory(inv)
}
