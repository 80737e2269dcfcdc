package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

func TestAuditVerifyAndTail(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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

// TestAuditCheckpointAnchorsTheHead deletes the newest records, which the
// hash chain alone cannot notice (issue 10 item 14): the signed checkpoint
// must. A forged or foreign checkpoint fails its signature, and a
// checkpoint kept elsewhere proves what a restored older one would hide.
func TestAuditCheckpointAnchorsTheHead(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*cli, string, [][]byte) {
		c := newCLI(t)
		c.mustRun("mtls", "init")
		c.mustRun("mtls", "issue-client", "--name", "a", "--out-dir", c.outDir())
		c.mustRun("mtls", "issue-client", "--name", "b", "--out-dir", c.outDir())
		path := filepath.Join(c.stateDir, "audit", "audit.jsonl")
		data, _ := os.ReadFile(path)
		return c, path, bytes.SplitAfter(bytes.TrimSpace(data), []byte("\n"))
	}
	cut := func(path string, lines [][]byte, keep int) {
		data := bytes.Join(lines[:keep], nil)
		if !bytes.HasSuffix(data, []byte("\n")) {
			data = append(data, '\n')
		}
		os.WriteFile(path, data, 0o600)
	}
	ckPath := func(c *cli) string { return filepath.Join(c.stateDir, "audit", "checkpoint.json") }

	tests := []struct {
		name string
		run  func(t *testing.T) (stdout, stderr string, code int)
		code int
		want string
	}{
		{"intact", func(t *testing.T) (string, string, int) {
			c, _, _ := setup(t)
			return c.run("audit", "verify")
		}, 0, "ok: 6 records"},
		{"newest 2 records deleted", func(t *testing.T) (string, string, int) {
			c, path, lines := setup(t)
			cut(path, lines, 4)
			return c.run("audit", "verify")
		}, 1, "checkpoint.json (record 6): the newest 2 records were removed"},
		{"checkpoint edited to match", func(t *testing.T) (string, string, int) {
			c, path, lines := setup(t)
			cut(path, lines, 4)
			data, _ := os.ReadFile(ckPath(c))
			data = bytes.Replace(data, []byte(`"count": 6`), []byte(`"count": 4`), 1)
			os.WriteFile(ckPath(c), data, 0o600)
			return c.run("audit", "verify")
		}, 1, "signature does not verify"},
		{"checkpoint of another trail", func(t *testing.T) (string, string, int) {
			c, path, lines := setup(t)
			other, _, _ := setup(t)
			cut(path, lines, 4)
			data, _ := os.ReadFile(ckPath(other))
			os.WriteFile(ckPath(c), data, 0o600)
			return c.run("audit", "verify")
		}, 1, "signature does not verify"},
		{"checkpoint removed", func(t *testing.T) (string, string, int) {
			c, _, _ := setup(t)
			os.Remove(ckPath(c))
			return c.run("audit", "verify")
		}, 1, "checkpoint.json is missing"},
		{"kept checkpoint, older: passes", func(t *testing.T) (string, string, int) {
			c, _, _ := setup(t)
			kept := filepath.Join(c.work, "kept.json")
			os.WriteFile(kept, []byte(c.mustRun("audit", "checkpoint")), 0o600)
			c.mustRun("mtls", "issue-client", "--name", "c", "--out-dir", c.outDir())
			return c.run("audit", "verify", "--checkpoint", kept)
		}, 0, "ok: 8 records"},
		{"kept checkpoint, newer than a restored old one", func(t *testing.T) (string, string, int) {
			c, path, lines := setup(t)
			old, _ := os.ReadFile(ckPath(c))
			kept := filepath.Join(c.work, "kept.json")
			c.mustRun("mtls", "issue-client", "--name", "c", "--out-dir", c.outDir())
			os.WriteFile(kept, []byte(c.mustRun("audit", "checkpoint")), 0o600)
			// The attacker deletes the newest records and puts back the
			// checkpoint they had: the trail alone cannot tell.
			cut(path, lines, 6)
			os.WriteFile(ckPath(c), old, 0o600)
			if _, stderr, code := c.run("audit", "verify"); code != 0 {
				t.Fatalf("verify without the kept checkpoint: exit %d %s", code, stderr)
			}
			return c.run("audit", "verify", "--checkpoint", kept)
		}, 1, "before the given checkpoint (record 8)"},
		{"--checkpoint missing file", func(t *testing.T) (string, string, int) {
			c, _, _ := setup(t)
			return c.run("audit", "verify", "--checkpoint", filepath.Join(c.work, "nope.json"))
		}, 2, "--checkpoint:"},
		{"--checkpoint not JSON", func(t *testing.T) (string, string, int) {
			c, _, _ := setup(t)
			bad := filepath.Join(c.work, "bad.json")
			os.WriteFile(bad, []byte("nope"), 0o600)
			return c.run("audit", "verify", "--checkpoint", bad)
		}, 2, "--checkpoint "},
		{"--checkpoint with --file", func(t *testing.T) (string, string, int) {
			c, path, _ := setup(t)
			return c.run("audit", "verify", "--checkpoint", path, "--file", path)
		}, 2, "--checkpoint: checks the whole trail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := tt.run(t)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, tt.code, tt.want)
			}
		})
	}
}

// TestAuditMaxFilesFromConfig: audit.max_files in nefia.yaml reaches the
// trail the CLI writes: a rotation leaves that many rotated files, and the
// trail still verifies (issue 10 item 12).
func TestAuditMaxFilesFromConfig(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	dir := filepath.Join(c.stateDir, "audit")
	// Three rotated files, then a current one at the 1 MiB rotation size.
	for _, maxSize := range []int64{64 << 10, 1 << 30} {
		l, err := audit.Open(dir, audit.Options{MaxSize: maxSize})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			rotated, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
			fi, _ := os.Stat(filepath.Join(dir, audit.TrailFile))
			if (maxSize < 1<<20 && len(rotated) == 3) || (maxSize >= 1<<20 && fi.Size() >= 1<<20) {
				break
			}
			if err := l.Append(audit.Record{Event: audit.EventToolCall, Tool: "nefia.mtls.status", Outcome: audit.OutcomeOK}, i%256 == 0); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
	}
	cfg, _ := os.ReadFile(c.config)
	os.WriteFile(c.config, append(cfg, "audit:\n  max_size_mb: 1\n  max_files: 1\n"...), 0o600)

	c.mustRun("mtls", "issue-client", "--name", "after", "--out-dir", c.outDir())
	if rotated, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl")); len(rotated) != 1 {
		t.Errorf("%d rotated files after a rotation with audit.max_files 1, want 1", len(rotated))
	}
	if out := c.mustRun("audit", "verify"); !strings.HasPrefix(out, "ok: ") {
		t.Errorf("verify: %s", out)
	}
}
