package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// nefiaBin is the built binary, for tests that need real separate processes.
var nefiaBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nefia-bin-")
	if err != nil {
		panic(err)
	}
	nefiaBin = filepath.Join(dir, "nefia")
	args := []string{"build", "-o", nefiaBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		panic("build nefia: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs nefia in-process against its own state dir and config.
type cli struct {
	t        *testing.T
	stateDir string
	config   string
	work     string
	// writeBundle, when set, replaces pki.WriteBundle.
	writeBundle func(dir string, iss *pki.Issued, force bool) (pki.BundlePaths, error)
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	root := t.TempDir()
	return &cli{t: t, stateDir: filepath.Join(root, "state"), config: filepath.Join(root, "config", "nefia.yaml"), work: root}
}

// run returns stdout, stderr and the exit status main would use.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, clock: pki.SystemClock{}, getenv: func(k string) string {
		switch k {
		case "NEFIA_STATE_DIR":
			return c.stateDir
		case "NEFIA_CONFIG":
			return c.config
		}
		return ""
	}, writeBundle: c.writeBundle}
	err := e.run(context.Background(), args)
	if err != nil {
		stderr.WriteString("nefia: " + errorLine(err) + "\n")
		return stdout.String(), stderr.String(), exitCode(err)
	}
	return stdout.String(), stderr.String(), 0
}

func (c *cli) mustRun(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("nefia %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (c *cli) outDir() string { return filepath.Join(c.work, "certs") }

func TestInitIssueStatusRevokeWalkthrough(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "localhost,10.99.0.1")
	cfg, err := os.ReadFile(c.config)
	if err != nil || !strings.Contains(string(cfg), "enabled: true") {
		t.Fatalf("config after init: %q (%v)", cfg, err)
	}

	var issued struct {
		Serial string          `json:"serial"`
		Files  pki.BundlePaths `json:"files"`
	}
	out := c.mustRun("mtls", "issue-client", "--name", "claude-agent", "--duration", "24h", "--out-dir", c.outDir(), "--json")
	if err := json.Unmarshal([]byte(out), &issued); err != nil {
		t.Fatalf("issue-client --json: %v\n%s", err, out)
	}
	for _, f := range []string{"claude-agent.crt", "claude-agent.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(c.outDir(), f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if human := c.mustRun("mtls", "issue-client", "--name", "ops", "--role", "operator", "--duration", "7d", "--out-dir", c.outDir()); !strings.Contains(human, "serial: ") {
		t.Errorf("issue-client does not print the serial:\n%s", human)
	}

	var st struct {
		Enabled    bool   `json:"enabled"`
		ListenAddr string `json:"listen_addr"`
		StateDir   string `json:"state_dir"`
		ConfigFile string `json:"config_file"`
		CA         *struct {
			Subject string `json:"subject"`
		} `json:"ca"`
		Server *struct {
			SANs []string `json:"sans"`
		} `json:"server"`
		Clients  pki.ClientCounts `json:"clients"`
		Problems []string         `json:"problems"`
	}
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.ListenAddr != "127.0.0.1:19821" || st.StateDir != c.stateDir || st.ConfigFile != c.config ||
		st.CA == nil || st.Server == nil || strings.Join(st.Server.SANs, ",") != "localhost,10.99.0.1,127.0.0.1" ||
		st.Clients != (pki.ClientCounts{Issued: 2, Active: 2}) || len(st.Problems) != 0 {
		t.Errorf("status = %+v", st)
	}

	if out := c.mustRun("mtls", "revoke", "--serial", strings.ToUpper(issued.Serial), "--reason", "test"); !strings.Contains(out, "Revoked "+issued.Serial) {
		t.Errorf("revoke output: %s", out)
	}
	if out := c.mustRun("mtls", "revoke", "--serial", issued.Serial); !strings.Contains(out, "Already revoked") {
		t.Errorf("second revoke output: %s", out)
	}
	var list []pki.ListedCert
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].State != pki.StateRevoked || list[1].State != pki.StateActive {
		t.Errorf("list = %+v", list)
	}
	if human := c.mustRun("mtls", "status"); !strings.Contains(human, "2 issued, 1 active, 0 expired, 1 revoked") {
		t.Errorf("status:\n%s", human)
	}
}

