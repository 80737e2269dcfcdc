package etcdstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/store/etcdstore"
)

// TestStoreRecordsItsCA: a store created for a CA records it; another CA
// is refused by CreateWithCA and CheckCA (pki.ErrForeignCA); a store
// created before the CA was recorded takes the first CA it is given and
// refuses others from then on; CheckCA passes a store that records none.
func TestStoreRecordsItsCA(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{})
	cli := c.Client(t)
	now := time.Now()
	tests := []struct {
		name   string
		create func(s *etcdstore.Store) error
	}{
		{name: "created for a CA", create: func(s *etcdstore.Store) error {
			_, created, err := s.CreateWithCA(now, "aa")
			if !created {
				t.Error("not created")
			}
			return err
		}},
		{name: "created before, CA recorded later", create: func(s *etcdstore.Store) error {
			if _, _, err := s.Create(now); err != nil {
				return err
			}
			if err := s.CheckCA("bb"); err != nil {
				t.Errorf("a store that records no CA refused issuance: %v", err)
			}
			_, created, err := s.CreateWithCA(now, "aa")
			if created {
				t.Error("created twice")
			}
			return err
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := etcdstore.New(cli, "/ca-"+string(rune('a'+i))+"/")
			if err := tc.create(s); err != nil {
				t.Fatal(err)
			}
			if m, err := s.Meta(); err != nil || m.CAFingerprint != "aa" {
				t.Fatalf("marker %+v, %v; want CA aa", m, err)
			}
			if err := s.CheckCA("aa"); err != nil {
				t.Errorf("the fleet's own CA refused: %v", err)
			}
			if err := s.CheckCA("bb"); !errors.Is(err, pki.ErrForeignCA) {
				t.Errorf("CheckCA of another CA: %v, want ErrForeignCA", err)
			}
			if _, _, err := s.CreateWithCA(now, "bb"); !errors.Is(err, pki.ErrForeignCA) {
				t.Errorf("CreateWithCA of another CA: %v, want ErrForeignCA", err)
			}
			if created, err := s.CreateShared(now, "bb"); created || err != nil {
				t.Errorf("CreateShared on an existing store: created %v, %v; want false, nil (the caller refuses)", created, err)
			}
		})
	}
}
