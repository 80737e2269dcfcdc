package upstream

import (
	"maps"
	"runtime"
	"slices"
	"strings"
)

// inheritedEnv names the variables a command upstream inherits from
// nefia's environment: what a program needs to find itself, its home and
// its temporary directory, and to print text. Everything else reaches it
// only through its env: entry. nefia's environment may hold secrets (cloud
// credentials, tokens for the state backend), and an upstream is often
// third-party code fetched from a registry, so it gets none of them by
// default. The official MCP SDKs start stdio servers the same way
// (TypeScript's getDefaultEnvironment, Python's get_default_environment);
// the list is theirs, plus the temporary directory and the locale.
var inheritedEnv = []string{
	"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE",
	// Windows
	"APPDATA", "HOMEDRIVE", "HOMEPATH", "LOCALAPPDATA", "PROCESSOR_ARCHITECTURE", "PROGRAMFILES",
	"SYSTEMDRIVE", "SYSTEMROOT", "TEMP", "TMP", "USERNAME", "USERPROFILE", "PATHEXT", "COMSPEC",
}

// commandEnv is the environment of a command upstream: the variables of
// environ (nefia's own, os.Environ) named in inheritedEnv or in inherit
// (the inherit_env: entry), then extra (the env: entry, in key order),
// which overrides them. A value that starts with "()" is a shell function
// exported by bash, never inherited.
func commandEnv(environ []string, inherit []string, extra map[string]string) []string {
	out := make([]string, 0, len(inheritedEnv)+len(extra))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.HasPrefix(v, "()") || !(inherited(inheritedEnv, k) || inherited(inherit, k)) {
			continue
		}
		if _, over := extra[k]; over {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		out = append(out, k+"="+extra[k])
	}
	return out
}

// inherited reports whether k is one of names; names are
// case-insensitive on Windows, as its environment is.
func inherited(names []string, k string) bool {
	if runtime.GOOS == "windows" {
		return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, k) })
	}
	return slices.Contains(names, k)
}
