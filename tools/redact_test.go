package tools

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/pki"
)

func TestRedact(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	link := filepath.Join(base, "state-link")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(state, link); err != nil {
		t.Fatal(err)
	}
	// The store is reached through a link; errors may name either form.
	ts, err := newToolset(Deps{Store: pki.NewStore(link), ConfigPath: filepath.Join(base, "etc", "nefia.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  string
		want string
	}{
		{"state file", "pki: read " + filepath.Join(link, "mtls_ca.key") + ": permission denied", "read mtls_ca.key: permission denied"},
		{"resolved state file", "read " + filepath.Join(state, "mtls_ca.key") + ": EIO", "read mtls_ca.key: EIO"},
		{"state dir itself", "pki: a CA already exists in " + link + " (x)", "a CA already exists in the state directory (x)"},
		{"clients dir is relative", "write " + filepath.Join(link, "clients", "team", "a.key") + ": ENOSPC", "write team/a.key: ENOSPC"},
		{"config", "config: " + filepath.Join(base, "etc", "nefia.yaml") + ": bad", "config: nefia.yaml: bad"},
		{"other absolute path", "open /var/lib/secret/thing.pem: denied", "open thing.pem: denied"},
		{"quoted path", `stat "/srv/x/y": gone`, `stat "y": gone`},
		{"relative path kept", "team/sub/a.crt exists", "team/sub/a.crt exists"},
		{"no path", "invalid duration: 24x", "invalid duration: 24x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ts.redact(errors.New(tt.err))
			if got != tt.want {
				t.Errorf("redact(%q) = %q, want %q", tt.err, got, tt.want)
			}
			if strings.Contains(got, base) {
				t.Errorf("host path left in %q", got)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		root, p string
		want    bool
	}{
		{"/c", "/c", true},
		{"/c", "/c/a/b", true},
		{"/c", "/c/..a", true},
		{"/c", "/", false},
		{"/c", "/cc", false},
		{"/c", "/c/../d", false},
		{"/c/d", "/c", false},
	}
	for _, tt := range tests {
		if got := within(tt.root, filepath.Clean(tt.p)); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.root, tt.p, got, tt.want)
		}
	}
}
