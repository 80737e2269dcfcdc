package config

import (
	"path/filepath"
	"runtime"
	"testing"
)

func TestResolve(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("default locations below are the Linux ones")
	}
	home := t.TempDir()
	// os.UserConfigDir and os.UserHomeDir read the real environment.
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	tests := []struct {
		name      string
		flag      string
		env       map[string]string
		wantPath  string
		wantState string
	}{
		{
			name:      "platform defaults",
			wantPath:  filepath.Join(home, ".config", "nefia", "nefia.yaml"),
			wantState: filepath.Join(home, ".local", "state", "nefia"),
		},
		{
			name:      "XDG",
			env:       map[string]string{"XDG_CONFIG_HOME": "/xdg/config", "XDG_STATE_HOME": "/xdg/state"},
			wantPath:  "/xdg/config/nefia/nefia.yaml",
			wantState: "/xdg/state/nefia",
		},
		{
			name:      "relative XDG is ignored",
			env:       map[string]string{"XDG_STATE_HOME": "rel"},
			wantPath:  filepath.Join(home, ".config", "nefia", "nefia.yaml"),
			wantState: filepath.Join(home, ".local", "state", "nefia"),
		},
		{
			name:      "environment beats XDG",
			env:       map[string]string{"NEFIA_CONFIG": "/e/n.yaml", "NEFIA_STATE_DIR": "/e/state", "XDG_STATE_HOME": "/xdg/state"},
			wantPath:  "/e/n.yaml",
			wantState: "/e/state",
		},
		{
			name:      "flag beats environment",
			flag:      "/f",
			env:       map[string]string{"NEFIA_CONFIG": "/e/n.yaml", "NEFIA_STATE_DIR": "/e/state"},
			wantPath:  "/f",
			wantState: "/f",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			if got, err := ResolvePath(tt.flag, getenv); err != nil || got != tt.wantPath {
				t.Errorf("ResolvePath() = %q, %v; want %q", got, err, tt.wantPath)
			}
			if got, err := ResolveStateDir(tt.flag, getenv); err != nil || got != tt.wantState {
				t.Errorf("ResolveStateDir() = %q, %v; want %q", got, err, tt.wantState)
			}
		})
	}
}

func TestDefaultLocations(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/xdg/config")
	t.Setenv("XDG_STATE_HOME", "/xdg/state")
	if got, err := DefaultPath(); err != nil || got != "/xdg/config/nefia/nefia.yaml" {
		t.Errorf("DefaultPath() = %q, %v", got, err)
	}
	if got, err := DefaultStateDir(); err != nil || got != "/xdg/state/nefia" {
		t.Errorf("DefaultStateDir() = %q, %v", got, err)
	}
}
