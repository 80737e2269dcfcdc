package main

import (
	"strings"
	"testing"

	"github.com/nefia/nefia/server/servertest"
)

// TestServeStdioFlagWithMTLSEnabled (issue 14 item 5): with mTLS enabled,
// 'nefia mcp serve --stdio' still serves the local operator over
// stdin/stdout (the built binary, spawned as an MCP client would), instead
// of starting the listener and leaving stdin unread.
func TestServeStdioFlagWithMTLSEnabled(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	mc, _ := serveStdioBin(t, c, "--stdio")
	st := servertest.CallOK(t, mc, "nefia.mtls.status", nil)
	if caller, _ := st["caller"].(map[string]any); caller["transport"] != "stdio" || caller["role"] != "operator" {
		t.Errorf("stdio caller = %v, want the local operator", st["caller"])
	}
	issued := servertest.CallOK(t, mc, "nefia.mtls.issue_client", map[string]any{"name": "from-stdio", "duration": "2h"})
	if issued["serial"] == "" || issued["serial"] == nil {
		t.Errorf("issue_client over stdio = %v", issued)
	}
}

// TestServeStdioAndListenConflict: --listen names the mTLS listener, which
// --stdio does not start: both is a usage error naming the two flags.
func TestServeStdioAndListenConflict(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	_, errOut, code := c.run("mcp", "serve", "--stdio", "--listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(errOut, "--stdio") || !strings.Contains(errOut, "--listen") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want 2 and one line naming --stdio and --listen", code, errOut)
	}
}