func TestBadInputIsExit2AndChangesNothing(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	serial := func() string {
		var v struct{ Serial string }
		_ = json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "existing", "--out-dir", c.outDir(), "--json")), &v)
		return v.Serial
	}()
	csrPath := filepath.Join(c.work, "bad.csr")
	os.WriteFile(csrPath, []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), 0o600)
	_ = serial
	emptyFile := filepath.Join(c.work, "empty.csr")
	os.WriteFile(emptyFile, nil, 0o600)
	blankFile := filepath.Join(c.work, "blank.csr")
	os.WriteFile(blankFile, []byte(" \n\n"), 0o600)
	aFile := filepath.Join(c.work, "a-file")
	os.WriteFile(aFile, []byte("x"), 0o600)
	stateLink := filepath.Join(c.work, "state-link")
	if err := os.Symlink(c.stateDir, stateLink); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantMsg  string
	}{
		{"re-init without force", []string{"mtls", "init"}, 2, "--force"},
		{"bad hosts", []string{"mtls", "init", "--force", "--hosts", "bad_host"}, 2, "--hosts"},
		{"name ../x", []string{"mtls", "issue-client", "--name", "../x"}, 2, "--name"},
		{"name a/b", []string{"mtls", "issue-client", "--name", "a/b"}, 2, "--name"},
		{"name empty", []string{"mtls", "issue-client", "--name", ""}, 2, "--name"},
		{"name 65 chars", []string{"mtls", "issue-client", "--name", strings.Repeat("n", 65)}, 2, "--name"},
		{"name missing", []string{"mtls", "issue-client"}, 2, "name"},
		{"duration 0", []string{"mtls", "issue-client", "--name", "a", "--duration", "0s"}, 2, "--duration"},
		{"duration negative", []string{"mtls", "issue-client", "--name", "a", "--duration", "-1h"}, 2, "--duration"},
		{"duration beyond CA", []string{"mtls", "issue-client", "--name", "a", "--duration", "4000d"}, 2, "client_max_duration"},
		// Issue 10 item 8: inputs that used to be accepted silently.
		{"duration 1ns", []string{"mtls", "issue-client", "--name", "a", "--duration", "1ns", "--out-dir", c.outDir()}, 2, "--duration"},
		{"duration 59s", []string{"mtls", "issue-client", "--name", "a", "--duration", "59s", "--out-dir", c.outDir()}, 2, "--duration"},
		{"duration above the maximum", []string{"mtls", "issue-client", "--name", "a", "--duration", "91d", "--out-dir", c.outDir()}, 2, "--duration"},
		{"csr empty file", []string{"mtls", "issue-client", "--name", "a", "--csr", emptyFile, "--out-dir", c.outDir()}, 2, "--csr"},
		{"csr blank file", []string{"mtls", "issue-client", "--name", "a", "--csr", blankFile, "--out-dir", c.outDir()}, 2, "--csr"},
		{"csr empty name", []string{"mtls", "issue-client", "--name", "a", "--csr", "", "--out-dir", c.outDir()}, 2, "--csr"},
		{"p12 password file without p12", []string{"mtls", "issue-client", "--name", "a", "--p12-password-file", aFile, "--out-dir", c.outDir()}, 2, "--p12-password-file"},
		{"hosts 256.1.1.1", []string{"mtls", "init", "--force", "--hosts", "localhost,256.1.1.1"}, 2, "--hosts"},
		{"hosts 1.2.3", []string{"mtls", "init", "--force", "--hosts", "1.2.3"}, 2, "--hosts"},
		{"hosts hex IP", []string{"mtls", "init", "--force", "--hosts", "10.0.0.0x1"}, 2, "--hosts"},
		{"hosts 0.0.0.0", []string{"mtls", "init", "--force", "--hosts", "localhost,0.0.0.0"}, 2, "--hosts"},
		{"hosts ::", []string{"mtls", "init", "--force", "--hosts", "::"}, 2, "--hosts"},
		{"hosts [::]", []string{"mtls", "init", "--force", "--hosts", "[::]"}, 2, "--hosts"},
		{"hosts underscore", []string{"mtls", "init", "--force", "--hosts", "my_host"}, 2, "--hosts"},
		{"hosts leading hyphen", []string{"mtls", "init", "--force", "--hosts", "-gw.example.com"}, 2, "--hosts"},
		{"hosts wildcard TLD", []string{"mtls", "init", "--force", "--hosts", "*.com"}, 2, "--hosts"},
		{"reason bidi override", []string{"mtls", "revoke", "--serial", serial, "--reason", "ok\u202egnp.exe"}, 2, "--reason"},
		{"reason newline", []string{"mtls", "revoke", "--serial", serial, "--reason", "a\nb"}, 2, "--reason"},
		{"reason zero-width", []string{"mtls", "revoke", "--serial", serial, "--reason", "a\u200bb"}, 2, "--reason"},
		{"reason too long", []string{"mtls", "revoke", "--serial", serial, "--reason", strings.Repeat("r", 257)}, 2, "--reason"},
		{"duration garbage", []string{"mtls", "issue-client", "--name", "a", "--duration", "soon"}, 2, "--duration"},
		{"bad role", []string{"mtls", "issue-client", "--name", "a", "--role", "root"}, 2, "--role"},
		{"bad CSR", []string{"mtls", "issue-client", "--name", "a", "--csr", csrPath}, 2, "--csr"},
		{"missing CSR file", []string{"mtls", "issue-client", "--name", "a", "--csr", filepath.Join(c.work, "nope")}, 2, "--csr"},
		{"existing key", []string{"mtls", "issue-client", "--name", "existing", "--out-dir", c.outDir()}, 2, "--force"},
		{"malformed serial", []string{"mtls", "revoke", "--serial", "xyz"}, 2, "--serial"},
		// Issue 10 item 7: a destination that cannot be written is refused
		// before anything is issued.
		{"out-dir empty", []string{"mtls", "issue-client", "--name", "a", "--out-dir", ""}, 2, "--out-dir"},
		{"out-dir /proc/self", []string{"mtls", "issue-client", "--name", "a", "--out-dir", "/proc/self"}, 2, "--out-dir"},
		{"out-dir a file", []string{"mtls", "issue-client", "--name", "a", "--out-dir", aFile}, 2, "--out-dir"},
		{"out-dir below a file", []string{"mtls", "issue-client", "--name", "a", "--out-dir", filepath.Join(aFile, "sub")}, 2, "--out-dir"},
		{"out-dir bundle file is a directory", []string{"mtls", "issue-client", "--name", "dirname", "--out-dir", c.outDir(), "--force"}, 2, "--out-dir"},
		// Issue 10 item 6: never into the state directory.
		{"out-dir the state dir", []string{"mtls", "issue-client", "--name", "a", "--out-dir", c.stateDir, "--force"}, 2, "--out-dir"},
		{"out-dir the state dir, name mtls_ca", []string{"mtls", "issue-client", "--name", "mtls_ca", "--out-dir", c.stateDir, "--force"}, 2, "--name"},
		{"name mtls_server", []string{"mtls", "issue-client", "--name", "MTLS_server", "--out-dir", c.outDir()}, 2, "--name"},
		{"out-dir inside the state dir", []string{"mtls", "issue-client", "--name", "audit", "--out-dir", filepath.Join(c.stateDir, "audit"), "--force"}, 2, "--out-dir"},
		{"out-dir new dir inside the state dir", []string{"mtls", "issue-client", "--name", "a", "--out-dir", filepath.Join(c.stateDir, "new")}, 2, "--out-dir"},
		{"out-dir link to the state dir", []string{"mtls", "issue-client", "--name", "a", "--out-dir", stateLink, "--force"}, 2, "--out-dir"},
		{"out-dir through a link into the state dir", []string{"mtls", "issue-client", "--name", "a", "--out-dir", filepath.Join(stateLink, "x", "..", "archive")}, 2, "--out-dir"},
		{"unknown flag", []string{"mtls", "status", "--frobnicate"}, 2, "unknown flag"},
		{"unknown command", []string{"mtls", "frob"}, 2, ""},
		{"bad log level", []string{"--log-level", "loud", "mtls", "status"}, 2, "--log-level"},
	}
	if err := os.Mkdir(filepath.Join(c.outDir(), "dirname.crt"), 0o700); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, dir := range []string{c.stateDir, c.outDir()} {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				m[filepath.Join(dir, e.Name())] = string(data)
			}
		}
		cfg, _ := os.ReadFile(c.config)
		m["config"] = string(cfg)
		return m
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot()
			_, stderr, code := c.run(tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantMsg) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.wantMsg)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 && tt.wantMsg != "" {
				t.Errorf("error is %d lines, want one: %q", n+1, stderr)
			}
			after := snapshot()
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s changed", k)
				}
			}
			if len(after) != len(before) {
				t.Errorf("files appeared or vanished: %d -> %d", len(before), len(after))
			}
		})
	}
}

