package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestGCPercentDefault: without GOGC nefia runs the collector at
// defaultGCPercent; a GOGC the user set is kept. Not parallel: it changes
// the process's GC setting and the environment.
func TestGCPercentDefault(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	tests := []struct {
		name string
		env  string // "-" = unset
		want int
	}{
		{name: "unset", env: "-", want: defaultGCPercent},
		{name: "user's value kept", env: "50", want: 100},
		{name: "user's off kept", env: "off", want: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.env)
			if tc.env == "-" {
				os.Unsetenv("GOGC") // t.Setenv restores it afterwards
			}
			debug.SetGCPercent(100) // what the runtime read from tc.env is not under test
			setGCPercent()
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GC percent = %d, want %d", got, tc.want)
			}
		})
	}
}
