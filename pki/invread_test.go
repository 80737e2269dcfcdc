package pki

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestInventoryReadNeverSeesAnAppendHalfDone reads the inventory from
// another Store (as another process would: nothing cached) while one
// Store appends to it, record after record. An append overwrites the
// file's closing bytes in place, so a read overlapping its copy into the
// page cache saw old closing bytes followed by new ones and failed as a
// corrupt file (found as 2 failures in 12 runs of cmd/nefia's
// TestConcurrentWriters); readers now hold a shared lock against the
// append's exclusive one.
func TestInventoryReadNeverSeesAnAppendHalfDone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := &Store{dir: dir}
	if err := w.writeInventory(inventoryFile{Version: 1, Certificates: testCerts("seed", 1)}); err != nil {
		t.Fatal(err)
	}
	const appends = 200
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	var reads, torn atomic.Int64
	for range 2 {
		wg.Go(func() {
			for !done.Load() {
				inv, err := readInventoryFile(w.Path(IssuedFile))
				reads.Add(1)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				if len(inv.Certificates) == 0 {
					torn.Add(1)
				}
			}
		})
	}
	certs := testCerts("append", appends)
	for i := range certs {
		if err := w.appendInventory(certs[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("a read during appends failed (after %d reads): %v", reads.Load(), err)
	default:
	}
	inv, err := readInventoryFile(w.Path(IssuedFile))
	if err != nil || len(inv.Certificates) != appends+1 || torn.Load() != 0 {
		t.Fatalf("after %d appends: %d records, %d empty reads, err %v", appends, len(inv.Certificates), torn.Load(), err)
	}
	t.Logf("%d reads during %d appends", reads.Load(), appends)
}
