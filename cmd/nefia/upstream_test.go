package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// innerConfig is a config whose one upstream, "inner", is another nefia
// (mcp serve over stdio, with a state dir and config of its own): a real
// MCP server every test machine has.
func innerConfig(c *cli) string {
	dir := filepath.Join(c.work, "inner")
	return `version: 1
mcp:
  upstreams:
    - name: inner
      command: [` + nefiaBin + `, mcp, serve]
      env: {NEFIA_STATE_DIR: ` + dir + `, NEFIA_CONFIG: ` + filepath.Join(dir, "nefia.yaml") + `}
      call_timeout: 20s
`
}

// TestServeStdioWithUpstream: in stdio mode the configured upstreams'
// tools are served next to nefia's, prefixed, and calls reach them.
func TestServeStdioWithUpstream(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.writeConfig(innerConfig(c))
	mc, ctx := serveStdioBin(t, c)
	list, err := mc.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if !slices.Contains(names, "nefia.mtls.status") || !slices.Contains(names, "inner.nefia.mtls.status") {
		t.Fatalf("tools/list = %v, want nefia's and inner.nefia.*", names)
	}
	got := servertest.CallOK(t, mc, "inner.nefia.mtls.status", nil)
	if dir, _ := got["state_dir"].(string); !strings.HasSuffix(dir, "inner") {
		t.Errorf("inner.nefia.mtls.status answered for %v, want the inner state dir", got["state_dir"])
	}
	if _, err := os.Stat(filepath.Join(c.stateDir, upstream.PubFile)); err != nil {
		t.Errorf("assertion public key not published: %v", err)
	}
}

// TestUpstreamCLI covers `nefia upstream key` and `nefia upstream list`.
func TestUpstreamCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.writeConfig(innerConfig(c))

	pemOut := c.mustRun("upstream", "key")
	if _, err := upstream.ParsePublicKeyPEM([]byte(pemOut)); err != nil {
		t.Errorf("upstream key printed %q: %v", pemOut, err)
	}
	if again := c.mustRun("upstream", "key"); again != pemOut {
		t.Error("upstream key changed between runs")
	}
	file, _ := os.ReadFile(filepath.Join(c.stateDir, upstream.PubFile))
	if string(file) != pemOut {
		t.Error("upstream key differs from upstream_assertion.pub")
	}

	if out := c.mustRun("upstream", "list"); !strings.Contains(out, "inner") || !strings.Contains(out, "stdio") || !strings.Contains(out, "20s") {
		t.Errorf("upstream list = %q", out)
	}
	var rows []upstreamRow
	if err := json.Unmarshal([]byte(c.mustRun("upstream", "list", "--json", "--probe")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].State != upstream.StateUp || !slices.Contains(rows[0].Tools, "inner.nefia.mtls.status") {
		t.Errorf("upstream list --json --probe = %+v", rows)
	}

	bare := newCLI(t)
	if out := bare.mustRun("upstream", "list"); !strings.Contains(out, "no upstreams") {
		t.Errorf("upstream list without config = %q", out)
	}
	for _, args := range [][]string{{"upstream", "list", "x"}, {"upstream", "list", "--jsn"}, {"upstream", "key", "x"}} {
		if _, errOut, code := c.run(args...); code != 2 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("nefia %v: exit %d %q, want exit 2 with one line", args, code, errOut)
		}
	}
}
