package floor_test

import (
	"runtime"
	"testing"

	"github.com/nefia/nefia/bench/floor"
)

// BenchmarkServerHandshakeCrypto is the public-key work of one full TLS 1.3
// mutual-auth handshake on the server, operation by operation, and all of
// it together ("handshake"): the floor for server CPU per handshake.
//
//	go test -run '^$' -bench . ./bench/floor/
func BenchmarkServerHandshakeCrypto(b *testing.B) {
	f, err := floor.NewFixture()
	if err != nil {
		b.Fatal(err)
	}
	for _, op := range append(f.Ops(), f.ExtraOps()...) {
		b.Run(op.Name, func(b *testing.B) {
			// CPU time of this thread, beside the wall time b reports: on a
			// shared machine other processes inflate the second, not the first.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			start, err := floor.ThreadCPU()
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := op.Run(); err != nil {
					b.Fatal(err)
				}
			}
			end, _ := floor.ThreadCPU()
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

func TestOps(t *testing.T) {
	f, err := floor.NewFixture()
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range append(f.Ops(), f.ExtraOps()...) {
		if err := op.Run(); err != nil {
			t.Errorf("%s: %v", op.Name, err)
		}
	}
}
