package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nefia/nefia/pki"
)

// PingLine is the MCP ping every handshake is followed by. nefia answers it
// without an initialize (ping is allowed at any time), and the baseline
// servers answer every line with its result.
const PingLine = `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n"

// OpTimeout bounds one operation, so a stuck target fails the run instead
// of hanging it.
const OpTimeout = 10 * time.Second

// ClientConfig returns a TLS 1.3 client configuration that presents cert
// and trusts the CA in caFile.
//
// Key exchange is pinned to X25519. Go clients offer the hybrid
// X25519MLKEM768 first by default, which crypto/tls servers accept and
// OpenSSL 3.0 (Debian 12's stunnel and nginx) does not know; pinning X25519
// makes every server do the same key exchange, the one the crypto floor
// counts.
func ClientConfig(cert tls.Certificate, caFile string) (*tls.Config, error) {
	pool, err := pki.LoadCertPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		RootCAs:          pool,
		ServerName:       "127.0.0.1",
		CurvePreferences: []tls.CurveID{tls.X25519},
		// Present the certificate whatever CA names the server lists.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}, nil
}

// Resuming returns a copy of cfg with its own session ticket cache: one
// client that resumes its previous session on every connection after its
// first.
func Resuming(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	return c
}

// Dial connects to addr and completes a TLS handshake under OpTimeout.
func Dial(ctx context.Context, addr string, cfg *tls.Config) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// HandshakePing is one handshake operation: connect, complete the mutual
// TLS handshake, send a ping, read its answer, close. In TLS 1.3 the server
// judges the client certificate after the client has finished, so the answer
// to the ping is the proof the server admitted the connection.
func HandshakePing(ctx context.Context, addr string, cfg *tls.Config) (resumed bool, err error) {
	conn, err := Dial(ctx, addr, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(OpTimeout))
	if _, err := conn.Write([]byte(PingLine)); err != nil {
		return false, fmt.Errorf("write ping: %w", err)
	}
	// The session tickets the server sends ahead of the answer are read
	// here too, so the next connection can resume.
	line, err := bufio.NewReaderSize(conn, 1024).ReadSlice('\n')
	if err != nil {
		return false, fmt.Errorf("read ping answer: %w", err)
	}
	if !bytes.Contains(line, []byte(`"result"`)) {
		return false, fmt.Errorf("ping answer %q", trim(line))
	}
	return conn.ConnectionState().DidResume, nil
}

// HandshakeWorkers returns a NewWorker for HandshakePing against addr.
// With resume, each worker is one client with its own ticket cache, primed
// by one full handshake before the clock starts.
func HandshakeWorkers(ctx context.Context, addr string, cfg *tls.Config, resume bool) NewWorker {
	return func(int) (Op, func(), error) {
		c := cfg
		if resume {
			c = Resuming(cfg)
			if _, err := HandshakePing(ctx, addr, c); err != nil {
				return nil, nil, fmt.Errorf("prime the session cache: %w", err)
			}
		}
		return func() (bool, error) { return HandshakePing(ctx, addr, c) }, nil, nil
	}
}

// WaitReady polls addr with HandshakePing until it answers or d passes, and
// returns how long it took.
func WaitReady(ctx context.Context, addr string, cfg *tls.Config, d time.Duration) (time.Duration, error) {
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if _, err = HandshakePing(ctx, addr, cfg); err == nil {
			return time.Since(start), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("load: %s not ready after %v: %w", addr, d, err)
}

func trim(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(bytes.TrimSpace(b))
}

// IsClosed reports whether err is how a read ends when the peer closed or
// reset the connection.
func IsClosed(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
