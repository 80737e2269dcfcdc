package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
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
)

// TestServeStdio drives the built binary with mcp-go's stdio client, as a
// local MCP client that spawns nefia would.
func TestServeStdio(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	mc, ctx := serveStdioBin(t, c)
	list, err := mc.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil || len(list.Tools) != 6 {
		t.Fatalf("tools/list over stdio: %d tools, %v", len(list.Tools), err)
	}
	servertest.CallOK(t, mc, "nefia.mtls.init", map[string]any{"hosts": []string{"localhost", "127.0.0.1"}})
	issued := servertest.CallOK(t, mc, "nefia.mtls.issue_client", map[string]any{"name": "stdio-bot", "duration": "2h"})
	st := servertest.CallOK(t, mc, "nefia.mtls.status", nil)
	if clients, _ := st["clients"].(map[string]any); clients["active"] != float64(1) {
		t.Errorf("status over stdio: %v", st)
	}
	if caller, _ := st["caller"].(map[string]any); caller["transport"] != "stdio" || caller["role"] != "operator" {
		t.Errorf("stdio caller = %v, want the local operator", st["caller"])
	}
	rev := servertest.CallOK(t, mc, "nefia.mtls.revoke", map[string]any{"serial": issued["serial"]})
	if rev["serial"] != issued["serial"] {
		t.Errorf("revoke = %v", rev)
	}
}

// TestServeMTLSAndShutdown starts the built binary with mTLS on, calls a
// tool over TLS, then stops it with SIGTERM.
func TestServeMTLSAndShutdown(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", c.outDir())

	cmd := exec.Command(nefiaBin, "mcp", "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "gateway listening" {
				addr <- rec["addr"].(string)
			}
		}
	}()
	var listen string
	select {
	case listen = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not report its address")
	}

	kp, err := tls.LoadX509KeyPair(filepath.Join(c.outDir(), "ops.crt"), filepath.Join(c.outDir(), "ops.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(c.outDir(), "ca.crt"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", listen, &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	mc := client.NewClient(transport.NewIO(conn, conn, io.NopCloser(strings.NewReader(""))))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	st := servertest.CallOK(t, mc, "nefia.mtls.status", nil)
	if st["connections"] != float64(1) || st["enabled"] != true {
		t.Errorf("status over mTLS: %v", st)
	}

	// One revocation from the CLI, one over MCP: one chain.
	serialOf := func(name string) string {
		var v struct{ Serial string }
		_ = json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", name, "--out-dir", c.outDir(), "--json")), &v)
		return v.Serial
	}
	viaCLI, viaMCP := serialOf("cli-victim"), serialOf("mcp-victim")
	revoke := exec.Command(nefiaBin, "mtls", "revoke", "--serial", viaCLI)
	revoke.Env = cmd.Env
	if out, err := revoke.CombinedOutput(); err != nil {
		t.Fatalf("CLI revoke: %v\n%s", err, out)
	}
	servertest.CallOK(t, mc, "nefia.mtls.revoke", map[string]any{"serial": viaMCP})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gateway exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop within 20s of SIGTERM")
	}
	mc.Close()
	if stdout.Len() != 0 {
		t.Errorf("mTLS mode wrote to stdout: %q", stdout.String())
	}

	out := c.mustRun("audit", "verify")
	if !strings.Contains(out, "chain intact") {
		t.Errorf("audit verify: %s", out)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(c.mustRun("audit", "tail", "-n", "1000", "--json")), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit tail --json line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	transports := map[string]string{}
	for _, r := range recs {
		if r["event"] == "mtls.revoke" && r["outcome"] == "ok" {
			res, _ := r["result"].(map[string]any)
			transports[fmt.Sprint(res["serial"])] = fmt.Sprint(r["transport"])
		}
	}
	if transports[viaCLI] != "cli" || transports[viaMCP] != "mtls-stream" {
		t.Errorf("revocations in the trail by transport: %v", transports)
	}
}
