package upstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// TestHTTPSUpstreamWithMTLSAndHeaders: an https upstream that requires a
// client certificate is reached with ca_file, cert_file and key_file, and
// gets the headers_file's headers on every request; the file's values
// never appear in the gateway's answers.
func TestHTTPSUpstreamWithMTLSAndHeaders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := writeClientCert(t, dir, "nefia-gw")

	var mu sync.Mutex
	var auths, peers []string
	srv := newTestServer("", nil)
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		if len(r.TLS.PeerCertificates) > 0 {
			peers = append(peers, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	ts.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	caFile := writeServerCA(t, ts)
	headersFile := filepath.Join(dir, "up.headers")
	if err := os.WriteFile(headersFile, []byte("# token for the upstream\nAuthorization: Bearer s3cret-token\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	f := startGateway(t, func(string) config.Upstream {
		return config.Upstream{Name: "up", URL: ts.URL + "/mcp", HeadersFile: headersFile, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
	})
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	if got := servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "tls"}); got["text"] != "tls" || got["transport"] != "http" {
		t.Fatalf("echo over https = %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auths) == 0 {
		t.Fatal("upstream saw no requests")
	}
	for i := range auths {
		if auths[i] != "Bearer s3cret-token" || peers[i] != "nefia-gw" {
			t.Errorf("request %d: Authorization %q, client certificate %q", i, auths[i], peers[i])
		}
	}
	if st := f.m.Status()[0]; strings.Contains(st.LastError, "s3cret") {
		t.Errorf("status leaks the header value: %+v", st)
	}
}

// TestHTTPSUpstreamRefusals: a wrong CA or a malformed headers file keeps
// the upstream down with a reason, without leaking the file's contents.
func TestHTTPSUpstreamRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(ts.Close)
	badHeaders := filepath.Join(dir, "bad.headers")
	if err := os.WriteFile(badHeaders, []byte("Authorization Bearer s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spoof := filepath.Join(dir, "spoof.headers")
	if err := os.WriteFile(spoof, []byte("nefia-agent-name: root\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		u    config.Upstream
		want string
	}{
		{name: "system roots do not trust the test CA", u: config.Upstream{Name: "up", URL: ts.URL + "/mcp"}, want: "certificate"},
		{name: "malformed headers file", u: config.Upstream{Name: "up", URL: ts.URL + "/mcp", HeadersFile: badHeaders}, want: `bad.headers:1: want "Name: value"`},
		{name: "headers file sets a Nefia header", u: config.Upstream{Name: "up", URL: ts.URL + "/mcp", HeadersFile: spoof}, want: "Nefia-Agent-Name is set by nefia per call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, func(string) config.Upstream { return tt.u })
			st := f.m.Status()[0]
			if st.State != "down" || !strings.Contains(st.LastError, tt.want) || strings.Contains(st.LastError, "s3cret") {
				t.Errorf("status = %+v, want down because of %q", st, tt.want)
			}
		})
	}
}

// writeClientCert writes a self-signed client certificate and key (PEM).
func writeClientCert(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
