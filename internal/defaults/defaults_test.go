package defaults

import (
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	t.Parallel()
	type opts struct {
		N    int
		D    time.Duration
		S    string
		Ptr  *int
		Neg  int
		Keep time.Duration
	}
	one := 1
	o := opts{Neg: -1, Keep: time.Second}
	Set(&o.N, 8)
	Set(&o.D, time.Minute)
	Set(&o.S, "x")
	Set(&o.Ptr, &one)
	Set(&o.Neg, 8)          // not zero: a negative value is the caller's to refuse
	Set(&o.Keep, time.Hour) // set explicitly: kept
	want := opts{N: 8, D: time.Minute, S: "x", Ptr: &one, Neg: -1, Keep: time.Second}
	if o != want {
		t.Errorf("after Set: %+v, want %+v", o, want)
	}
}
