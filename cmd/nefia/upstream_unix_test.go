//go:build unix

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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

	cmd := exec.Command(nefiaBin, "mcp", "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr, pid := make(chan string, 1), make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "gateway listening":
				addr <- rec["addr"].(string)
			case "upstream process started":
				pid <- int(rec["pid"].(float64))
			}
		}
	}()
	var listen string
	var innerPID int
	for listen == "" || innerPID == 0 {
		select {
		case listen = <-addr:
		case innerPID = <-pid:
		case <-time.After(20 * time.Second):
			t.Fatal("gateway did not report its address and upstream")
		}
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
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
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
