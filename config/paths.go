package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultPath returns the platform's location for nefia.yaml:
// $XDG_CONFIG_HOME/nefia/nefia.yaml, else ~/.config/nefia/nefia.yaml on
// Linux (os.UserConfigDir decides on other platforms).
func DefaultPath() (string, error) { return defaultPath(os.Getenv) }

// DefaultStateDir returns the platform's state directory for nefia:
// $XDG_STATE_HOME/nefia, else ~/.local/state/nefia. The standard library has
// no UserStateDir, so this follows the XDG Base Directory spec by hand,
// including its rule that relative values are ignored.
func DefaultStateDir() (string, error) { return defaultStateDir(os.Getenv) }

// ResolvePath picks the configuration file the way every nefia command must:
// the --config flag value, else $NEFIA_CONFIG, else DefaultPath. getenv is
// os.Getenv outside tests.
func ResolvePath(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv("NEFIA_CONFIG"), func() (string, error) { return defaultPath(getenv) })
}

// ResolveStateDir picks the state directory: the --state-dir flag value,
// else $NEFIA_STATE_DIR, else DefaultStateDir. getenv is os.Getenv outside
// tests.
func ResolveStateDir(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv("NEFIA_STATE_DIR"), func() (string, error) { return defaultStateDir(getenv) })
}

func resolve(flagValue, envValue string, def func() (string, error)) (string, error) {
	switch {
	case flagValue != "":
		return flagValue, nil
	case envValue != "":
		return envValue, nil
	}
	return def()
}

func defaultPath(getenv func(string) string) (string, error) {
	dir := getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(dir) {
		var err error
		if dir, err = os.UserConfigDir(); err != nil {
			return "", fmt.Errorf("config: find config directory (set --config or NEFIA_CONFIG): %w", err)
		}
	}
	return filepath.Join(dir, "nefia", "nefia.yaml"), nil
}

func defaultStateDir(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "nefia"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("config: find state directory (set --state-dir or NEFIA_STATE_DIR): %w", err)
	}
	return filepath.Join(home, ".local", "state", "nefia"), nil
}
