package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// conn is one admitted connection to the gateway.
type conn struct {
	tls   *tls.Conn
	lines *lineReader
	// notAfter is when the certificate it was made with expires (and the
	// gateway ends it); zero when the bridge cannot tell.
	notAfter time.Time
}

// dial connects, completes the handshake and sends the probe; it returns
// only a connection the gateway has admitted. Lines the gateway sends
// before the probe's answer (there should be none) go to forward.
func (b *bridge) dial(ctx context.Context, forward func([]byte) error) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.DialTimeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: b.tlsConfig}
	nc, err := d.DialContext(ctx, "tcp", b.opts.Addr)
	if err != nil {
		return nil, b.classify(ctx, err)
	}
	tc := nc.(*tls.Conn)
	c := &conn{tls: tc, lines: newLineReader(tc, b.opts.MaxMessageBytes)}
	if leaf := b.leaf(); leaf != nil {
		c.notAfter = leaf.NotAfter
	}
	if err := b.probe(ctx, c, forward); err != nil {
		tc.Close()
		return nil, b.classify(ctx, err)
	}
	return c, nil
}

// probe sends the bridge's ping and reads up to its answer. In TLS 1.3 this
// first read is where the gateway's verdict on the certificate arrives.
func (b *bridge) probe(ctx context.Context, c *conn, forward func([]byte) error) error {
	deadline, _ := ctx.Deadline()
	_ = c.tls.SetDeadline(deadline)
	defer c.tls.SetDeadline(time.Time{})
	if _, err := c.tls.Write(probeLine); err != nil {
		return err
	}
	return b.await(c, "s:"+probeID, forward)
}

// await reads lines until the response with id key, forwarding the others.
func (b *bridge) await(c *conn, key string, forward func([]byte) error) error {
	for {
		line, err := c.lines.next()
		if err != nil {
			return err
		}
		m := parse(line)
		if m.kind == response && m.id == key {
			if m.failed && key != "s:"+probeID {
				return fmt.Errorf("the gateway answered with an error: %s", line)
			}
			return nil
		}
		if err := b.deliver(line, m, forward); err != nil {
			return err
		}
	}
}

// classify turns a dial, handshake or probe error into one of the
// package's errors with a message a person can act on.
func (b *bridge) classify(ctx context.Context, err error) error {
	addr := b.opts.Addr
	var (
		verr  *tls.CertificateVerificationError
		opErr *net.OpError
	)
	switch {
	case errors.Is(err, ErrMessageTooLarge), errors.Is(err, ErrOutput):
		return err
	case errors.As(err, &verr):
		return fmt.Errorf("%w: %s presented a certificate that does not verify against the CA (%v); is it the CA of this gateway?", ErrUntrusted, addr, verr.Err)
	case remoteAlert(err) != "":
		alert := remoteAlert(err)
		return fmt.Errorf("%w: %s (%s)", ErrRefused, alert, b.diagnose(alert))
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%w at %s: %s (is 'nefia mcp serve' running there with mTLS enabled?)", ErrUnreachable, addr, dialCause(opErr))
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil, isTimeout(err):
		return fmt.Errorf("%w at %s: no answer within %v", ErrUnreachable, addr, b.opts.DialTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s closed the connection without admitting it (connection limit reached, a refused certificate, or not a nefia gateway)", ErrRefused, addr)
	}
	return fmt.Errorf("%w at %s: %v", ErrUnreachable, addr, err)
}

// remoteAlert returns the description of a TLS alert the peer sent ("bad
// certificate"), or "". crypto/tls reports it only as text: "remote error:
// tls: bad certificate".
func remoteAlert(err error) string {
	const marker = "remote error: tls: "
	msg := err.Error()
	if i := strings.Index(msg, marker); i >= 0 {
		return msg[i+len(marker):]
	}
	return ""
}

// diagnose says why the gateway most likely refused the certificate. A
// nefia gateway answers every refusal with the same alert (bad
// certificate: it verifies certificates itself, in VerifyConnection), so
// what can be checked here is checked here: validity and the chain to the
// CA the bridge trusts, which is the gateway's own (the gateway's
// certificate verified against it). What is left is the gateway's private
// knowledge: revocation, or a certificate without a nefia role.
func (b *bridge) diagnose(alert string) string {
	leaf := b.leaf()
	switch {
	case alert == "certificate required":
		return "no client certificate was sent"
	case leaf == nil:
		return "the gateway did not accept the client certificate"
	case time.Now().After(leaf.NotAfter) || alert == "expired certificate":
		return fmt.Sprintf("the certificate %q expired on %s; ask an operator for a new one", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	case time.Now().Before(leaf.NotBefore):
		return fmt.Sprintf("the certificate %q is not valid before %s; check this machine's clock", leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: b.tlsConfig.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil ||
		alert == "unknown certificate authority" {
		return fmt.Sprintf("the certificate %q was not issued by this gateway's CA", leaf.Subject.CommonName)
	}
	return fmt.Sprintf("the certificate %q, serial %x, is revoked or carries no nefia role", leaf.Subject.CommonName, leaf.SerialNumber)
}

// leaf is the client certificate the bridge presents, if it can tell.
func (b *bridge) leaf() *x509.Certificate {
	return b.current().Leaf
}

func dialCause(e *net.OpError) string {
	var dns *net.DNSError
	switch {
	case errors.Is(e, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(e, &dns):
		return "no such host " + dns.Name
	case e.Timeout():
		return "connection timed out"
	}
	return e.Err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
