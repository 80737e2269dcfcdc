package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

// TestCAChangeIsSeenByThePoll (issue 10 item 2): the CA file changes while
// ordinary clients keep connecting. Their handshakes are the first to load
// the new CA, and the revocation poll must still learn of it and close the
// raw sessions of the old CA: a change of the file is broadcast to every
// observer, not consumed by whichever looks first.
func TestCAChangeIsSeenByThePoll(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		// A slow poll, so that a handshake almost always reloads the CA
		// before the poll does.
		o.RevocationPoll = time.Second
	})
	old := gw.Cert("old", pki.RoleOperator)
	conn, err := gw.Dial(gw.ClientConfig(&old))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := pingOn(conn); err != nil {
		t.Fatal(err)
	}

	// Background clients handshake as fast as they can.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	bg := gw.ClientConfig(&old)
	bg.InsecureSkipVerify = true // the gateway's certificate changes with the CA
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: bg}
				if c, err := d.Dial("tcp", gw.Addr); err == nil {
					c.Close()
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	if _, err := gw.Store.Init(pki.InitOptions{Hosts: []string{"127.0.0.1"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := readUntilClosed(conn, 5*time.Second); err != nil {
		t.Fatalf("raw session of the replaced CA survives: %v", err)
	}
	t.Logf("old-CA session closed %v after the CA was replaced (poll 1s)", time.Since(start).Round(time.Millisecond))
}

// TestCAFileMustHoldACA (issue 10 item 6): a file that is not a CA
// certificate (a client's certificate written over mtls_ca.crt, a CA
// certificate that may not sign) is never made the trust root: at start it
// is an error, on reload the gateway keeps the CA it has and logs why.
func TestCAFileMustHoldACA(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		pem  func(t *testing.T, gw *servertest.Gateway) []byte
		want string
	}{
		{name: "client certificate", want: "not a CA certificate", pem: func(t *testing.T, gw *servertest.Gateway) []byte {
			return gw.Issue("leaf", pki.RoleOperator, time.Hour).CertPEM
		}},
		{name: "CA without keyCertSign", want: "may not sign", pem: func(t *testing.T, _ *servertest.Gateway) []byte {
			return selfSigned(t, x509.KeyUsageDigitalSignature)
		}},
		{name: "CA certificate after a leaf", want: "not a CA certificate", pem: func(t *testing.T, gw *servertest.Gateway) []byte {
			ca, err := os.ReadFile(gw.Store.Path(pki.CACertFile))
			if err != nil {
				t.Fatal(err)
			}
			return append(ca, gw.Issue("leaf2", pki.RoleAgent, time.Hour).CertPEM...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := &logRecorder{}
			gw := servertest.Start(t, func(o *server.GatewayOptions) { o.Logger = slog.New(logs) })
			bad := tt.pem(t, gw)

			// At start: refused.
			path := filepath.Join(t.TempDir(), "ca.crt")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.NewGateway(server.GatewayOptions{
				CACertFile:  path,
				CertFile:    gw.Store.Path(pki.ServerCertFile),
				KeyFile:     gw.Store.Path(pki.ServerKeyFile),
				Revocations: pki.NewRevocationChecker(gw.Store.Path(pki.RevokedFile)),
				Tools:       tools.Deps{Store: gw.Store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml")},
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewGateway with %s as CA: %v, want an error containing %q", tt.name, err, tt.want)
			}

			// On reload: the old CA stays, and the log says why.
			member := gw.Cert("member", pki.RoleAgent)
			cfg := gw.ClientConfig(&member) // reads the CA file: before it is overwritten
			mark := logs.len()
			writeAtomic(t, gw.Store.Path(pki.CACertFile), bad)
			if err := gw.Probe(cfg); err != nil {
				t.Fatalf("a client of the CA in service is refused after %s was written over it: %v", tt.name, err)
			}
			if !logs.has(mark, slog.LevelError, "CA certificate reload failed", tt.want) {
				t.Errorf("no error logged naming %q", tt.want)
			}
		})
	}
}

// selfSigned returns a self-signed CA certificate (IsCA) with usage ku.
func selfSigned(t *testing.T, ku x509.KeyUsage) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "no-sign CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: ku, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestInitForceAnswersItsCaller: the operator whose nefia.mtls.init --force
// replaces the CA that admitted its own raw session still gets the answer
// (it carries the new CA), however soon the gateway sees the change; then
// the session ends. With the poll at 1 ms the change is seen while the tool
// is still writing, which used to cut the connection before the answer.
func TestInitForceAnswersItsCaller(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		poll time.Duration
	}{
		{"poll 1ms", time.Millisecond},
		{"poll 200ms", 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gw := servertest.Start(t, func(o *server.GatewayOptions) { o.RevocationPoll = tc.poll })
			c := gw.Client(gw.Cert("ops", pki.RoleOperator))
			res := servertest.CallOK(t, c, "nefia.mtls.init", map[string]any{"hosts": []any{"localhost", "127.0.0.1"}, "force": true})
			if res["ca"] == nil {
				t.Fatalf("init answered without the new CA: %v", res)
			}
			waitFor(t, func() bool { return gw.Count() == 0 }) // the old CA's session ends
		})
	}
}
