package tools_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

func TestIssueClient(t *testing.T) {
	e := newEnv(t)
	r := e.call(tools.NameIssueClient, map[string]any{"name": "claude-agent"})
	var out tools.IssueOutput
	e.wantOK(tools.NameIssueClient, r, &out)

	if out.Name != "claude-agent" || out.Role != pki.RoleAgent {
		t.Errorf("name/role = %q/%q, want claude-agent/agent (the default role)", out.Name, out.Role)
	}
	if want := pkitest.Epoch.Add(24 * time.Hour); !out.NotAfter.Equal(want) {
		t.Errorf("not_after = %s, want %s (default duration 24h)", out.NotAfter, want)
	}
	cert := parseCert(t, out.CertificatePEM)
	if cert.Subject.CommonName != "claude-agent" || !slices.Equal(cert.Subject.OrganizationalUnit, []string{"agent"}) {
		t.Errorf("subject = %s", cert.Subject)
	}
	if pki.FormatSerial(cert.SerialNumber) != out.Serial || pki.Fingerprint(cert) != out.Fingerprint {
		t.Error("serial or fingerprint does not describe certificate_pem")
	}
	if !slices.Equal(e.inventory(), []string{out.Serial}) {
		t.Errorf("inventory = %v, want [%s]", e.inventory(), out.Serial)
	}
	caPEM, err := e.store.CACertPEM()
	if err != nil {
		t.Fatal(err)
	}
	if out.CAPEM != string(caPEM) {
		t.Error("ca_pem is not the CA certificate")
	}

	want := pki.BundlePathsFor(e.clientsDir, "claude-agent")
	if out.Files != want {
		t.Errorf("files = %+v, want %+v (default out_dir is the clients directory)", out.Files, want)
	}
	if got := readFile(t, out.Files.Cert); got != out.CertificatePEM {
		t.Error("cert file differs from certificate_pem")
	}
	if got := readFile(t, out.Files.CA); got != out.CAPEM {
		t.Error("ca file differs from ca_pem")
	}
	key := readFile(t, out.Files.Key)
	if !strings.Contains(key, "PRIVATE KEY") {
		t.Error("key file holds no private key")
	}
	if fi, err := os.Stat(out.Files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// The key is on disk, and nowhere in what the client received (call
	// also greps every result for PRIVATE KEY).
	for _, line := range strings.Split(key, "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(r.raw, line) {
			t.Fatal("result contains the private key's bytes")
		}
	}
	if !strings.Contains(r.text(), out.Serial) || !strings.Contains(r.text(), out.Files.Key) {
		t.Errorf("text does not name the serial and key file: %s", r.text())
	}
}

func TestIssueClientCSR(t *testing.T) {
	e := newEnv(t)
	csr, key := pkitest.CSR(t, pkix.Name{CommonName: "ignored", OrganizationalUnit: []string{"operator"}}, "evil.example")
	r := e.call(tools.NameIssueClient, map[string]any{"name": "ci-bot", "csr_pem": string(csr), "duration": "30d", "out_dir": "ci"})
	var out tools.IssueOutput
	e.wantOK(tools.NameIssueClient, r, &out)

	cert := parseCert(t, out.CertificatePEM)
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate does not certify the CSR's key")
	}
	if cert.Subject.CommonName != "ci-bot" || !slices.Equal(cert.Subject.OrganizationalUnit, []string{"agent"}) || len(cert.DNSNames) != 0 {
		t.Errorf("CSR contents leaked into the certificate: %s %v", cert.Subject, cert.DNSNames)
	}
	if want := pkitest.Epoch.Add(30 * 24 * time.Hour); !out.NotAfter.Equal(want) {
		t.Errorf("not_after = %s, want %s", out.NotAfter, want)
	}
	if out.Files.Key != "" {
		t.Errorf("files.key = %q for a CSR", out.Files.Key)
	}
	if _, err := os.Stat(filepath.Join(e.clientsDir, "ci", "ci-bot.key")); !os.IsNotExist(err) {
		t.Error("a key file was written for a CSR")
	}
	if out.Files.Cert != filepath.Join(e.clientsDir, "ci", "ci-bot.crt") {
		t.Errorf("files.cert = %q", out.Files.Cert)
	}
	if !strings.Contains(r.text(), "key stays with you") {
		t.Errorf("text does not say no key was written: %s", r.text())
	}
}

