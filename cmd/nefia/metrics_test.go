package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/server/servertest"
)

// TestMetricsScrape (issue 11 item 5) runs the built binary with
// mcp.metrics.listen_addr set, has a real client connect and call tools
// (one allowed, one denied) and another be refused, then scrapes /metrics:
// the counts match what happened and promtool accepts the exposition.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	c.mustRun("mtls", "issue-client", "--name", "bot", "--out-dir", c.outDir())
	if err := config.Set(c.config, "mcp.metrics.listen_addr", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(nefiaBin, "mcp", "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrs := map[string]chan string{"gateway listening": make(chan string, 1), "metrics listening": make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				if ch, ok := addrs[rec["msg"].(string)]; ok {
					ch <- rec["addr"].(string)
				}
			}
		}
	}()
	wait := func(msg string) string {
		select {
		case a := <-addrs[msg]:
			return a
		case <-time.After(20 * time.Second):
			t.Fatalf("no %q line from the gateway", msg)
			return ""
		}
	}
	listen, metricsAddr := wait("gateway listening"), wait("metrics listening")

	// A refused connection: no client certificate.
	caPEM, err := os.ReadFile(filepath.Join(c.outDir(), "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if conn, err := tls.Dial("tcp", listen, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}); err == nil {
		_, _ = conn.Read(make([]byte, 1)) // the refusal arrives after the client's half of the handshake
		conn.Close()
	}

	// An agent: one allowed call, one denied.
	kp, err := tls.LoadX509KeyPair(filepath.Join(c.outDir(), "bot.crt"), filepath.Join(c.outDir(), "bot.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", listen, &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	mc := client.NewClient(transport.NewIO(conn, conn, io.NopCloser(strings.NewReader(""))))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := mc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	servertest.CallOK(t, mc, "nefia.mtls.status", nil)
	if res, err := mc.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.revoke", Arguments: map[string]any{"serial": "01"}}}); err != nil || !res.IsError {
		t.Fatalf("agent's revoke: %v, %+v; want a denial", err, res)
	}

	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^nefia_handshakes_total\{outcome="ok",reason=""\} 1$`),
		regexp.MustCompile(`(?m)^nefia_handshakes_total\{outcome="refused",reason="no certificate"\} 1$`),
		regexp.MustCompile(`(?m)^nefia_connections_open\{role="agent",transport="mtls-stream"\} 1$`),
		regexp.MustCompile(`(?m)^nefia_tool_calls_total\{outcome="ok",tool="nefia.mtls.status"\} 1$`),
		regexp.MustCompile(`(?m)^nefia_tool_calls_total\{outcome="denied",tool="nefia.mtls.revoke"\} 1$`),
		regexp.MustCompile(`(?m)^nefia_tool_call_duration_seconds_count\{tool="nefia.mtls.status"\} 1$`),
		regexp.MustCompile(`(?m)^nefia_certificate_expiry_seconds\{certificate="ca"\} [0-9.e+]+$`),
		regexp.MustCompile(`(?m)^nefia_certificate_expiry_seconds\{certificate="server"\} [0-9.e+]+$`),
		regexp.MustCompile(`(?m)^nefia_certificate_expiry_seconds\{certificate="client_soonest"\} [0-9.e+]+$`),
		regexp.MustCompile(`(?m)^nefia_revocation_store_age_seconds 0$`),
		regexp.MustCompile(`(?m)^nefia_revoked_certificates 0$`),
		regexp.MustCompile(`(?m)^nefia_audit_write_failures_total 0$`),
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		body = get(t, "http://"+metricsAddr+"/metrics")
		missing := 0
		for _, re := range want {
			if !re.MatchString(body) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, re := range want {
				if !re.MatchString(body) {
					t.Errorf("scrape lacks %s", re)
				}
			}
			t.Fatalf("scrape:\n%s", grepNefia(body))
		}
		time.Sleep(20 * time.Millisecond) // the refusal is reported by the gateway's goroutine
	}
	mc.Close()

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed (apt-get install prometheus)")
		}
		t.Skip("promtool not installed")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepNefia(body string) string {
	var b strings.Builder
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "nefia_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
