package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server/servertest"
)

// connectGateway runs 'nefia mcp serve' (the built binary) on 127.0.0.1:0
// over c's state until the test ends, and returns its address.
func connectGateway(t *testing.T, c *cli) string {
	t.Helper()
	cmd := exec.Command(nefiaBin, "mcp", "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	select {
	case a := <-addr:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not report its address")
		return ""
	}
}

func TestConnectBridgesAStdioClient(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", c.outDir())
	addr := connectGateway(t, c)

	// Like Claude Desktop: spawn the bridge as a stdio server. It needs no
	// state dir or config of its own, only the three files.
	mc, err := client.NewStdioMCPClient(nefiaBin, nil, "mcp", "connect", "--name", "ops", "--cert-dir", c.outDir(), "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatalf("initialize through nefia mcp connect: %v", err)
	}
	list, err := mc.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil || len(list.Tools) != 8 { // nefia.mtls.* and nefia.gateway.*
		t.Fatalf("tools/list: %v, %+v", err, list)
	}
	st := servertest.CallOK(t, mc, "nefia.mtls.status", nil)
	if caller, _ := st["caller"].(map[string]any); caller["name"] != "ops" || caller["transport"] != "mtls-stream" {
		t.Errorf("caller = %v, want ops over the mTLS stream", st["caller"])
	}
	if out := servertest.CallOK(t, mc, "nefia.mtls.issue_client", map[string]any{"name": "via-bridge", "duration": "1h"}); out["serial"] == "" {
		t.Errorf("issue_client = %v", out)
	}
}

// runConnect runs the built binary with args and no stdin.
func runConnect(t *testing.T, c *cli, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nefiaBin, append([]string{"mcp", "connect"}, args...)...)
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("nefia mcp connect %v did not exit within 30s", args)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

func TestConnectFailuresExitWithOneLine(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	certs := c.outDir()
	c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", certs)
	var gone struct{ Serial string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "gone", "--out-dir", certs, "--json")), &gone); err != nil {
		t.Fatal(err)
	}
	c.mustRun("mtls", "revoke", "--serial", gone.Serial, "--reason", "test")
	// Another nefia installation: its CA and an operator certificate from it.
	other := newCLI(t)
	other.mustRun("mtls", "init")
	other.mustRun("mtls", "issue-client", "--name", "intruder", "--role", "operator", "--out-dir", other.outDir())

	addr := connectGateway(t, c)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	in := func(dir, f string) string { return filepath.Join(dir, f) }

	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"revoked certificate", []string{"--name", "gone", "--cert-dir", certs, "--addr", addr}, 1,
			"the gateway refused the certificate: bad certificate (the certificate \"gone\", serial " + gone.Serial + ", is revoked"},
		{"another CA's certificate", []string{"--cert", in(other.outDir(), "intruder.crt"), "--key", in(other.outDir(), "intruder.key"), "--ca", in(certs, "ca.crt"), "--addr", addr}, 1,
			"the gateway refused the certificate: bad certificate (the certificate \"intruder\" was not issued by this gateway's CA)"},
		{"gateway of another CA", []string{"--name", "ops", "--cert-dir", certs, "--ca", in(other.outDir(), "ca.crt"), "--addr", addr}, 1,
			"the gateway's certificate is not trusted"},
		{"unreachable", []string{"--name", "ops", "--cert-dir", certs, "--addr", closed}, 1,
			"cannot reach the gateway at " + closed + ": connection refused"},
		{"missing certificate files", []string{"--name", "nobody", "--cert-dir", certs, "--addr", addr}, 2,
			"--name nobody: " + in(certs, "nobody.crt") + " does not exist"},
		{"missing CA file", []string{"--name", "ops", "--cert-dir", certs, "--ca", in(certs, "nope.crt"), "--addr", addr}, 2,
			"--ca: " + in(certs, "nope.crt") + " does not exist"},
		{"key of another certificate", []string{"--cert", in(certs, "ops.crt"), "--key", in(certs, "gone.key"), "--ca", in(certs, "ca.crt"), "--addr", addr}, 2,
			"are not a matching certificate and private key"},
		{"no certificate flags", []string{"--addr", addr}, 2, "missing --cert, --key, --ca"},
		{"--name and --cert", []string{"--name", "ops", "--cert", in(certs, "ops.crt")}, 2, "either --name or --cert"},
		{"bad --name", []string{"--name", "../ops"}, 2, "--name: invalid"},
		{"bad --addr", []string{"--name", "ops", "--cert-dir", certs, "--addr", "nowhere"}, 2, "--addr \"nowhere\": want host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runConnect(t, c, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.msg) {
				t.Errorf("stderr %q does not say %q", stderr, tt.msg)
			}
			if lines := strings.Count(strings.TrimSuffix(stderr, "\n"), "\n") + 1; lines != 1 {
				t.Errorf("stderr is %d lines, want one:\n%s", lines, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout carries %q, want nothing: it is the MCP client's JSON-RPC channel", stdout)
			}
		})
	}
}

func TestConnectGatewayAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		flag   string
		config string // nefia.yaml contents; "" for no file
		want   string
		err    string
	}{
		{"flag wins", "10.0.0.1:1", "version: 1\nmcp:\n  mtls:\n    listen_addr: 127.0.0.1:2\n", "10.0.0.1:1", ""},
		{"config listen address", "", "version: 1\nmcp:\n  mtls:\n    listen_addr: 127.0.0.1:2\n", "127.0.0.1:2", ""},
		{"unspecified listen host is dialled on loopback", "", "version: 1\nmcp:\n  mtls:\n    listen_addr: 0.0.0.0:3\n", "127.0.0.1:3", ""},
		{"IPv6 unspecified too", "", "version: 1\nmcp:\n  mtls:\n    listen_addr: '[::]:4'\n", "127.0.0.1:4", ""},
		{"no config: the default", "", "", "127.0.0.1:19821", ""},
		{"IPv6 flag", "[::1]:5", "", "[::1]:5", ""},
		{"no port", "gateway", "", "", "want host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			if tt.config != "" {
				if err := os.MkdirAll(filepath.Dir(c.config), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(c.config, []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e := &env{getenv: func(k string) string {
				if k == "NEFIA_CONFIG" {
					return c.config
				}
				return ""
			}}
			got, err := connectFlags{addr: tt.flag}.gatewayAddr(&globals{}, e)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || exitCode(err) != exitUsage {
					t.Errorf("err = %v (exit %d), want a usage error mentioning %q", err, exitCode(err), tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("gatewayAddr = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestConnectNoRenew: the bridge schedules the renewal of its certificate
// unless --no-renew (issue 13 item 2).
func TestConnectNoRenew(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "bot", "--out-dir", c.outDir())
	addr := connectGateway(t, c)
	for _, tt := range []struct {
		name      string
		args      []string
		scheduled bool
	}{
		{name: "default", scheduled: true},
		{name: "--no-renew", args: []string{"--no-renew"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runConnect(t, c, append([]string{"--name", "bot", "--cert-dir", c.outDir(), "--addr", addr}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Contains(stderr, "client certificate renewal scheduled"); got != tt.scheduled {
				t.Errorf("renewal scheduled: %v, want %v; stderr:\n%s", got, tt.scheduled, stderr)
			}
		})
	}
}