// TestRevokeUnknownSerialCLI (issue 10 item 5): with mtls_issued.json
// missing, `nefia mtls revoke` refused a live certificate ("unknown
// serial", exit 2). It revokes it now and warns on stderr; a malformed
// serial is still exit 2.
func TestRevokeUnknownSerialCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	var issued struct{ Serial string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "live", "--out-dir", c.outDir(), "--json")), &issued); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(c.stateDir, pki.IssuedFile)); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := c.run("mtls", "revoke", "--serial", issued.Serial, "--json")
	var rev struct {
		Serial   string
		Warnings []string
	}
	if err := json.Unmarshal([]byte(out), &rev); code != 0 || err != nil || rev.Serial != issued.Serial || len(rev.Warnings) != 1 {
		t.Fatalf("revoke: exit %d, stdout %q (%v), stderr %q", code, out, err, stderr)
	}
	if !strings.Contains(stderr, "warning: ") || !strings.Contains(stderr, "not in the inventory") {
		t.Errorf("stderr %q has no warning about the unknown serial", stderr)
	}
	// The store and its log (issue 16) hold it.
	revs, err := pki.NewStore(c.stateDir).Revocations()
	if err != nil || len(revs) != 1 || revs[0].Serial != issued.Serial {
		t.Errorf("store does not hold %s: %+v, %v", issued.Serial, revs, err)
	}
	if _, stderr, code := c.run("mtls", "revoke", "--serial", "not-hex"); code != 2 || !strings.Contains(stderr, "--serial") {
		t.Errorf("malformed serial: exit %d, %q; want 2 naming --serial", code, stderr)
	}
}

