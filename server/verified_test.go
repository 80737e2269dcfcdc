package server

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestVerifiedChains(t *testing.T) {
	s := pkitest.NewStore(t)
	ca, _, _ := s.LoadCA()
	leaf := pkitest.KeyPair(t, pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)).Leaf
	other := pkitest.KeyPair(t, pkitest.Issue(t, s, "b", pki.RoleAgent, time.Hour)).Leaf
	pool, newPool := x509.NewCertPool(), x509.NewCertPool()
	now := time.Now()

	var v verifiedChains
	presented := []*x509.Certificate{leaf}
	if v.holds(pool, presented, now) {
		t.Fatal("empty cache holds a chain")
	}
	v.remember(pool, presented, []*x509.Certificate{leaf, ca})
	tests := []struct {
		name      string
		pool      *x509.CertPool
		presented []*x509.Certificate
		at        time.Time
		want      bool
	}{
		{"same chain, same CA", pool, presented, now, true},
		{"another certificate", pool, []*x509.Certificate{other}, now, false},
		{"after the leaf expires", pool, presented, leaf.NotAfter.Add(time.Second), false},
		{"before it is valid", pool, presented, leaf.NotBefore.Add(-time.Second), false},
		{"after the CA changed", newPool, presented, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := v.holds(tt.pool, tt.presented, tt.at); got != tt.want {
				t.Fatalf("holds = %v, want %v", got, tt.want)
			}
		})
	}
	v.remember(newPool, []*x509.Certificate{other}, []*x509.Certificate{other, ca})
	if v.holds(pool, presented, now) {
		t.Error("entries of the old CA survived a CA change")
	}
}