// TestIssueClientAuthority: nobody issues more authority than their own,
// and a request without an identity has none.
func TestIssueClientAuthority(t *testing.T) {
	tests := []struct {
		name   string
		ctx    func(t *testing.T) context.Context
		role   string // requested; "" = default
		wantOK bool
		want   []string
	}{
		{"operator issues operator", func(t *testing.T) context.Context { return as(t, operator) }, "operator", true, nil},
		{"operator issues agent", func(t *testing.T) context.Context { return as(t, operator) }, "agent", true, nil},
		{"agent issues agent", func(t *testing.T) context.Context { return as(t, agent) }, "agent", true, nil},
		{"agent issues default role", func(t *testing.T) context.Context { return as(t, agent) }, "", true, nil},
		{"agent asks for operator", func(t *testing.T) context.Context { return as(t, agent) }, "operator", false,
			[]string{"permission denied", `role "agent" cannot issue certificates with role "operator"`}},
		{"no identity", func(t *testing.T) context.Context { return t.Context() }, "agent", false,
			[]string{"permission denied", "authenticated caller"}},
		{"identity without a valid role", func(t *testing.T) context.Context {
			return identity.WithAgent(t.Context(), identity.Agent{Name: "x", Role: "admin"})
		}, "agent", false, []string{"permission denied", "no valid role"}},
		{"identity with empty role", func(t *testing.T) context.Context {
			return identity.WithAgent(t.Context(), identity.Agent{Name: "x"})
		}, "agent", false, []string{"permission denied", "no valid role"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			args := map[string]any{"name": "client"}
			if tt.role != "" {
				args["role"] = tt.role
			}
			r := e.callCtx(tt.ctx(t), tools.NameIssueClient, args)
			if !tt.wantOK {
				e.wantRefused(tools.NameIssueClient, r, tt.want...)
				if len(e.inventory()) != 0 {
					t.Error("a refused request issued a certificate")
				}
				return
			}
			var out tools.IssueOutput
			e.wantOK(tools.NameIssueClient, r, &out)
			want := tt.role
			if want == "" {
				want = "agent"
			}
			if string(out.Role) != want {
				t.Errorf("role = %q, want %q", out.Role, want)
			}
			if ou := parseCert(t, out.CertificatePEM).Subject.OrganizationalUnit; !slices.Equal(ou, []string{want}) {
				t.Errorf("certificate OU = %v, want [%s]", ou, want)
			}
		})
	}
}

