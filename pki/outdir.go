package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ClientsDir is the one subdirectory of the state directory that may hold
// client bundles: the issue_client tool writes there by default.
const ClientsDir = "clients"

// CheckOutDir refuses, before anything is issued, a bundle destination
// that must not or cannot receive a bundle; the CLI and the issue_client
// tool both call it, so they cannot disagree. dir must not be empty, must
// not be the state directory or lie inside it other than under ClientsDir
// (issue 10 item 6: a bundle named mtls_ca written there with force
// replaced the CA key for good, and the gateway then trusted a client leaf
// as its CA), and must be a directory this process can create files in, or
// one it can create (issue 10 item 7: a certificate issued to a
// destination that then failed was left active with its key lost).
//
// Symbolic links are resolved and directories compared by identity (device
// and inode), so neither a link nor a bind mount leads into the state
// directory. The error wraps ErrInvalidOutDir and names dir.
func CheckOutDir(stateDir, dir string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidOutDir, quoteDir(dir), fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(dir) == "" {
		return bad("is empty; name a directory")
	}
	if strings.ContainsRune(dir, 0) {
		return bad("contains a NUL byte")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return bad("cannot be made absolute: %v", err)
	}
	real, existing, err := resolvePath(abs)
	if err != nil {
		return bad("cannot be used: %v", err)
	}
	if inside, err := insideStateDir(stateDir, real, existing); err != nil {
		return bad("cannot be checked against the state directory: %v", err)
	} else if inside {
		return fmt.Errorf("%w: %s is the state directory or inside it, where a bundle could replace the CA key or other state; choose a directory outside it",
			ErrOutDirInStateDir, quoteDir(dir))
	}
	fi, err := os.Stat(existing)
	if err != nil {
		return bad("cannot be used: %v", err)
	}
	if !fi.IsDir() {
		if existing == real {
			return bad("is a file, not a directory")
		}
		return bad("cannot be created: %s is not a directory", existing)
	}
	// Permission bits do not tell (root ignores them, /proc refuses
	// creation regardless): try what the write will do.
	f, err := os.CreateTemp(existing, ".nefia-probe-*")
	if err != nil {
		return bad("is not writable: %v", errors.Unwrap(err))
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return bad("left a probe file %s that could not be removed: %v", name, err)
	}
	return nil
}

// CheckBundleFiles refuses a bundle whose files exist but are not regular
// files (a link, a directory): the atomic writer refuses to replace them
// even with force, and finding that out after issuance leaves a
// certificate without its files. The error wraps ErrInvalidOutDir and
// names the file by its base name.
func CheckBundleFiles(dir, name string, p12 bool) error {
	p := BundlePathsFor(dir, name)
	files := []string{p.Cert, p.Key, p.CA}
	if p12 {
		files = append(files, filepath.Join(dir, name+".p12"))
	}
	for _, f := range files {
		fi, err := os.Lstat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("pki: check %s: %w", f, err)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%w: %s there is not a regular file (a link or a directory) and will not be replaced", ErrInvalidOutDir, filepath.Base(f))
		}
	}
	return nil
}

// resolvePath resolves symbolic links in the longest existing prefix of
// the clean absolute path p and appends the rest, which does not exist
// and so holds no links. It also returns that resolved existing prefix. A
// component that exists but cannot be resolved (a dangling or looping
// link) is an error: a directory created through it could land anywhere.
func resolvePath(p string) (real, existing string, err error) {
	var rest []string
	for cur := p; ; {
		if _, err := os.Lstat(cur); err == nil {
			r, err := filepath.EvalSymlinks(cur)
			if err != nil {
				return "", "", fmt.Errorf("a symbolic link on the path cannot be resolved: %w", err)
			}
			return filepath.Join(append([]string{r}, rest...)...), r, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, cur, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}

// insideStateDir reports whether real (resolved; existing is its resolved
// existing prefix) is the state directory or below it, other than under
// its ClientsDir. Paths are compared after resolution, and the existing
// ancestors by identity, which also catches a bind mount.
func insideStateDir(stateDir, real, existing string) (bool, error) {
	absState, err := filepath.Abs(stateDir)
	if err != nil {
		return false, err
	}
	stateReal, _, err := resolvePath(absState)
	if err != nil {
		return false, err
	}
	clientsReal, _, err := resolvePath(filepath.Join(stateReal, ClientsDir))
	if err != nil {
		return false, err
	}
	if within(stateReal, real) && !within(clientsReal, real) {
		return true, nil
	}
	stateInfo, err := os.Stat(stateReal)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // no state yet: nothing there to overwrite
	}
	if err != nil {
		return false, err
	}
	// Walk up from the existing part: an ancestor that is the state
	// directory, reached other than through ClientsDir, means inside.
	child := ""
	if existing != real {
		rel, _ := filepath.Rel(existing, real)
		child = strings.SplitN(rel, string(filepath.Separator), 2)[0]
	}
	for cur := existing; ; {
		if fi, err := os.Stat(cur); err == nil && os.SameFile(fi, stateInfo) {
			return child != ClientsDir, nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return false, nil
		}
		child, cur = filepath.Base(cur), parent
	}
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

// quoteDir renders a destination for an error: empty as "", anything else
// as given.
func quoteDir(dir string) string {
	if dir == "" {
		return `""`
	}
	return dir
}
