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
// refuses others from then on (for a first issuance's CA, see
// TestStoreCreatedBeforeTakesTheFirstIssuersCA).
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

// TestStoreCreatedBeforeTakesTheFirstIssuersCA: a store created before
// the CA was recorded (every store of a fleet that upgraded, and one a
// host without a CA migrated into) records the CA of its first issuance,
// and from then on refuses another CA's. Before, such a store recorded a
// CA only when a migrate ran into it again, which an upgraded fleet never
// does: CheckCA passed every CA, so a host with a CA of its own issued
// into the fleet's store for good.
func TestStoreCreatedBeforeTakesTheFirstIssuersCA(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{})
	s := etcdstore.New(c.Client(t), "/legacy/")
	if _, _, err := s.Create(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckCA("aa"); err != nil {
		t.Fatalf("the first issuance into a store that records no CA: %v", err)
	}
	if err := s.CheckCA("bb"); !errors.Is(err, pki.ErrForeignCA) {
		t.Errorf("an issuance of another CA after the fleet's first: %v, want ErrForeignCA", err)
	}
	if err := s.CheckCA("aa"); err != nil {
		t.Errorf("the fleet's own CA refused: %v", err)
	}
	if m, err := s.Meta(); err != nil || m.CAFingerprint != "aa" {
		t.Errorf("marker %+v, %v; want CA aa", m, err)
	}
}

// TestCreateSharedLeavesAnExistingStoreAlone: init on a host without a CA
// asks CreateShared to create the store for the CA it is about to write;
// when a store is there already (another host's migrate created it in the
// moment between init's look and its create), init is refused and its CA
// never written, so the store must not record that CA. Before, a store
// that recorded no CA yet was given it, and every issuance of the fleet's
// real CA was then refused (ErrForeignCA).
func TestCreateSharedLeavesAnExistingStoreAlone(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, etcdtest.Options{})
	s := etcdstore.New(c.Client(t), "/raced/")
	if _, _, err := s.Create(time.Now()); err != nil {
		t.Fatal(err)
	}
	if created, err := s.CreateShared(time.Now(), "refused-init"); created || err != nil {
		t.Fatalf("CreateShared on an existing store: created %v, %v; want false, nil", created, err)
	}
	if m, err := s.Meta(); err != nil || m.CAFingerprint != "" {
		t.Fatalf("marker %+v, %v; want no CA recorded by a refused init", m, err)
	}
	if err := s.CheckCA("fleet"); err != nil {
		t.Errorf("the fleet's first issuance after a refused init: %v", err)
	}
}
