//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlock is one shell block of README.md the walkthrough test runs:
// kind "run" (runs to completion, must exit 0) or "serve" (the gateway,
// started in the background).
type readmeBlock struct {
	kind, text string
	line       int
}

// readmeBlocks extracts the ```sh blocks that follow a
// "<!-- walkthrough-test: KIND -->" line, in order, so the test runs what
// the README says and the two cannot drift.
func readmeBlocks(t *testing.T, readme []byte) []readmeBlock {
	t.Helper()
	const marker = "<!-- walkthrough-test: "
	var (
		blocks []readmeBlock
		kind   string // the marker just seen, waiting for its block
		cur    *readmeBlock
	)
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, marker):
			kind = strings.TrimSuffix(strings.TrimPrefix(line, marker), " -->")
			if kind != "run" && kind != "serve" {
				t.Fatalf("README.md:%d: unknown walkthrough-test kind %q", n, kind)
			}
		case kind != "" && line == "```sh":
			cur = &readmeBlock{kind: kind, line: n + 1}
			kind = ""
		case kind != "" && line != "":
			t.Fatalf("README.md:%d: a walkthrough-test marker must be followed by a ```sh block", n)
		}
	}
	if cur != nil {
		t.Fatal("README.md: unterminated shell block")
	}
	return blocks
}

// TestREADMEWalkthrough (issue 14 item 6) runs the README's walkthrough and
// calling-a-tool examples, as written, with bash -euo pipefail against the
// built binary: a fresh HOME (state and config in their default places), a
// scratch directory as the checkout, the gateway on a free port (NEFIA_ADDR).
// On the base commit the --p12 line failed (no password file), the openssl
// example never exited, the revoke line had a placeholder serial, and curl
// refused the server certificate (no 127.0.0.1 in --hosts).
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "openssl", "curl", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed to run the README walkthrough: %v", tool, err)
			}
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, readme)
	var serves int
	for _, b := range blocks {
		if b.kind == "serve" {
			serves++
		}
	}
	if len(blocks) < 4 || serves != 1 {
		t.Fatalf("README.md has %d walkthrough blocks, %d to serve; want the walkthrough, one serve block and the examples", len(blocks), serves)
	}

	root := t.TempDir()
	work, home := filepath.Join(root, "checkout"), filepath.Join(root, "home")
	for _, d := range []string{work, home} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(nefiaBin, filepath.Join(work, "nefia")); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "LANG=C", "NEFIA_ADDR=" + freeAddr(t)}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	addr := strings.TrimPrefix(env[3], "NEFIA_ADDR=")

	shell := func(ctx context.Context, b readmeBlock) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", "set -euo pipefail\n"+b.text)
		cmd.Dir, cmd.Env = work, env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// The whole group: timeout, openssl and nefia are bash's children.
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		return cmd
	}
	for _, b := range blocks {
		if b.kind == "serve" {
			startReadmeGateway(t, shell(context.Background(), b), addr, b.line)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := shell(ctx, b).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README.md block at line %d failed: %v\n%s", b.line, err, out)
		}
		t.Logf("README.md block at line %d:\n%s", b.line, out)
	}

	// Nothing of the walkthrough lands in the checkout but the ignored
	// nefia-client-certs/ (and the binary the README builds there).
	err = filepath.WalkDir(work, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(work, path)
		switch {
		case rel == "." || rel == "nefia":
			return nil
		case rel == "nefia-client-certs":
			return filepath.SkipDir
		}
		t.Errorf("the walkthrough left %s in the checkout", rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startReadmeGateway starts the README's serve block and waits, with a
// deadline, until the gateway accepts connections at addr. It is stopped
// with SIGTERM when the test ends.
func startReadmeGateway(t *testing.T, cmd *exec.Cmd, addr string, line int) {
	t.Helper()
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("the README gateway did not stop within 10s of SIGTERM")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("README.md serve block at line %d exited: %v\n%s", line, err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("README.md serve block at line %d: nothing listening on %s after 30s\n%s", line, addr, logs.String())
		}
	}
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
