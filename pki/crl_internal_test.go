package pki

import (
	"path/filepath"
	"testing"
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
