package main

import (
	"strings"
	"testing"
)

func TestBreakdown(t *testing.T) {
	top := `Showing nodes accounting for 1s, 100% of 1s total
      flat  flat%   sum%        cum   cum%
     0.40s 40.00% 40.00%      0.40s 40.00%  p256MulInternal
     0.30s 30.00% 70.00%      0.30s 30.00%  internal/runtime/syscall/linux.Syscall6
     200ms 20.00% 90.00%      0.20s 20.00%  encoding/json.(*decodeState).object
     0.10s 10.00%   100%      0.10s 10.00%  github.com/nefia/nefia/server.(*Gateway).handle
         0     0%   100%      0.90s 90.00%  runtime.goexit
`
	got := map[string]float64{}
	for _, b := range breakdown(top) {
		got[b.Name] = b.Percent
	}
	for prefix, want := range map[string]float64{"crypto primitives": 40, "syscalls": 30, "encoding/json": 20, "nefia, mcp-go": 10} {
		found := false
		for name, pct := range got {
			if strings.HasPrefix(name, prefix) {
				found = true
				if pct != want {
					t.Errorf("%s: %.1f%%, want %.1f%%", name, pct, want)
				}
			}
		}
		if !found {
			t.Errorf("no bucket %q in %v", prefix, got)
		}
	}
}

func TestRatioIsRoundByRound(t *testing.T) {
	r := &results{Cells: []cell{
		{Phase: phaseFull, Target: nameNefia, Conc: 50, Round: 0, Ops: 1, Rate: 90},
		{Phase: phaseFull, Target: nameBaseline, Conc: 50, Round: 0, Ops: 1, Rate: 100},
		{Phase: phaseFull, Target: nameNefia, Conc: 50, Round: 1, Ops: 1, Rate: 40},
		{Phase: phaseFull, Target: nameBaseline, Conc: 50, Round: 1, Ops: 1, Rate: 50},
		{Phase: phaseFull, Target: nameNefia, Conc: 50, Round: 2, Ops: 1, Rate: 100}, // no partner: ignored
	}}
	s := r.ratio(phaseFull, 50, nameNefia, nameBaseline, rateOf)
	if s.min != 0.8 || s.max != 0.9 || s.med < 0.849 || s.med > 0.851 {
		t.Errorf("ratio = %+v, want min 0.8, median 0.85, max 0.9", s)
	}
}

func TestVerdictsWithoutDataAreNotMeasured(t *testing.T) {
	for _, v := range (&results{}).verdicts() {
		if v.verdict != "not measured" {
			t.Errorf("%s: %s with no data", v.what, v.verdict)
		}
	}
}
