package proc

import (
	"os"
	"testing"
)

func TestSelf(t *testing.T) {
	// Burn a little CPU so a tick has surely been counted.
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	_ = x
	if _, err := CPU(os.Getpid()); err != nil {
		t.Fatalf("CPU: %v", err)
	}
	if rss, err := RSS(os.Getpid()); err != nil || rss <= 0 {
		t.Fatalf("RSS = %d, %v", rss, err)
	}
	if p, err := Parent(os.Getpid()); err != nil || p != os.Getppid() {
		t.Fatalf("Parent = %d, %v; want %d", p, err, os.Getppid())
	}
	m, err := SampleMachine()
	if err != nil || m.Total <= 0 || m.Busy > m.Total {
		t.Fatalf("SampleMachine = %+v, %v", m, err)
	}
}
