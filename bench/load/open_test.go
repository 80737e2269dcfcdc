package load

import (
	"context"
	"testing"
	"time"
)

// TestRunOpenMeasuresFromSchedule: a server slower than the offered rate
// must show its queue in the latencies (a closed loop would report the
// service time alone, 20 ms), and one that keeps up must be offered the
// rate asked for.
func TestRunOpenMeasuresFromSchedule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		service    time.Duration
		rate       float64
		minP99     time.Duration
		maxP50     time.Duration
		minRate    float64
		wantLateOK bool
	}{
		// 2 workers at 100/s each, 20 ms per operation: each falls 10 ms
		// further behind per operation, ≈ 300 ms by the end of the window.
		{name: "overloaded", service: 20 * time.Millisecond, rate: 200, minP99: 100 * time.Millisecond, wantLateOK: true},
		{name: "keeps up", service: 0, rate: 200, maxP50: 5 * time.Millisecond, minRate: 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nw := func(int) (Op, func(), error) {
				return func() (bool, error) {
					if tc.service > 0 {
						time.Sleep(tc.service)
					}
					return false, nil
				}, nil, nil
			}
			res, err := RunOpen(context.Background(), 2, tc.rate, Window{Warmup: 50 * time.Millisecond, Duration: 600 * time.Millisecond}, nw)
			if err != nil {
				t.Fatal(err)
			}
			p50, p99 := res.Percentile(0.5), res.Percentile(0.99)
			t.Logf("ops %d late %d rate %.0f/s p50 %v p99 %v", res.Ops, res.Late, res.Rate(), p50, p99)
			if len(res.Latencies) == 0 {
				t.Fatal("no latencies")
			}
			if tc.minP99 > 0 && p99 < tc.minP99 {
				t.Errorf("p99 %v, want ≥ %v: queueing behind a slow server not counted", p99, tc.minP99)
			}
			if tc.maxP50 > 0 && p50 > tc.maxP50 {
				t.Errorf("p50 %v, want ≤ %v", p50, tc.maxP50)
			}
			if res.Rate() < tc.minRate {
				t.Errorf("achieved %.0f/s, want ≥ %.0f", res.Rate(), tc.minRate)
			}
			if !tc.wantLateOK && res.Late > 0 {
				t.Errorf("%d operations late at a rate the op keeps up with", res.Late)
			}
		})
	}
}

func TestRunOpenRejectsNoRate(t *testing.T) {
	t.Parallel()
	if _, err := RunOpen(context.Background(), 1, 0, Window{Duration: time.Millisecond}, nil); err == nil {
		t.Fatal("rate 0 accepted")
	}
}
