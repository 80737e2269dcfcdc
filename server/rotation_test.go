package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// serverSerial dials and returns the serial of the certificate the gateway
// presented.
func serverSerial(t *testing.T, gw *servertest.Gateway, cfg *tls.Config) string {
	t.Helper()
	c, err := gw.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := pingOn(c); err != nil {
		t.Fatal(err)
	}
	return pki.FormatSerial(c.ConnectionState().PeerCertificates[0].SerialNumber)
}

func TestServerCertificateRotation(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	cert := gw.Cert("rot", pki.RoleAgent)
	cfg := gw.ClientConfig(&cert)
	original := serverSerial(t, gw, cfg)

	open, err := gw.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := pingOn(open); err != nil {
		t.Fatal(err)
	}

	caCert, caKey := pkitest.LoadCA(t, gw.Store)
	newPair := func() ([]byte, []byte) {
		kp := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "rotated", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return pkitest.EncodePair(t, kp)
	}

	t.Run("atomic replace", func(t *testing.T) {
		certPEM, keyPEM := newPair()
		writeAtomic(t, gw.Store.Path(pki.ServerKeyFile), keyPEM)
		writeAtomic(t, gw.Store.Path(pki.ServerCertFile), certPEM)
		if got := serverSerial(t, gw, cfg); got == original {
			t.Fatal("gateway still presents the old certificate")
		}
	})
	t.Run("non-atomic: key first, then cert", func(t *testing.T) {
		before := serverSerial(t, gw, cfg)
		certPEM, keyPEM := newPair()
		if err := os.WriteFile(gw.Store.Path(pki.ServerKeyFile), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		// Mismatched pair on disk: the previous one stays in service.
		if got := serverSerial(t, gw, cfg); got != before {
			t.Fatalf("half-rotated pair: gateway presents %s, want the previous %s", got, before)
		}
		if err := os.WriteFile(gw.Store.Path(pki.ServerCertFile), certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := serverSerial(t, gw, cfg); got == before {
			t.Fatal("completed rotation not picked up")
		}
	})
	t.Run("broken pair keeps the previous one", func(t *testing.T) {
		before := serverSerial(t, gw, cfg)
		writeAtomic(t, gw.Store.Path(pki.ServerCertFile), []byte("garbage"))
		if got := serverSerial(t, gw, cfg); got != before {
			t.Fatalf("broken pair: gateway presents %s, want %s", got, before)
		}
	})
	if err := pingOn(open); err != nil {
		t.Fatalf("a session opened before the rotations broke: %v", err)
	}
}

func TestCAReplacementLocksOutOldCertificates(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	old := gw.Cert("old", pki.RoleOperator)
	conn, err := gw.Dial(gw.ClientConfig(&old))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := pingOn(conn); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Store.Init(pki.InitOptions{Hosts: []string{"127.0.0.1"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := readUntilClosed(conn, waitLimit); err != nil {
		t.Fatalf("session of the old CA survives its replacement: %v", err)
	}
	cfg := gw.ClientConfig(&old)
	cfg.InsecureSkipVerify = true // judge only the gateway's side
	if err := gw.Probe(cfg); err == nil {
		t.Fatal("a certificate of the replaced CA still gets in")
	}
	fresh := gw.Cert("new", pki.RoleAgent)
	if err := gw.Probe(gw.ClientConfig(&fresh)); err != nil {
		t.Fatalf("a certificate of the new CA is refused: %v", err)
	}
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
