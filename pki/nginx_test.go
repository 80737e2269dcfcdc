package pki_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// needTool returns the path of an external program a test checks nefia
// against. Without it the test is skipped on a workstation, but fails
// under CI (CI set), which installs it (.ci/run).
func needTool(t *testing.T, name string, extra ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range extra {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run must install it", name)
	}
	t.Skipf("%s not installed: skipping (CI installs it)", name)
	return ""
}

// opensslVerify runs 'openssl verify -crl_check' on a certificate with the
// store's CA and CRL, and returns its combined output and whether it said
// OK.
func opensslVerify(t *testing.T, openssl string, s *pki.Store, certPEM []byte) (string, bool) {
	t.Helper()
	cert := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "verify", "-crl_check", "-CAfile", s.Path(pki.CACertFile), "-CRLfile", s.Path(pki.CRLFile), cert).CombinedOutput()
	return string(out), err == nil && strings.Contains(string(out), ": OK")
}

// TestOpenSSLChecksCRL: openssl, which no one here wrote, accepts nefia's
// CRL as the CA's and agrees with the store on which certificates are
// revoked (issue 13 item 6).
func TestOpenSSLChecksCRL(t *testing.T) {
	t.Parallel()
	openssl := needTool(t, "openssl")
	s := pkitest.NewStore(t)
	active := pkitest.Issue(t, s, "active", pki.RoleAgent, time.Hour)
	revoked := pkitest.Issue(t, s, "revoked", pki.RoleOperator, time.Hour)
	if _, err := s.Revoke(revoked.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	if out, ok := opensslVerify(t, openssl, s, active.CertPEM); !ok {
		t.Errorf("openssl verify -crl_check refused the active certificate:\n%s", out)
	}
	out, ok := opensslVerify(t, openssl, s, revoked.CertPEM)
	if ok || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify -crl_check on the revoked certificate: want 'certificate revoked', got:\n%s", out)
	}
	text, err := exec.Command(openssl, "crl", "-in", s.Path(pki.CRLFile), "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, text)
	}
	for _, want := range []string{"Version 2", "X509v3 CRL Number", "X509v3 Authority Key Identifier", "Next Update", strings.ToUpper(revoked.Serial)} {
		if !strings.Contains(strings.ToUpper(string(text)), strings.ToUpper(want)) {
			t.Errorf("openssl crl -text lacks %q:\n%s", want, text)
		}
	}
}

// nginxFront is a real nginx terminating mutual TLS with nefia's server
// certificate, CA and CRL, straight from the state directory, the way an
// operator would configure it.
type nginxFront struct {
	addr, errorLog string
	cmd            *exec.Cmd
}

