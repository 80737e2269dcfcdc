package pki

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// seedRevocations writes a revocation store of n random serials directly,
// as n calls to Revoke would leave it (without their O(n²) rewrites).
func seedRevocations(b *testing.B, s *Store, n int) {
	b.Helper()
	rf, err := s.readRevoked()
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for range n {
		serial, err := NewSerial()
		if err != nil {
			b.Fatal(err)
		}
		rf.Revoked = append(rf.Revoked, Revocation{Serial: FormatSerial(serial), RevokedAt: at, Reason: "benchmark", Name: "bench"})
	}
	if err := s.writeRevoked(rf); err != nil {
		b.Fatal(err)
	}
	if _, err := s.RefreshCRL(true); err != nil {
		b.Fatal(err)
	}
}

func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	s := NewStore(filepath.Join(b.TempDir(), "state"))
	if _, err := s.Init(InitOptions{Hosts: []string{"localhost"}}); err != nil {
		b.Fatal(err)
	}
	seedRevocations(b, s, n)
	return s
}

var crlSizes = []int{10, 1000, 100_000}

// BenchmarkCRLSign is the signing alone: building and signing the DER of a
// CRL listing n serials (issue 13 item 6: the figure at 100,000).
func BenchmarkCRLSign(b *testing.B) {
	for _, n := range crlSizes {
		b.Run(fmt.Sprintf("serials=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			ca, key, err := s.LoadCA()
			if err != nil {
				b.Fatal(err)
			}
			rf, err := s.readRevoked()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := signCRL(ca, key, rf, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCRLRefresh is what a forced refresh costs end to end: lock,
// read the store and the CA, reserve the number (a store write), sign, and
// write the PEM file atomically.
func BenchmarkCRLRefresh(b *testing.B) {
	for _, n := range crlSizes {
		b.Run(fmt.Sprintf("serials=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.RefreshCRL(true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRevoke is one revocation with n serials already revoked,
// including the CRL it now regenerates.
func BenchmarkRevoke(b *testing.B) {
	for _, n := range crlSizes {
		b.Run(fmt.Sprintf("serials=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			b.ResetTimer()
			for b.Loop() {
				serial, err := NewSerial()
				if err != nil {
					b.Fatal(err)
				}
				res, err := s.RevokeReport(FormatSerial(serial), "benchmark")
				if err != nil || len(res.Warnings) > 1 {
					b.Fatal(err, res.Warnings)
				}
			}
		})
	}
}