// TestRevokeAfterLosingTheStoreCLI (issue 10 item 4): after a revocation,
// a deleted mtls_revoked.json made the next revoke write a store holding
// only the new serial. It is refused now, naming the file, and the store
// stays missing.
func TestRevokeAfterLosingTheStoreCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	serials := make([]string, 2)
	for i := range serials {
		var v struct{ Serial string }
		_ = json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", fmt.Sprint("c", i), "--out-dir", c.outDir(), "--json")), &v)
		serials[i] = v.Serial
	}
	c.mustRun("mtls", "revoke", "--serial", serials[0])
	store := filepath.Join(c.stateDir, pki.RevokedFile)
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := c.run("mtls", "revoke", "--serial", serials[1])
	if code != 3 || !strings.Contains(stderr, pki.RevokedFile) || !strings.Contains(stderr, "restore it") {
		t.Errorf("revoke with the store lost: exit %d, %q; want 3 naming %s", code, stderr, pki.RevokedFile)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("the refused revoke wrote %s (%v)", pki.RevokedFile, err)
	}
}

// TestIssueClientIntoStateDirKeepsCAKey (issue 10 item 6): `issue-client
// --name mtls_ca --out-dir <state dir> --force` overwrote the CA key.
func TestIssueClientIntoStateDirKeepsCAKey(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	keyPath := filepath.Join(c.stateDir, pki.CAKeyFile)
	before, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mtls_ca", "mtls_server", "agent"} {
		_, stderr, code := c.run("mtls", "issue-client", "--name", name, "--out-dir", c.stateDir, "--force")
		if code != 2 {
			t.Errorf("--name %s --out-dir <state dir>: exit %d (%s), want 2", name, code, stderr)
		}
	}
	if after, _ := os.ReadFile(keyPath); !bytes.Equal(before, after) {
		t.Fatal("the CA key changed")
	}
	// The clients subdirectory, where the tool writes, stays usable.
	c.mustRun("mtls", "issue-client", "--name", "agent", "--out-dir", filepath.Join(c.stateDir, pki.ClientsDir))
}

