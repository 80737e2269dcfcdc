package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
)

// TestConcurrentWriters has the CLI and a running gateway hammer one state
// directory at once: two loops of `nefia mtls` processes and one MCP client
// calling the gateway over mTLS, each making 100 state changes (issue, then
// revoke a serial some writer issued, alternately). No update may be lost:
// the inventory holds every issuance, the revocation store every
// revocation, and the audit chain verifies with an ok record of each, made
// by the transport that did it. The gateway's own view (status) agrees.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	const opsPerWriter = 100 // half issuances, half revocations
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	led := newLedger()
	led.ackIssue(led.tryIssue("ops"), "setup", issueOut(t, c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--out-dir", c.outDir(), "--json")))

	g := startGateway(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mc, err := dialMCP(ctx, g.addr, c.outDir(), "ops")
	if err != nil {
		t.Fatalf("connect to the gateway: %v\n%s", err, g.log)
	}
	defer mc.Close()

	// Every issued serial goes into pool; every revocation takes one out,
	// so writers revoke each other's certificates and no serial twice.
	pool := make(chan string, 3*opsPerWriter)
	type writer struct {
		name   string
		issue  func(name string) (issueResult, error)
		revoke func(serial string) (revokeResult, error)
	}
	cliWriter := func(name string) writer {
		run := func(args ...string) (string, error) {
			cmd := exec.Command(nefiaBin, args...)
			cmd.Env = childEnv(c)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return "", fmt.Errorf("nefia %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			return string(out), nil
		}
		return writer{
			name: name,
			issue: func(n string) (issueResult, error) {
				out, err := run("mtls", "issue-client", "--name", n, "--duration", "1h", "--out-dir", c.outDir(), "--json")
				if err != nil {
					return issueResult{}, err
				}
				return issueOut(t, out), nil
			},
			revoke: func(serial string) (revokeResult, error) {
				out, err := run("mtls", "revoke", "--serial", serial, "--reason", name, "--json")
				if err != nil {
					return revokeResult{}, err
				}
				return revokeOut(t, out), nil
			},
		}
	}
	mcpWriter := writer{
		name: "mcp",
		issue: func(n string) (issueResult, error) {
			res, err := callTool(ctx, mc, "nefia.mtls.issue_client", map[string]any{"name": n, "duration": "1h"})
			if err != nil {
				return issueResult{}, err
			}
			return decodeInto[issueResult](t, res), nil
		},
		revoke: func(serial string) (revokeResult, error) {
			res, err := callTool(ctx, mc, "nefia.mtls.revoke", map[string]any{"serial": serial, "reason": "mcp"})
			if err != nil {
				return revokeResult{}, err
			}
			return decodeInto[revokeResult](t, res), nil
		},
	}
	writers := []writer{cliWriter("cli-a"), cliWriter("cli-b"), mcpWriter}
	transports := map[string]string{"cli-a": identity.TransportCLI, "cli-b": identity.TransportCLI, "mcp": identity.TransportStream}
	byWriter := sync.Map{} // serial -> writer name, for issuances and revocations

	// A CLI operation, a process each, takes several times as long as a
	// tool call; the MCP writer paces itself to the CLI loops, starting its
	// next issue+revoke pair when each CLI loop has finished one on average,
	// so that all three overlap from start to end.
	cliPairs := make(chan struct{}, opsPerWriter)
	pace := func(w writer, i int) {
		if w.name != "mcp" || i == 0 {
			return
		}
		for range 2 {
			select {
			case <-cliPairs:
			case <-ctx.Done():
			}
		}
	}

	start := make(chan struct{})
	began := time.Now()
	var wg sync.WaitGroup
	took := make([]time.Duration, len(writers))
	for wi, w := range writers {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			defer func() { took[wi] = time.Since(t0) }()
			for i := range opsPerWriter / 2 {
				pace(w, i)
				name := fmt.Sprintf("%s-%d", w.name, i)
				attempt := led.tryIssue(name)
				iss, err := w.issue(name)
				if err != nil {
					t.Errorf("%s: issue %s: %v", w.name, name, err)
					cancel() // the others stop too
					return
				}
				led.ackIssue(attempt, w.name, iss)
				byWriter.Store("issue:"+iss.Serial, w.name)
				pool <- iss.Serial

				serial := <-pool // never blocks: this writer just added one
				led.tryRevoke(serial)
				rev, err := w.revoke(serial)
				if err != nil {
					t.Errorf("%s: revoke %s: %v", w.name, serial, err)
					cancel()
					return
				}
				if rev.Serial != serial || rev.AlreadyRevoked {
					t.Errorf("%s: revoke %s = %+v; each serial is revoked once", w.name, serial, rev)
				}
				led.ackRevoke(rev, w.name)
				byWriter.Store("revoke:"+serial, w.name)
				if w.name != "mcp" {
					cliPairs <- struct{}{}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	if t.Failed() {
		t.FailNow()
	}

	want := len(writers) * opsPerWriter / 2
	rep := checkState(t, c, led, []string{c.outDir(), filepath.Join(c.stateDir, "clients")}, false, "after the writers")
	if len(rep.inventory) != want+1 || len(rep.revoked) != want {
		t.Errorf("inventory holds %d certificates (want %d), the revocation store %d (want %d)", len(rep.inventory), want+1, len(rep.revoked), want)
	}
	for serial := range led.issued {
		if w, ok := byWriter.Load("issue:" + serial); ok && rep.issuedBy[serial] != transports[w.(string)] {
			t.Errorf("issuance %s by %s is audited with transport %q", serial, w, rep.issuedBy[serial])
		}
	}
	for serial := range led.revoked {
		if w, ok := byWriter.Load("revoke:" + serial); ok && rep.revokedBy[serial] != transports[w.(string)] {
			t.Errorf("revocation %s by %s is audited with transport %q", serial, w, rep.revokedBy[serial])
		}
	}

	// The gateway, which cached nothing it should not have, sees the same.
	res, err := callTool(ctx, mc, "nefia.mtls.status", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := decodeInto[struct {
		Clients struct{ Issued, Revoked int }
	}](t, res)
	if st.Clients.Issued != want+1 || st.Clients.Revoked != want {
		t.Errorf("gateway status: %d issued, %d revoked; want %d, %d", st.Clients.Issued, st.Clients.Revoked, want+1, want)
	}

	// A clean shutdown flushes the gateway's batched records; the chain
	// still holds.
	mc.Close()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
		if g.err != nil {
			t.Errorf("gateway exited with %v after SIGTERM\n%s", g.err, g.log)
		}
	case <-ctx.Done():
		t.Fatal("gateway did not stop after SIGTERM")
	}
	final := checkState(t, c, led, []string{c.outDir(), filepath.Join(c.stateDir, "clients")}, false, "after shutdown")
	t.Logf("%d writers × %d ops (%d issuances, %d revocations) in %v (cli-a %v, cli-b %v, mcp %v); %d audit records",
		len(writers), opsPerWriter, want, want, elapsed.Round(time.Millisecond),
		took[0].Round(time.Millisecond), took[1].Round(time.Millisecond), took[2].Round(time.Millisecond), final.records)
}
