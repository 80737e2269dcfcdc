package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuditVerifyAndTail(t *testing.T) {
	c := newCLI(t)
	c.mustRun("mtls", "init")
	c.mustRun("mtls", "issue-client", "--name", "a", "--out-dir", c.outDir())
	c.mustRun("mtls", "issue-client", "--name", "b", "--out-dir", c.outDir())

	if out := c.mustRun("audit", "verify"); !strings.Contains(out, "ok: 6 records") {
		t.Errorf("verify: %s", out)
	}
	tail := c.mustRun("audit", "tail", "-n", "2")
	if lines := strings.Split(strings.TrimSpace(tail), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "mtls.issue_client") || !strings.Contains(lines[1], "ok") {
		t.Errorf("tail -n 2:\n%s", tail)
	}

	path := filepath.Join(c.stateDir, "audit", "audit.jsonl")
	data, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	lines[3] = bytes.Replace(lines[3], []byte(`"outcome":"ok"`), []byte(`"outcome":"error"`), 1)
	os.WriteFile(path, append(bytes.Join(lines, []byte("\n")), '\n'), 0o600)
	_, stderr, code := c.run("audit", "verify")
	if code != 1 || !strings.Contains(stderr, "audit.jsonl:4:") {
		t.Errorf("verify of an edited trail: exit %d, %s; want exit 1 naming line 4", code, stderr)
	}
	_, stderr, code = c.run("audit", "verify", "--file", path)
	if code != 1 || !strings.Contains(stderr, ":4:") {
		t.Errorf("verify --file: exit %d, %s", code, stderr)
	}

	fresh := newCLI(t)
	if _, stderr, code := fresh.run("audit", "verify"); code != 2 || !strings.Contains(stderr, "no audit trail") {
		t.Errorf("verify without a trail: exit %d, %s", code, stderr)
	}
}

func TestStateChangeRefusedWithoutAudit(t *testing.T) {
	c := newCLI(t)
	c.mustRun("mtls", "init")
	path := filepath.Join(c.stateDir, "audit", "audit.jsonl")
	os.Remove(path)
	os.Mkdir(path, 0o700)
	_, stderr, code := c.run("mtls", "issue-client", "--name", "x", "--out-dir", c.outDir())
	if code == 0 || !strings.Contains(stderr, "audit trail unavailable") {
		t.Fatalf("issue without an audit trail: exit %d, %s", code, stderr)
	}
	if out := c.mustRun("mtls", "list"); !strings.Contains(out, "no client certificates") {
		t.Errorf("a certificate was issued without audit:\n%s", out)
	}
}