// TestIssueClientWriteFailureRevokes (issue 10 item 7): a write failure
// after issuance left an active certificate whose key nobody had. It is
// revoked now, and the audit trail says so.
func TestIssueClientWriteFailureRevokes(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	c.writeBundle = func(dir string, iss *pki.Issued, force bool) (pki.BundlePaths, error) {
		return pki.BundlePaths{}, errors.New("disk on fire")
	}
	_, stderr, code := c.run("mtls", "issue-client", "--name", "doomed", "--out-dir", c.outDir())
	if code == 0 || !strings.Contains(stderr, "disk on fire") || !strings.Contains(stderr, "revoked") {
		t.Fatalf("exit %d, stderr %q; want a failure saying the certificate was revoked", code, stderr)
	}
	c.writeBundle = nil
	var list []pki.ListedCert
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "doomed" || list[0].State != pki.StateRevoked {
		t.Fatalf("list = %+v, want doomed revoked", list)
	}
	trail, err := os.ReadFile(filepath.Join(c.stateDir, "audit", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(trail)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{`"mtls.issue_client"`, list[0].Serial, `"revoked":true`, `"outcome":"error"`} {
		if !strings.Contains(last, want) {
			t.Errorf("last audit record lacks %s: %s", want, last)
		}
	}
}

// TestIssueClientMaxDurationCLI (issue 10 item 8): the CLI's upper bound
// is mcp.mtls.client_max_duration, as the tool's is.
func TestIssueClientMaxDurationCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	if err := config.Set(c.config, "mcp.mtls.client_max_duration", "168h"); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := c.run("mtls", "issue-client", "--name", "a", "--duration", "8d", "--out-dir", c.outDir()); code != 2 ||
		!strings.Contains(stderr, "--duration") || !strings.Contains(stderr, "maximum of 7d") {
		t.Errorf("8d over a 7d maximum: exit %d, %q", code, stderr)
	}
	c.mustRun("mtls", "issue-client", "--name", "a", "--duration", "7d", "--out-dir", c.outDir())
}

func TestCorruptStateAndConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		file     func(c *cli) string
		args     []string // SERIAL is replaced by an issued certificate's serial
		wantCode int
	}{
		{"corrupt revoked store", func(c *cli) string { return filepath.Join(c.stateDir, pki.RevokedFile) }, []string{"mtls", "revoke", "--serial", "SERIAL"}, 3},
		{"corrupt inventory", func(c *cli) string { return filepath.Join(c.stateDir, pki.IssuedFile) }, []string{"mtls", "list"}, 3},
		{"corrupt inventory on issue", func(c *cli) string { return filepath.Join(c.stateDir, pki.IssuedFile) }, []string{"mtls", "issue-client", "--name", "b", "--out-dir", "OUT"}, 3},
		{"corrupt config", func(c *cli) string { return c.config }, []string{"mtls", "init", "--force"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			c.mustRun("mtls", "init")
			var issued struct{ Serial string }
			_ = json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", "a", "--out-dir", c.outDir(), "--json")), &issued)
			for i, a := range tt.args {
				tt.args[i] = strings.NewReplacer("SERIAL", issued.Serial, "OUT", c.outDir()).Replace(a)
			}
			path := tt.file(c)
			garbage := "{{{ not: [valid"
			if err := os.WriteFile(path, []byte(garbage), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := c.run(tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, filepath.Base(path)) {
				t.Errorf("exit %d (want %d), stderr %q should name %s", code, tt.wantCode, stderr, filepath.Base(path))
			}
			if data, _ := os.ReadFile(path); string(data) != garbage {
				t.Error("corrupt file was rewritten")
			}
			var st struct{ Problems []string }
			out, _, _ := c.run("mtls", "status", "--json")
			if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Problems) == 0 {
				t.Errorf("status reports no problem (%v): %s", err, out)
			}
		})
	}
}

