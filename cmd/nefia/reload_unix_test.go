//go:build unix

package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// TestReloadPolicyAndUpstreamsOverGateway drives the built binary over
// mTLS (issue 12 item 7): an edit of nefia.yaml that takes a tool away
// from the agent's role makes the agent's next call on its live session a
// denial; a broken file keeps the running policy and logs one line naming
// the file; SIGHUP reloads with the file unchanged; an edit that adds an
// upstream serves its tools to the live session (list_changed).
func TestReloadPolicyAndUpstreamsOverGateway(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "bot", "--role", "agent", "--out-dir", c.outDir())
	head := "version: 1\nmcp:\n  mtls:\n    enabled: true\n"
	allow := head + "  policy:\n    - match: {role: agent}\n      allow: [nefia.mtls.status, \"inner.*\"]\n"
	deny := head + "  policy:\n    - match: {role: agent}\n      allow: [\"inner.*\"]\n"
	c.writeConfig(allow)

	cmd, logs := serveBin(t, c, "--listen", "127.0.0.1:0")
	listen := logs.wait("gateway listening")["addr"].(string)

	mc := rawClient(t, c, listen, "bot")
	changed := make(chan struct{}, 16)
	mc.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/tools/list_changed" {
			changed <- struct{}{}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	status := func() *mcp.CallToolResult {
		t.Helper()
		res, err := mc.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := status(); res.IsError {
		t.Fatalf("status before the edit refused: %v", res.Content)
	}

	c.writeConfig(deny)
	logs.wait("configuration reloaded")
	res := status()
	if !res.IsError || !strings.Contains(textOf(res), "permission denied") {
		t.Fatalf("status after the policy took it away: isError=%v %q, want a denial", res.IsError, textOf(res))
	}

	c.writeConfig("version: 1\nmcp: [broken\n")
	rec := logs.wait("configuration not reloaded; keeping the running one")
	if rec["file"] != c.config || rec["err"] == "" {
		t.Errorf("log line = %v, want the file %s and the error", rec, c.config)
	}
	if res := status(); !res.IsError {
		t.Error("a broken file dropped the running policy (status allowed again)")
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.wait("SIGHUP: reloading the configuration")
	logs.wait("configuration not reloaded; keeping the running one") // the file is still broken

	// Back to allow, now with an upstream: its tools reach the live session.
	c.writeConfig(strings.Replace(innerConfig(c), "mcp:\n", "mcp:\n  mtls:\n    enabled: true\n", 1) +
		"  policy:\n    - match: {role: agent}\n      allow: [nefia.mtls.status, \"inner.*\"]\n")
	logs.wait("configuration reloaded")
	if res := status(); res.IsError {
		t.Fatalf("status after the policy gave it back refused: %q", textOf(res))
	}
	for {
		list, err := mc.ListTools(ctx, mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if hasTool(list.Tools, "inner.nefia.mtls.status") {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the upstream added by the reload never appeared in tools/list")
		}
	}
	if got := servertest.CallOK(t, mc, "inner.nefia.mtls.status", nil); got["enabled"] != false {
		t.Errorf("inner.nefia.mtls.status = %v", got)
	}
	// Started without upstreams, the gateway had no assertion key; the
	// reload that added the first one created it, so calls are signed.
	if _, err := os.Stat(filepath.Join(c.stateDir, upstream.PubFile)); err != nil {
		t.Errorf("no assertion key after a reload added the first upstream: %v", err)
	}
	for _, m := range logs.skipped {
		if strings.Contains(m, "take effect on restart") {
			t.Errorf("reload warned %q though only mcp.policy and mcp.upstreams changed (--listen is not a change)", m)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("gateway exited with %v", err)
	}
}

func textOf(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func hasTool(tools []mcp.Tool, name string) bool {
	for _, tl := range tools {
		if tl.Name == name {
			return true
		}
	}
	return false
}

// TestReloadPolicyStdio: in stdio mode (no mTLS; the caller is the local
// operator) an edit of mcp.policy applies to the running session too, and
// SIGHUP reloads: one config works both ways (issue 12 items 7 and 8).
func TestReloadPolicyStdio(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	allow := "version: 1\nmcp:\n  policy:\n    - match: {role: operator}\n      allow: [nefia.mtls.status]\n"
	deny := "version: 1\nmcp:\n  policy:\n    - match: {role: operator}\n      allow: [nefia.mtls.init]\n"
	c.writeConfig(allow)
	srv := serveStdioLogged(t, c)
	mc, logs, cmd := srv.mc, srv.logs, srv.cmd
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	call := func() *mcp.CallToolResult {
		t.Helper()
		res, err := mc.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := call(); res.IsError {
		t.Fatalf("status refused before the edit: %q", textOf(res))
	}
	c.writeConfig(deny)
	logs.wait("configuration reloaded")
	if res := call(); !res.IsError || !strings.Contains(textOf(res), "permission denied") {
		t.Fatalf("status after the edit: isError=%v %q, want a denial", res.IsError, textOf(res))
	}
	// SIGHUP with the file unchanged reloads it again (and changes nothing).
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.wait("SIGHUP: reloading the configuration")
	logs.wait("configuration reloaded")
	if res := call(); !res.IsError {
		t.Error("status allowed after a SIGHUP reload of the denying file")
	}
	srv.stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve exited with %v", err)
	}
}

// TestReloadKeepsRunningOnEmptyOrMissingFile: a running serve that finds
// nefia.yaml empty (a file being rewritten in place is, for a moment) or
// gone keeps its policy, and logs why, rather than falling back to the
// defaults as a start without a file does: the default policy would give
// the operator back nefia.mtls.status, which the file took away. The file
// restored is reloaded as usual.
func TestReloadKeepsRunningOnEmptyOrMissingFile(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	deny := "version: 1\nmcp:\n  policy:\n    - match: {role: operator}\n      allow: [nefia.mtls.init]\n"
	c.writeConfig(deny)
	srv := serveStdioLogged(t, c)
	mc, logs := srv.mc, srv.logs
	denied := func(when string) {
		t.Helper()
		res, err := mc.CallTool(t.Context(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.IsError {
			t.Fatalf("status allowed %s: the running policy was dropped", when)
		}
	}
	denied("at start")
	for _, tc := range []struct {
		name, why string
		change    func()
	}{
		{"empty", "holds no keys", func() { c.writeConfig("") }},
		{"comments only", "holds no keys", func() { c.writeConfig("# being rewritten\n") }},
		{"missing", "is missing", func() {
			if err := os.Remove(c.config); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		tc.change()
		rec := logs.wait("configuration not reloaded; keeping the running one")
		if err, _ := rec["err"].(string); !strings.Contains(err, tc.why) {
			t.Errorf("%s file: logged %v, want it to say the file %s", tc.name, rec, tc.why)
		}
		denied("after the file was " + tc.name)
	}
	c.writeConfig(strings.Replace(deny, "nefia.mtls.init", "nefia.mtls.status", 1))
	logs.wait("configuration reloaded")
	res, err := mc.CallTool(t.Context(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}})
	if err != nil || res.IsError {
		t.Fatalf("status after the file was restored allowing it: %v %v", res, err)
	}
}

// stdioServe is a `nefia mcp serve` over stdio started by serveStdioLogged.
type stdioServe struct {
	mc    *client.Client // initialized
	logs  *gatewayLog    // its JSON log
	cmd   *exec.Cmd
	stdin io.Closer // closing it ends the serve
}

// serveStdioLogged runs `nefia mcp serve` over stdio for c, initialized,
// with its JSON log followed; it is stopped when the test ends.
func serveStdioLogged(t *testing.T, c *cli) *stdioServe {
	t.Helper()
	cmd := exec.Command(nefiaBin, "mcp", "serve", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	logs := followLog(t, stderr)
	mc := client.NewClient(transport.NewIO(stdout, stdin, io.NopCloser(strings.NewReader(""))))
	t.Cleanup(func() { mc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := mc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	return &stdioServe{mc: mc, logs: logs, cmd: cmd, stdin: stdin}
}
