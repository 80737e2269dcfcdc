package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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

// serveBin runs the built binary as `nefia mcp serve --log-format json
// ARGS...` against c's state dir and config, and follows its log. It is
// stopped with SIGTERM when the test ends (killed if it has not stopped 20 s
// later, which fails the test).
func serveBin(t *testing.T, c *cli, args ...string) (*exec.Cmd, *gatewayLog) {
	t.Helper()
	cmd := exec.Command(nefiaBin, append([]string{"mcp", "serve", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("gateway did not stop within 20s of SIGTERM")
		}
	})
	return cmd, followLog(t, stderr)
}

// serveStdioBin spawns the built binary as `nefia mcp serve ARGS...` in
// stdio mode against c's state dir and config, as a local MCP client would,
// and returns the initialized client and a context bounding the test's
// calls; both end with the test.
func serveStdioBin(t *testing.T, c *cli, args ...string) (*client.Client, context.Context) {
	t.Helper()
	env := append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	mc, err := client.NewStdioMCPClient(nefiaBin, env, append([]string{"mcp", "serve"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatalf("initialize over stdio: %v", err)
	}
	return mc, ctx
}

// startGatewayBin runs the built binary as an mTLS gateway on a free port
// and returns its address.
func startGatewayBin(t *testing.T, c *cli) string {
	t.Helper()
	_, logs := serveBin(t, c, "--listen", "127.0.0.1:0")
	return logs.wait("gateway listening")["addr"].(string)
}

// gatewayLog follows the JSON log lines of a `nefia mcp serve` process.
type gatewayLog struct {
	t    *testing.T
	recs chan map[string]any
	// skipped are the messages wait passed over; held are their records,
	// which a later wait for one of them still finds (log lines of
	// concurrent start-up steps come in either order).
	skipped []string
	held    []map[string]any
}

func followLog(t *testing.T, r io.Reader) *gatewayLog {
	l := &gatewayLog{t: t, recs: make(chan map[string]any, 1024)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				l.recs <- rec
			}
		}
		close(l.recs)
	}()
	return l
}

// next returns the next record.
func (l *gatewayLog) next() map[string]any {
	l.t.Helper()
	select {
	case rec, ok := <-l.recs:
		if !ok {
			l.t.Fatal("gateway exited")
		}
		return rec
	case <-time.After(20 * time.Second):
		l.t.Fatal("gateway logged nothing for 20s")
	}
	return nil
}

// wait returns the next record whose msg is msg, skipping others.
func (l *gatewayLog) wait(msg string) map[string]any {
	l.t.Helper()
	for i, rec := range l.held {
		if rec["msg"] == msg {
			l.held = append(l.held[:i], l.held[i+1:]...)
			return rec
		}
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case rec, ok := <-l.recs:
			if !ok {
				l.t.Fatalf("gateway exited before logging %q", msg)
			}
			if rec["msg"] == msg {
				return rec
			}
			s, _ := rec["msg"].(string)
			l.skipped = append(l.skipped, s)
			l.held = append(l.held, rec)
		case <-deadline:
			l.t.Fatalf("gateway did not log %q", msg)
		}
	}
}

// rawClient is an initialized MCP client over a raw mTLS stream with the
// named bundle from the test's out dir.
func rawClient(t *testing.T, c *cli, addr, name string) *client.Client {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(c.outDir(), name+".crt"), filepath.Join(c.outDir(), name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(c.outDir(), "ca.crt"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	mc := client.NewClient(transport.NewIO(conn, conn, io.NopCloser(strings.NewReader(""))))
	t.Cleanup(func() { mc.Close(); conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	return mc
}
