package tools

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
)

// Every handler returns (result, nil): mcp-go turns a handler's Go error into
// a JSON-RPC protocol error, which a model never sees and cannot act on. So
// bad input and failures alike come back as results with IsError set, the
// shape the MCP specification asks for ("tool execution errors").

// success builds a successful result: the structured content (validated against
// the tool's output schema by clients and, optionally, by the server) and a
// readable text rendering of it for clients that show text only.
func success(structured any, text string) *mcp.CallToolResult {
	return mcp.NewToolResultStructured(structured, text)
}

// refuse builds the result for a request the tool will not carry out as
// asked: bad arguments, or a state that makes it impossible. The message
// says what to change.
func refuse(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultErrorf(format, args...)
}

// fail builds the result for an infrastructure failure (a disk error, a
// corrupt state file). The caller sees what failed, with host paths reduced
// to base names; the gateway's log gets the full error.
func (ts *toolset) fail(tool, doing string, err error) *mcp.CallToolResult {
	ts.log.Error("tool failed", logKeyTool, tool, logKeyError, err)
	msg := fmt.Sprintf("%s failed: %s", doing, ts.redact(err))
	if errors.Is(err, pki.ErrCorruptState) {
		msg += "; the state file must be repaired on the gateway host (it is never replaced automatically)"
	}
	return mcp.NewToolResultError(msg + "; the gateway's log has details")
}

// root is a directory redact strips from error text, and what to call it
// when the directory itself is named.
type root struct{ path, label string }

// redactionRoots returns the directories redact strips, with their
// symlink-resolved forms, longest first so a nested root (the clients
// directory inside the state directory) is stripped before its parent.
func redactionRoots(dirs ...root) []root {
	var roots []root
	for _, d := range dirs {
		abs, err := filepath.Abs(d.path)
		if d.path == "" || err != nil {
			continue
		}
		roots = append(roots, root{abs, d.label})
		if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
			roots = append(roots, root{real, d.label})
		}
	}
	// Stripping "/" would mangle every path; the catch-all handles those.
	roots = slices.DeleteFunc(roots, func(r root) bool { return r.path == filepath.Dir(r.path) })
	slices.SortStableFunc(roots, func(a, b root) int { return cmp.Compare(len(b.path), len(a.path)) })
	return roots
}

// absPath matches an absolute path at the start of a word, for the last step
// of redaction: any absolute path still left becomes its base name.
var absPath = regexp.MustCompile(`(^|[^\w./~-])(/[^\s"'():;,]+)`)

// redact renders err for a remote caller: file names relative to the
// gateway's directories, never the absolute paths of the CA, the state
// directory or anything else on the host.
func (ts *toolset) redact(err error) string {
	// The package prefix means nothing to a model.
	msg := strings.ReplaceAll(err.Error(), "pki: ", "")
	for _, r := range ts.roots {
		msg = strings.ReplaceAll(msg, r.path+string(filepath.Separator), "")
		msg = strings.ReplaceAll(msg, r.path, r.label)
	}
	return absPath.ReplaceAllStringFunc(msg, func(m string) string {
		sub := absPath.FindStringSubmatch(m)
		return sub[1] + filepath.Base(sub[2])
	})
}

// redactAll redacts texts that are not errors, such as pki's warnings.
func (ts *toolset) redactAll(texts []string) []string {
	var out []string
	for _, t := range texts {
		out = append(out, ts.redact(errors.New(t)))
	}
	return out
}