func TestIssueClientBadInput(t *testing.T) {
	outside := t.TempDir() // a directory the tools must never write into
	tests := []struct {
		name    string
		args    map[string]any
		argsFor func(e *env) map[string]any // instead of args, for arguments that depend on the env
		prepare func(t *testing.T, e *env)  // runs before the call
		want    []string
	}{
		{name: "missing name", args: map[string]any{}, want: []string{`"name" is required`}},
		{name: "name is a number", args: map[string]any{"name": 7}, want: []string{`"name" must be a string`}},
		{name: "name with a slash", args: map[string]any{"name": "../evil"}, want: []string{`"name"`, "must match"}},
		{name: "name reserved for the CA file", args: map[string]any{"name": "ca"}, want: []string{`"name"`, "reserved"}},
		{name: "name too long", args: map[string]any{"name": strings.Repeat("a", 65)}, want: []string{`"name"`}},
		{name: "unknown role", args: map[string]any{"name": "c", "role": "root"}, want: []string{`"role"`, "root"}},
		{name: "role ill-typed", args: map[string]any{"name": "c", "role": true}, want: []string{`"role" must be a string`}},
		{name: "bad duration", args: map[string]any{"name": "c", "duration": "forever"}, want: []string{`"duration"`, "24h", "30d"}},
		{name: "negative duration", args: map[string]any{"name": "c", "duration": "-1h"}, want: []string{`"duration"`, "positive"}},
		{name: "duration past the maximum", args: map[string]any{"name": "c", "duration": "4000d"}, want: []string{`"duration"`, "client_max_duration"}},
		// Issue 10 item 8: the bounds the CLI applies too.
		{name: "duration 1ns", args: map[string]any{"name": "c", "duration": "1ns"}, want: []string{`"duration"`, "minimum"}},
		{name: "duration 59s", args: map[string]any{"name": "c", "duration": "59s"}, want: []string{`"duration"`, "minimum"}},
		{name: "duration 91d", args: map[string]any{"name": "c", "duration": "91d"}, want: []string{`"duration"`, "maximum of 90d"}},
		{name: "duration as number", args: map[string]any{"name": "c", "duration": 24}, want: []string{`"duration" must be a string`}},
		{name: "csr not PEM", args: map[string]any{"name": "c", "csr_pem": "hello"}, want: []string{`"csr_pem"`, "no PEM block"}},
		{name: "csr is a certificate", argsFor: func(e *env) map[string]any {
			return map[string]any{"name": "c", "csr_pem": readFile(t, e.store.Path(pki.CACertFile))}
		}, want: []string{`"csr_pem"`, "want CERTIFICATE REQUEST"}},
		{name: "csr garbage DER", args: map[string]any{"name": "c", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"},
			want: []string{`"csr_pem"`, "invalid CSR"}},
		{name: "csr too large", args: map[string]any{"name": "c", "csr_pem": strings.Repeat("A", pki.MaxCSRBytes+1)}, want: []string{`"csr_pem"`, "at most"}},
		{name: "force ill-typed", args: map[string]any{"name": "c", "force": "true"}, want: []string{`"force" must be a boolean`}},
		{name: "unknown argument", args: map[string]any{"name": "c", "key_pem": "x"}, want: []string{`unknown argument "key_pem"`}},
		{name: "out_dir dot-dot", args: map[string]any{"name": "c", "out_dir": ".."}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir climbs out", args: map[string]any{"name": "c", "out_dir": "team/../../../escape"}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir absolute elsewhere", args: map[string]any{"name": "c", "out_dir": outside}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir root", args: map[string]any{"name": "c", "out_dir": "/"}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir state dir", argsFor: func(e *env) map[string]any {
			return map[string]any{"name": "c", "out_dir": e.store.Dir()}
		}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir symlink out", args: map[string]any{"name": "c", "out_dir": "link"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, outside, filepath.Join(e.clientsDir, "link"))
		}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir below symlink out", args: map[string]any{"name": "c", "out_dir": "link/new/deeper"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, outside, filepath.Join(e.clientsDir, "link"))
		}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir symlink chain out", args: map[string]any{"name": "c", "out_dir": "a"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, "b", filepath.Join(e.clientsDir, "a"))
			symlink(t, outside, filepath.Join(e.clientsDir, "b"))
		}, want: []string{`"out_dir"`, "outside"}},
		{name: "out_dir dangling symlink", args: map[string]any{"name": "c", "out_dir": "dangling/sub"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, filepath.Join(outside, "not-yet"), filepath.Join(e.clientsDir, "dangling"))
		}, want: []string{`"out_dir"`, "cannot be used"}},
		{name: "out_dir is a file", args: map[string]any{"name": "c", "out_dir": "file"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			writeFile(t, filepath.Join(e.clientsDir, "file"), "x")
		}, want: []string{`"out_dir"`, "not a directory"}},
		{name: "bundle exists", args: map[string]any{"name": "c"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			writeFile(t, filepath.Join(e.clientsDir, "c.crt"), "old")
		}, want: []string{"already exists", "force=true"}},
		{name: "bundle file is a symlink, even with force", args: map[string]any{"name": "c", "force": true}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, filepath.Join(outside, "c.key"), filepath.Join(e.clientsDir, "c.key"))
		}, want: []string{"c.key", "not a regular file"}},
		{name: "ca.crt is a symlink", args: map[string]any{"name": "c"}, prepare: func(t *testing.T, e *env) {
			mkdir(t, e.clientsDir)
			symlink(t, filepath.Join(outside, "ca.crt"), filepath.Join(e.clientsDir, "ca.crt"))
		}, want: []string{"ca.crt", "not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			args := tt.args
			if tt.argsFor != nil {
				args = tt.argsFor(e)
			}
			if tt.prepare != nil {
				tt.prepare(t, e)
			}
			r := e.call(tools.NameIssueClient, args)
			e.wantRefused(tools.NameIssueClient, r, tt.want...)
			if inv := e.inventory(); len(inv) != 0 {
				t.Errorf("a refused request issued %v", inv)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("something was written outside the clients directory: %v", entries)
			}
		})
	}
}

// TestIssueClientOutDir covers the out_dir forms that are accepted.
func TestIssueClientOutDir(t *testing.T) {
	clients := t.TempDir()
	tests := []struct {
		name    string
		outDir  string
		prepare func(t *testing.T)
		wantDir string
	}{
		{"relative", "team-a", nil, filepath.Join(clients, "team-a")},
		{"nested and unclean", "x/./y/../z", nil, filepath.Join(clients, "x", "z")},
		{"absolute inside", filepath.Join(clients, "abs"), nil, filepath.Join(clients, "abs")},
		{"dot", ".", nil, clients},
		{"symlink inside", "alias", func(t *testing.T) {
			mkdir(t, filepath.Join(clients, "real"))
			symlink(t, "real", filepath.Join(clients, "alias"))
		}, filepath.Join(clients, "real")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withClientsDir(clients))
			if tt.prepare != nil {
				tt.prepare(t)
			}
			name := strings.ReplaceAll(tt.name, " ", "-")
			r := e.call(tools.NameIssueClient, map[string]any{"name": name, "out_dir": tt.outDir})
			var out tools.IssueOutput
			e.wantOK(tools.NameIssueClient, r, &out)
			if want := filepath.Join(tt.wantDir, name+".crt"); out.Files.Cert != want {
				t.Errorf("files.cert = %q, want %q", out.Files.Cert, want)
			}
			if _, err := os.Stat(out.Files.Key); err != nil {
				t.Errorf("key not written: %v", err)
			}
		})
	}
}

