package server

import (
	"fmt"
	"testing"
	"time"
)

func TestCallLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	l := newCallLimiter(func() time.Time { return now })
	allowed := 0
	for range 100 {
		if ok, _ := l.allow("aa", "bot", "denied"); ok {
			allowed++
		}
	}
	now = now.Add(5 * time.Second)
	for range 100 {
		if ok, _ := l.allow("aa", "bot", "error"); ok {
			allowed++
		}
	}
	if want := callBurst + int(5*callRate); allowed != want {
		t.Errorf("%d of 200 failed calls recorded, want %d (the burst, then %v/s)", allowed, want, callRate)
	}
	// Another certificate has a bucket of its own.
	if ok, _ := l.allow("bb", "other", "denied"); !ok {
		t.Error("another certificate's first failed call was suppressed")
	}
	sum := l.flush()
	if len(sum) != 1 || sum[0].serial != "aa" || sum[0].total != 200-allowed ||
		sum[0].byReason["denied"] != 100-callBurst || sum[0].byReason["error"] != 100-int(5*callRate) {
		t.Errorf("summary = %+v", sum)
	}

	// Memory and summaries are bounded however many certificates fail.
	for i := range 3 * callMaxSerials {
		for range callBurst + 1 {
			l.allow(fmt.Sprint(i), "n", "denied")
		}
	}
	if len(l.serials) > callMaxSerials+1 {
		t.Errorf("%d certificates tracked, want at most %d", len(l.serials), callMaxSerials+1)
	}
	if sum := l.flush(); len(sum) != callMaxSummaries+1 {
		t.Errorf("%d summary entries, want %d", len(sum), callMaxSummaries+1)
	}
}
