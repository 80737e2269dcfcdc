package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

	_, logs := serveBin(t, c, "--listen", "127.0.0.1:0")
	listen := logs.wait("gateway listening")["addr"].(string)
	metricsAddr := logs.wait("metrics listening")["addr"].(string)

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
	mc := rawClient(t, c, listen, "bot")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
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
