//go:build unix

package main

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/nefia/nefia/server/servertest"
)

// TestServeMTLSWithUpstream: the gateway (mTLS mode) serves the upstream's
// tools through Register, and stops the upstream process when it stops.
func TestServeMTLSWithUpstream(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", c.outDir())
	c.writeConfig(strings.Replace(innerConfig(c), "mcp:\n", "mcp:\n  mtls:\n    enabled: true\n", 1))

	cmd, logs := serveBin(t, c, "--listen", "127.0.0.1:0")
	// The two lines come in either order.
	var listen string
	var innerPID int
	for listen == "" || innerPID == 0 {
		rec := logs.next()
		switch rec["msg"] {
		case "gateway listening":
			listen = rec["addr"].(string)
		case "upstream process started":
			innerPID = int(rec["pid"].(float64))
		}
	}
	mc := rawClient(t, c, listen, "ops")
	got := servertest.CallOK(t, mc, "inner.nefia.mtls.status", nil)
	if got["enabled"] != false {
		t.Errorf("inner.nefia.mtls.status = %v, want the inner (stdio) nefia's status", got)
	}
	st := servertest.CallOK(t, mc, "nefia.gateway.status", nil)
	if ups, _ := st["upstreams"].([]any); len(ups) != 1 || ups[0].(map[string]any)["state"] != "up" {
		t.Errorf("nefia.gateway.status = %v", st)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("gateway exited with %v", err)
	}
	if err := syscall.Kill(innerPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("upstream process %d still there after the gateway stopped (kill 0: %v)", innerPID, err)
	}
}