func TestStatusWithoutInit(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	out := c.mustRun("mtls", "status")
	if !strings.Contains(out, "mTLS enabled: false") || !strings.Contains(out, "nefia mtls init") {
		t.Errorf("status before init:\n%s", out)
	}
	if _, stderr, code := c.run("mtls", "issue-client", "--name", "a", "--out-dir", c.outDir()); code != 2 || !strings.Contains(stderr, "mtls init") {
		t.Errorf("issue before init: exit %d, %s", code, stderr)
	}
}

func TestIssueClientP12(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	pwFile := filepath.Join(c.work, "p12.pass")
	os.WriteFile(pwFile, []byte("correct horse battery\n"), 0o600)
	short := filepath.Join(c.work, "short.pass")
	os.WriteFile(short, []byte("abc\n"), 0o600)

	out := c.mustRun("mtls", "issue-client", "--name", "desk", "--out-dir", c.outDir(), "--p12", "--p12-password-file", pwFile)
	p12 := filepath.Join(c.outDir(), "desk.p12")
	if !strings.Contains(out, p12) {
		t.Errorf("output does not name the bundle:\n%s", out)
	}
	if fi, err := os.Stat(p12); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("desk.p12: %v %v, want mode 0600", fi, err)
	}
	data, _ := os.ReadFile(p12)
	key, cert, cas, err := pkcs12.DecodeChain(data, "correct horse battery")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if cert.Subject.CommonName != "desk" || len(cas) != 1 || !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()) {
		t.Errorf("bundle holds cert %q, %d CAs, matching key: wrong", cert.Subject.CommonName, len(cas))
	}
	if _, _, _, err := pkcs12.DecodeChain(data, "wrong password"); err == nil {
		t.Error("bundle opens with a wrong password")
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		if out, err := exec.Command("openssl", "pkcs12", "-in", p12, "-passin", "file:"+pwFile, "-noout").CombinedOutput(); err != nil {
			t.Errorf("openssl cannot read the bundle: %v\n%s", err, out)
		}
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no password file", []string{"--p12"}, "--p12-password-file"},
		{"short password", []string{"--p12", "--p12-password-file", short}, "at least 8"},
		{"with a CSR", []string{"--p12", "--p12-password-file", pwFile, "--csr", pwFile}, "--csr"},
		{"existing p12 only", []string{"--name", "solo", "--p12", "--p12-password-file", pwFile}, "solo.p12"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"mtls", "issue-client", "--name", "other", "--out-dir", filepath.Join(c.work, "p12-"+strings.ReplaceAll(tt.name, " ", "-"))}, tt.args...)
			if tt.name == "existing p12 only" {
				// No solo.crt or solo.key: only the .p12 check can refuse.
				os.WriteFile(filepath.Join(c.outDir(), "solo.p12"), []byte("old"), 0o600)
				args = append([]string{"mtls", "issue-client", "--out-dir", c.outDir()}, tt.args...)
			}
			before := c.mustRun("mtls", "list", "--json")
			_, stderr, code := c.run(args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 mentioning %q", code, stderr, tt.want)
			}
			if after := c.mustRun("mtls", "list", "--json"); after != before {
				t.Error("a refused --p12 request issued a certificate")
			}
		})
	}
}
