package upstream

import (
	"slices"
	"testing"
)

// TestCommandEnv: the inherited variables in order, bash functions
// dropped, env: entries added in key order and overriding inherited ones.
func TestCommandEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ []string
		inherit []string
		extra   map[string]string
		want    []string
	}{
		{name: "only the listed variables", environ: []string{"PATH=/bin", "TOKEN=x", "HOME=/root", "NEFIA_STATE_DIR=/s"},
			want: []string{"PATH=/bin", "HOME=/root"}},
		{name: "env entries added in key order", environ: []string{"PATH=/bin"}, extra: map[string]string{"B": "2", "A": "1"},
			want: []string{"PATH=/bin", "A=1", "B=2"}},
		{name: "env entry overrides an inherited one", environ: []string{"PATH=/bin", "HOME=/root"}, extra: map[string]string{"HOME": "/srv"},
			want: []string{"PATH=/bin", "HOME=/srv"}},
		{name: "bash function never inherited", environ: []string{"TERM=() { :; }; echo", "PATH=/bin"},
			want: []string{"PATH=/bin"}},
		{name: "inherit_env adds names", environ: []string{"PATH=/bin", "TOKEN=x", "OTHER=y"}, inherit: []string{"TOKEN"},
			want: []string{"PATH=/bin", "TOKEN=x"}},
		{name: "malformed entry skipped", environ: []string{"PATH", "USER=me"}, want: []string{"USER=me"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := commandEnv(tc.environ, tc.inherit, tc.extra); !slices.Equal(got, tc.want) {
				t.Errorf("commandEnv = %q, want %q", got, tc.want)
			}
		})
	}
}
