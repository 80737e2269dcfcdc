package upstream

import (
	"testing"
	"time"
)

func TestNextBackoff(t *testing.T) {
	t.Parallel()
	// A crash loop: each run shorter than MaxBackoff.
	var got []time.Duration
	var b time.Duration
	for range 8 {
		b = nextBackoff(b, time.Millisecond)
		got = append(got, b)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("crash loop backoffs = %v, want %v seconds", got, want)
		}
	}
	if b := nextBackoff(30*time.Second, MaxBackoff+time.Second); b != MinBackoff {
		t.Errorf("after a long run: %s, want %s", b, MinBackoff)
	}
}