func TestIssueClientForce(t *testing.T) {
	e := newEnv(t)
	first := e.call(tools.NameIssueClient, map[string]any{"name": "c"})
	e.wantOK(tools.NameIssueClient, first, nil)
	again := e.call(tools.NameIssueClient, map[string]any{"name": "c"})
	e.wantRefused(tools.NameIssueClient, again, "already exists")
	forced := e.call(tools.NameIssueClient, map[string]any{"name": "c", "force": true})
	var out tools.IssueOutput
	e.wantOK(tools.NameIssueClient, forced, &out)
	if got := readFile(t, out.Files.Cert); got != out.CertificatePEM {
		t.Error("force did not replace the certificate file")
	}
	if len(e.inventory()) != 2 {
		t.Errorf("inventory = %v, want two certificates", e.inventory())
	}
}

// TestIssueClientStateDir: even when the clients directory is configured to
// be the state directory, no bundle lands beside the CA key.
func TestIssueClientStateDir(t *testing.T) {
	e := newEnv(t, clientsInStateDir())
	caBefore := readFile(t, e.store.Path(pki.CACertFile))
	r := e.call(tools.NameIssueClient, map[string]any{"name": "c", "force": true})
	e.wantRefused(tools.NameIssueClient, r, "state directory")
	r = e.call(tools.NameIssueClient, map[string]any{"name": "mtls_ca", "force": true})
	e.wantRefused(tools.NameIssueClient, r, "reserved", "mtls_ca")
	if len(e.inventory()) != 0 {
		t.Error("a refused request issued a certificate")
	}
	if readFile(t, e.store.Path(pki.CACertFile)) != caBefore {
		t.Error("the CA certificate was overwritten")
	}
}

func TestIssueClientNoCA(t *testing.T) {
	e := newEnv(t, withoutCA())
	r := e.call(tools.NameIssueClient, map[string]any{"name": "c"})
	e.wantRefused(tools.NameIssueClient, r, "no CA", tools.NameInit)
}

// TestIssueClientCorruptState: an infrastructure failure is a tool error
// naming the file by its base name, never a protocol error or a host path.
func TestIssueClientCorruptState(t *testing.T) {
	e := newEnv(t)
	writeFile(t, e.store.Path(pki.IssuedFile), "{not json")
	r := e.call(tools.NameIssueClient, map[string]any{"name": "c"})
	e.wantRefused(tools.NameIssueClient, r, "failed", pki.IssuedFile, "repaired")
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertificatePEM([]byte(p))
	if err != nil {
		t.Fatalf("certificate_pem: %v", err)
	}
	return c
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestIssueClientWriteFailure: a destination that cannot be written is
// refused before anything is issued (issue 10 item 7), without a host path.
func TestIssueClientWriteFailure(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	e := newEnv(t)
	mkdir(t, e.clientsDir)
	if err := os.Chmod(e.clientsDir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(e.clientsDir, 0o700) })
	r := e.call(tools.NameIssueClient, map[string]any{"name": "c"})
	e.wantRefused(tools.NameIssueClient, r, `"out_dir"`, "not writable")
	if inv := e.inventory(); len(inv) != 0 {
		t.Fatalf("inventory = %v, want nothing issued", inv)
	}
}

// TestIssueClientMaxDurationFromConfig (issue 10 item 8): the upper bound
// is mcp.mtls.client_max_duration, read when the tool is called.
func TestIssueClientMaxDurationFromConfig(t *testing.T) {
	e := newEnv(t)
	mkdir(t, filepath.Dir(e.configPath))
	writeFile(t, e.configPath, "version: 1\nmcp:\n  mtls:\n    client_max_duration: 168h\n")
	e.wantRefused(tools.NameIssueClient, e.call(tools.NameIssueClient, map[string]any{"name": "c", "duration": "8d"}), `"duration"`, "maximum of 7d")
	if len(e.inventory()) != 0 {
		t.Fatal("a refused request issued a certificate")
	}
	var out tools.IssueOutput
	e.wantOK(tools.NameIssueClient, e.call(tools.NameIssueClient, map[string]any{"name": "c", "duration": "7d"}), &out)
}