func startNginx(t *testing.T, s *pki.Store) *nginxFront {
	t.Helper()
	bin := needTool(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	n := &nginxFront{addr: addr, errorLog: filepath.Join(dir, "error.log")}
	// A master process, as in production: nginx's single-process mode
	// (master_process off) serves plain HTTP on an ssl listener after a
	// reload (nginx 1.22). Under root the worker would switch to an
	// unprivileged user that cannot read the 0700 state directory.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
%[7]s
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s ssl;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		ssl_protocols TLSv1.3;
		ssl_verify_client on;
		ssl_client_certificate %[5]s;
		ssl_crl %[6]s;
		location / { return 200 "ok $ssl_client_s_dn"; }
	}
}
`, dir, addr, s.Path(pki.ServerCertFile), s.Path(pki.ServerKeyFile), s.Path(pki.CACertFile), s.Path(pki.CRLFile), user)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n.cmd = exec.Command(bin, "-p", dir, "-e", n.errorLog, "-c", confPath)
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when nginx has exited (waitErr says how): the
	// start loop and Cleanup may both wait for it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = n.cmd.Wait(); close(exited) }()
	// SIGTERM is nginx's fast shutdown: the master stops its worker
	// before it exits, so no worker outlives the test.
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(n.errorLog)
			t.Fatalf("nginx exited: %v\n%s\n%s", waitErr, out.String(), log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10s", addr)
		}
	}
}

// get makes one request through nginx with the client certificate iss.
func (n *nginxFront) get(t *testing.T, s *pki.Store, iss *pki.Issued) (int, string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pkitest.CAPool(t, s),
		Certificates: []tls.Certificate{pkitest.KeyPair(t, iss)},
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + n.addr + "/")
	if err != nil {
		log, _ := os.ReadFile(n.errorLog)
		t.Fatalf("GET through nginx as %s: %v\n%s", iss.Name, err, log)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// reload sends SIGHUP and waits until nginx re-read its configuration
// (nginx reads ssl_crl only at start and on reload) and the old worker,
// which still holds the old CRL, has exited: the master logs
// "reconfiguring", starts a new worker, and reports the old one's exit.
func (n *nginxFront) reload(t *testing.T) {
	t.Helper()
	readLog := func() string {
		log, _ := os.ReadFile(n.errorLog)
		return string(log)
	}
	mark := len(readLog())
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := readLog()[mark:]
		if i := strings.Index(after, "reconfiguring"); i >= 0 && strings.Contains(after[i:], "start worker process") && strings.Contains(after[i:], "exited with code") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not finish reloading within 10s of SIGHUP:\n%s", after)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// TestNginxEnforcesNefiaCRL fronts a backend with a real nginx
// (ssl_verify_client on; ssl_crl mtls_ca.crl) and shows that nefia's
// revocations reach it (issue 13 item 6): an active certificate is
// admitted, one revoked before nginx started is refused, and one revoked
// while it runs is refused once nginx reloads the CRL. openssl verify
// -crl_check agrees on each.
func TestNginxEnforcesNefiaCRL(t *testing.T) {
	t.Parallel()
	openssl := needTool(t, "openssl")
	s := pkitest.NewStore(t)
	active := pkitest.Issue(t, s, "active", pki.RoleAgent, time.Hour)
	early := pkitest.Issue(t, s, "revoked-early", pki.RoleOperator, time.Hour)
	late := pkitest.Issue(t, s, "revoked-late", pki.RoleAgent, time.Hour)
	if _, err := s.Revoke(early.Serial, "before nginx started"); err != nil {
		t.Fatal(err)
	}
	n := startNginx(t, s)

	admitted := func(iss *pki.Issued) {
		t.Helper()
		code, body := n.get(t, s, iss)
		if code != http.StatusOK || !strings.Contains(body, "CN="+iss.Name) {
			t.Errorf("%s: nginx answered %d %q, want 200 naming CN=%s", iss.Name, code, body, iss.Name)
		}
		if out, ok := opensslVerify(t, openssl, s, iss.CertPEM); !ok {
			t.Errorf("%s: openssl verify -crl_check disagrees, refuses it:\n%s", iss.Name, out)
		}
	}
	// nginx completes the TLS 1.3 handshake and refuses at the HTTP layer:
	// 400 "The SSL certificate error", with the reason in its error log.
	refused := func(iss *pki.Issued) {
		t.Helper()
		code, body := n.get(t, s, iss)
		if code != http.StatusBadRequest || !strings.Contains(body, "The SSL certificate error") {
			t.Errorf("%s: nginx answered %d %q, want 400 The SSL certificate error", iss.Name, code, body)
		}
		if out, ok := opensslVerify(t, openssl, s, iss.CertPEM); ok || !strings.Contains(out, "certificate revoked") {
			t.Errorf("%s: openssl verify -crl_check disagrees, want 'certificate revoked':\n%s", iss.Name, out)
		}
	}

	admitted(active)
	admitted(late)
	refused(early)
	if log, _ := os.ReadFile(n.errorLog); !strings.Contains(string(log), "certificate revoked") {
		t.Errorf("nginx's error log does not give 'certificate revoked' as the reason:\n%s", log)
	}

	// Revoked while nginx runs: the CRL file changes at once, nginx
	// enforces it from its next reload.
	if _, err := s.Revoke(late.Serial, "while nginx ran"); err != nil {
		t.Fatal(err)
	}
	if code, _ := n.get(t, s, late); code != http.StatusOK {
		t.Errorf("before the reload nginx answered %d for %s; it was expected to still use the CRL it loaded at start", code, late.Name)
	}
	n.reload(t)
	refused(late)
	refused(early)
	admitted(active)
}
