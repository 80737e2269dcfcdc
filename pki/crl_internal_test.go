package pki

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPublishedCRLNumber: the shallow decoder the revoke path uses reads
// the same number as a full parse.
func TestPublishedCRLNumber(t *testing.T) {
	t.Parallel()
	s := NewStore(filepath.Join(t.TempDir(), "state"))
	if _, err := s.Init(InitOptions{Hosts: []string{"localhost"}}); err != nil {
		t.Fatal(err)
	}
	for want := int64(2); want < 5; want++ {
		if _, err := s.RefreshCRL(true); err != nil {
			t.Fatal(err)
		}
		got, err := publishedCRLNumber(s.Path(CRLFile))
		if err != nil || got != want {
			t.Fatalf("publishedCRLNumber = %d, %v; want %d", got, err, want)
		}
	}
}

// TestRefreshCRLCurrentTakesNoLock (issue 16 item 4): the gateway's CRL
// refresher, at its start and hourly, judged a current CRL under the
// store's lock; at 100,000 revocations that read takes up to a second,
// and a revocation made meanwhile (the CLI's, the tool's) waited for it
// before the gateway could see it. A current CRL is now judged without
// the lock: with the lock held elsewhere, RefreshCRL(false) returns, and
// a stale one is still re-signed once the lock is free.
func TestRefreshCRLCurrentTakesNoLock(t *testing.T) {
	t.Parallel()
	s := NewStore(filepath.Join(t.TempDir(), "state"))
	if _, err := s.Init(InitOptions{Hosts: []string{"localhost"}}); err != nil {
		t.Fatal(err)
	}
	serial, err := NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(FormatSerial(serial), "test"); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.lock() // a revocation in progress
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		info, err := s.RefreshCRL(false)
		if err == nil && info.Regenerated {
			err = errors.New("a current CRL was re-signed")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		unlock()
		t.Fatal("RefreshCRL of a current CRL waited for the store's lock")
	}
	// Stale (its file gone): re-signed under the lock, once it is free.
	if err := os.Remove(s.Path(CRLFile)); err != nil {
		t.Fatal(err)
	}
	go func() {
		info, err := s.RefreshCRL(false)
		if err == nil && !info.Regenerated {
			err = errors.New("a missing CRL was not re-signed")
		}
		done <- err
	}()
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
