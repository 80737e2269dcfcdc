package tools

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
)

// resolveOutDir confines a caller's out_dir to the clients directory. The
// argument comes from a model, so it is treated as hostile: it is cleaned,
// joined to the clients directory when relative, and then the part of it
// that exists is resolved through symbolic links; both the lexical and the
// resolved path must lie inside the (resolved) clients directory. The
// resolved directory is returned, so the bundle is written exactly where
// the check looked. A refusal comes back as a result.
//
// What remains is a race with a local user who can write inside the
// clients directory and swaps a directory for a link between this check and
// the write; such a user already controls the bundles.
func (ts *toolset) resolveOutDir(outDir string) (string, *mcp.CallToolResult) {
	if strings.ContainsRune(outDir, 0) {
		return "", refuse(`argument "out_dir" must not contain NUL bytes`)
	}
	root := ts.clientsDir
	var p string
	switch {
	case outDir == "":
		p = root
	case filepath.IsAbs(outDir):
		p = filepath.Clean(outDir)
	default:
		p = filepath.Join(root, outDir)
	}
	outside := func() *mcp.CallToolResult {
		// The argument is not echoed: it may be a guess at a host path.
		return refuse(`argument "out_dir" leads outside the gateway's clients directory; ` +
			`give a path relative to it (for example "team-a") or omit out_dir`)
	}
	rootReal, err := resolveExisting(root)
	if err != nil {
		return "", ts.fail(NameIssueClient, "resolving the clients directory", err)
	}
	if !within(root, p) && !within(rootReal, p) {
		return "", outside()
	}
	real, err := resolveExisting(p)
	if err != nil {
		return "", refuse(`argument "out_dir" cannot be used: %s`, ts.redact(err))
	}
	if !within(rootReal, real) {
		return "", outside()
	}
	// The state directory holds the CA key; a clients directory configured
	// to be it, or to lie in it, must still never receive bundles (a client
	// named mtls_ca with force would overwrite the CA). The operation runs
	// pki.CheckOutDir on the result, as it does for the CLI (issue 10 item
	// 6), and refuses a destination that cannot be written before anything
	// is issued.
	if fi, err := os.Stat(real); err == nil && !fi.IsDir() {
		return "", refuse(`argument "out_dir" names an existing file, not a directory`)
	}
	return real, nil
}

// within reports whether p is root or lies below it. Both must be clean
// absolute paths.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return false
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel))
}

// resolveExisting resolves symbolic links in the longest existing prefix of
// the clean absolute path p and appends the rest, which does not exist yet
// and so holds no links. A component that exists but cannot be resolved (a
// dangling or looping link) is an error: a directory created through it
// could land anywhere.
func resolveExisting(p string) (string, error) {
	var rest []string
	for cur := p; ; {
		if _, err := os.Lstat(cur); err == nil {
			real, err := filepath.EvalSymlinks(cur)
			if err != nil {
				return "", fmt.Errorf("a symbolic link on the path cannot be resolved: %w", err)
			}
			return filepath.Join(append([]string{real}, rest...)...), nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}
