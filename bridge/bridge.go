package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nefia/nefia/internal/defaults"
)

// Defaults for Options.
const (
	DefaultDialTimeout     = 10 * time.Second
	DefaultReconnectWindow = 30 * time.Second
	DefaultDrainTimeout    = 5 * time.Second
	// DefaultMaxMessageBytes is above the gateway's own cap (4 MiB by
	// default), so the gateway, not the bridge, is what refuses a large
	// message, with an error the client can read.
	DefaultMaxMessageBytes = 16 << 20
)

// Options configure a bridge.
type Options struct {
	// Addr is the gateway, host:port.
	Addr string
	// TLS carries the client certificate (Certificates or
	// GetClientCertificate) and the CA the gateway must verify against
	// (RootCAs). ServerName defaults to Addr's host. The bridge forces TLS
	// 1.3 and offers no ALPN protocol, which is how the gateway tells the
	// raw JSON-RPC stream from HTTP.
	TLS *tls.Config

	// DialTimeout bounds one connection attempt: TCP, handshake and probe.
	DialTimeout time.Duration
	// ReconnectWindow is how long the bridge keeps trying to reach a
	// gateway that went away while nothing was in flight.
	ReconnectWindow time.Duration
	// DrainTimeout is how long the bridge waits for outstanding answers
	// after the client closed its input.
	DrainTimeout time.Duration
	// MaxMessageBytes caps one line in either direction.
	MaxMessageBytes int

	// Logger receives diagnostics (never message contents). Nil discards.
	Logger *slog.Logger

	// Renew, when set, renews the client certificate at two thirds of its
	// lifetime (jittered by ±5% of it), retrying with backoff until it
	// expires; the renewed certificate is presented on a new connection
	// that takes over the client's next messages while the old one answers
	// what is in flight on it. If the certificate expires unrenewed, Run
	// ends with ErrExpired. It needs TLS.Certificates (not
	// GetClientCertificate). Nil: the certificate is used until it expires.
	Renew RenewFunc
	// Clock times the renewals; nil is the system clock.
	Clock Clock
}

// bridge is one Run.
type bridge struct {
	opts      Options
	tlsConfig *tls.Config
	log       *slog.Logger
	out       io.Writer

	inflight inflight

	mu              sync.Mutex
	initLine        []byte // the client's initialize, replayed after a reconnect
	initializedLine []byte // and its notifications/initialized
	initSeq         atomic.Uint64

	emitMu sync.Mutex // forwarders of an old and a new connection emit concurrently

	// Renewal (Options.Renew).
	clock     Clock
	certMu    sync.Mutex
	cert      tls.Certificate // presented on the next connection; Leaf set
	live      atomic.Bool     // serve holds a connection
	switchTo  chan handover   // a connection made with a renewed certificate
	fatal     chan error      // the certificate expired unrenewed
	retiredMu sync.Mutex
	retired   map[*conn]struct{} // old connections answering what they had in flight
	wg        sync.WaitGroup     // renewLoop, retire and handOver goroutines

	renewCheck renewCheck // warns when the policy hides nefia.mtls.renew
}

// Run bridges in (the client's requests) and out (where its answers go) to
// the gateway at opts.Addr until in ends, ctx is cancelled, or the
// connection fails in a way a reconnect cannot hide.
//
// The first connection is made before anything is read from in, so a
// refused certificate or an unreachable gateway is reported at once, as an
// error wrapping ErrRefused, ErrUntrusted or ErrUnreachable. When the
// gateway closes the connection with nothing in flight (it ends idle
// sessions), Run connects again at the client's next message and replays
// its initialize, so the client notices nothing. Later, Run
// returns nil when in ended (after the answers still owed arrived, or
// DrainTimeout), ctx's error when it was cancelled, and an error wrapping
// ErrConnectionLost when the connection dropped with a request in flight
// (that request gets a JSON-RPC error first) or could not be made again.
//
// If ctx ends while a Read of in is blocked, that Read is left behind: it
// ends when in returns, which for a process's standard input is when the
// process exits.
func Run(ctx context.Context, in io.Reader, out io.Writer, opts Options) error {
	b, err := newBridge(out, opts)
	if err != nil {
		return err
	}
	c, err := b.dial(ctx, b.emit)
	if err != nil {
		return err
	}
	b.log.Debug("connected to the gateway", "addr", b.opts.Addr)
	ctx, stop := context.WithCancel(ctx)
	// In reverse: stop the renewal, close what still answers old requests,
	// wait for all of it, close a connection handed over too late.
	defer b.dropHandover()
	defer b.wg.Wait()
	defer b.closeRetired()
	defer stop()
	if b.opts.Renew != nil {
		b.wg.Go(func() { b.renewLoop(ctx) })
	}

	quit := make(chan struct{})
	defer close(quit)
	input := make(chan inputLine)
	go readInput(newLineReader(in, b.opts.MaxMessageBytes), input, quit)

	var first []byte // a client line that waited for a reconnect
	for {
		last, done, err := b.serve(ctx, c, input, first)
		if done {
			return err
		}
		if err := b.expired(ctx); err != nil {
			b.failInFlight()
			return err
		}
		if n := b.inflight.owned(last); n > 0 {
			b.failInFlight()
			return fmt.Errorf("%w: %s closed the connection with %d request(s) unanswered", ErrConnectionLost, b.opts.Addr, n)
		}
		// Reconnect only when the client has something to say: the
		// gateway closes idle sessions (mcp.mtls.idle_timeout) to free
		// their slot, and reconnecting at once would take it back.
		b.log.Info(msgIdleClosed, "addr", b.opts.Addr)
		var in inputLine
		select {
		case in = <-input:
		case err := <-b.fatal:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		b.dropHandover()
		if in.err != nil {
			return b.inputEnded(in.err, nil)
		}
		if c, err = b.reconnect(ctx); err != nil {
			if m := parse(in.line); m.kind == request {
				_ = b.emit(errorResponse(m.rawID, "nefia connect: the gateway could not be reached again; the request was not sent"))
			}
			return err
		}
		b.log.Info("reconnected to the gateway", "addr", b.opts.Addr)
		first = in.line
	}
}

// msgIdleClosed is logged when the gateway ended a connection with nothing
// in flight (it closes idle sessions); the bridge reconnects at the
// client's next message.
const msgIdleClosed = "connection to the gateway closed with nothing in flight; reconnecting at the client's next message"

func newBridge(out io.Writer, opts Options) (*bridge, error) {
	if opts.Addr == "" || opts.TLS == nil {
		return nil, errors.New("bridge: an address and a TLS configuration are required")
	}
	if len(opts.TLS.Certificates) == 0 && opts.TLS.GetClientCertificate == nil {
		return nil, errors.New("bridge: the TLS configuration has no client certificate")
	}
	if opts.DialTimeout < 0 || opts.ReconnectWindow < 0 || opts.DrainTimeout < 0 || opts.MaxMessageBytes < 0 {
		return nil, errors.New("bridge: timeouts and sizes must be positive")
	}
	defaults.Set(&opts.DialTimeout, DefaultDialTimeout)
	defaults.Set(&opts.ReconnectWindow, DefaultReconnectWindow)
	defaults.Set(&opts.DrainTimeout, DefaultDrainTimeout)
	defaults.Set(&opts.MaxMessageBytes, DefaultMaxMessageBytes)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	b := &bridge{opts: opts, log: opts.Logger, out: out, clock: opts.Clock,
		switchTo: make(chan handover, 1), fatal: make(chan error, 1), retired: map[*conn]struct{}{}}
	cfg := opts.TLS.Clone()
	if cfg.GetClientCertificate == nil {
		b.cert = cfg.Certificates[0]
		if b.cert.Leaf == nil && len(b.cert.Certificate) > 0 {
			b.cert.Leaf, _ = x509.ParseCertificate(b.cert.Certificate[0])
		}
		// Present the current certificate whatever CAs the gateway names
		// in its request (crypto/tls would otherwise send none when they
		// do not match), so that the gateway judges this certificate and
		// the refusal says why.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			kp := b.current()
			return &kp, nil
		}
	}
	if opts.Renew != nil && b.cert.Leaf == nil {
		return nil, errors.New("bridge: renewal needs the client certificate in TLS.Certificates")
	}
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	cfg.NextProtos = nil
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(opts.Addr)
		if err != nil {
			return nil, fmt.Errorf("bridge: address %q: %w", opts.Addr, err)
		}
		cfg.ServerName = host
	}
	b.tlsConfig = cfg
	return b, nil
}

// inputLine is one line from the client, or why there are no more.
type inputLine struct {
	line []byte
	err  error
}

func readInput(r *lineReader, input chan<- inputLine, quit <-chan struct{}) {
	for {
		line, err := r.next()
		select {
		case input <- inputLine{line, err}:
		case <-quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// serve copies between the client and one connection, sending first (a
// line that waited for this connection), if any, before the rest. done is
// false when the connection ended and Run should decide whether to
// reconnect; when done is true, err is what Run returns.
func (b *bridge) serve(ctx context.Context, c *conn, input <-chan inputLine, first []byte) (last *conn, done bool, err error) {
	b.live.Store(true)
	defer b.live.Store(false)
	fwd := b.startForward(c)
	end := func() error {
		c.tls.Close()
		return <-fwd
	}
	if first != nil {
		if err := b.send(c, first); err != nil {
			if ferr := end(); fatal(ferr) {
				return c, true, ferr
			}
			return c, false, nil
		}
	}
	for {
		select {
		case in := <-input:
			if in.err != nil {
				return c, true, b.finish(ctx, c, fwd, in.err)
			}
			if err := b.send(c, in.line); err != nil {
				if ferr := end(); fatal(ferr) {
					return c, true, ferr
				}
				return c, false, nil
			}
		case err := <-fwd:
			c.tls.Close()
			if fatal(err) {
				return c, true, err
			}
			b.log.Debug("gateway connection ended", "error", err)
			return c, false, nil
		case h := <-b.switchTo:
			if h.seq != b.initSeq.Load() {
				// The client (re)initialized after h replayed its
				// initialize: h's session would not know it. Make another.
				h.c.tls.Close()
				until := c.notAfter
				b.wg.Go(func() { b.handOver(ctx, until) })
				continue
			}
			b.retire(c, fwd)
			c, fwd = h.c, b.startForward(h.c)
			b.log.Info(msgSwitched, "addr", b.opts.Addr)
		case err := <-b.fatal:
			end()
			b.failInFlight()
			return c, true, err
		case <-ctx.Done():
			end()
			return c, true, ctx.Err()
		}
	}
}

// startForward runs forward(c) and returns where its result arrives.
func (b *bridge) startForward(c *conn) chan error {
	fwd := make(chan error, 1)
	go func() { fwd <- b.forward(c) }()
	return fwd
}

// expired is ErrExpired when the connection ended because the certificate
// expired before a renewal succeeded (the gateway ends sessions at their
// certificate's expiry, as renewLoop gives up): the reason to report,
// rather than a lost connection or a refused reconnect.
func (b *bridge) expired(ctx context.Context) error {
	select {
	case err := <-b.fatal:
		return err
	default:
	}
	leaf := b.current().Leaf
	if b.opts.Renew == nil || b.clock.Now().Before(leaf.NotAfter) {
		return nil
	}
	// renewLoop reports it at its next wake (within wakeEvery, or when a
	// renewal attempt returns); wait for its error, which counts the
	// attempts, but not forever.
	t := time.NewTimer(wakeEvery + time.Second)
	defer t.Stop()
	select {
	case err := <-b.fatal:
		return err
	case <-t.C:
		return fmt.Errorf("%w: %q (serial %x) expired at %s before a renewal succeeded; ask an operator for a new certificate",
			ErrExpired, leaf.Subject.CommonName, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dropHandover closes a connection made with a renewed certificate that
// serve did not take over (its connection ended first): the next
// reconnect dials afresh, with the renewed certificate, rather than
// sending on a connection that sat unused.
func (b *bridge) dropHandover() {
	select {
	case h := <-b.switchTo:
		h.c.tls.Close()
	default:
	}
}

// finish ends a session whose client closed its input: it half-closes the
// connection (the gateway answers what is in flight, then closes) and
// waits for that, for at most DrainTimeout.
func (b *bridge) finish(ctx context.Context, c *conn, fwd <-chan error, inErr error) error {
	_ = c.tls.CloseWrite()
	t := time.NewTimer(b.opts.DrainTimeout)
	defer t.Stop()
	var ferr error
	select {
	case ferr = <-fwd:
	case <-t.C:
		c.tls.Close()
		<-fwd
	case <-ctx.Done():
		c.tls.Close()
		<-fwd
	}
	c.tls.Close()
	return b.inputEnded(inErr, ferr)
}

// inputEnded is what Run returns once the client's input ended with inErr,
// ferr being how the connection's last answers were forwarded.
func (b *bridge) inputEnded(inErr, ferr error) error {
	switch {
	case errors.Is(inErr, ErrMessageTooLarge):
		return fmt.Errorf("%w: from the client", inErr)
	case !errors.Is(inErr, io.EOF):
		return fmt.Errorf("bridge: read from the client: %w", inErr)
	case errors.Is(ferr, ErrOutput):
		return ferr
	}
	return nil
}

func fatal(err error) bool {
	return errors.Is(err, ErrOutput) || errors.Is(err, ErrMessageTooLarge)
}

// send writes one client line to the gateway, noting requests that are
// owed an answer and the initialize exchange a reconnect must replay.
func (b *bridge) send(c *conn, line []byte) error {
	m := parse(line)
	switch {
	case m.kind == request:
		b.inflight.add(m.id, m.rawID, c)
		b.noteToolsList(m, line)
		if m.method == "initialize" {
			b.mu.Lock()
			b.initLine = append([]byte(nil), line...)
			b.mu.Unlock()
			b.initSeq.Add(1)
		}
	case m.kind == notification && m.method == "notifications/initialized":
		b.mu.Lock()
		b.initializedLine = append([]byte(nil), line...)
		b.mu.Unlock()
		b.initSeq.Add(1)
	case m.kind == notification && m.cancelled != "":
		// A cancelled request gets no answer (MCP cancellation), so it
		// must not count as in flight.
		b.inflight.done(m.cancelled)
	}
	_, err := c.tls.Write(append(line, '\n'))
	return err
}

// forward copies the gateway's lines to the client until the connection
// ends.
func (b *bridge) forward(c *conn) error {
	for {
		line, err := c.lines.next()
		if err != nil {
			return err
		}
		if err := b.deliver(line, parse(line), b.emit); err != nil {
			return err
		}
	}
}

// deliver passes one gateway line to the client, except the answers to the
// bridge's own requests and anything that is not JSON-RPC.
func (b *bridge) deliver(line []byte, m message, emit func([]byte) error) error {
	switch m.kind {
	case invalid:
		b.log.Warn("dropped a line from the gateway that is not JSON-RPC", "bytes", len(line))
		return nil
	case response:
		if m.id == "s:"+probeID || m.id == "s:"+reinitID {
			return nil
		}
		if m.id != "" {
			b.inflight.done(m.id)
			b.checkToolsList(m, line)
		}
	}
	return emit(line)
}

// emit writes one line to the client.
func (b *bridge) emit(line []byte) error {
	b.emitMu.Lock()
	defer b.emitMu.Unlock()
	if _, err := b.out.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("%w: %v", ErrOutput, err)
	}
	return nil
}

// failInFlight answers every request still in flight with a JSON-RPC error,
// so the client learns at once instead of waiting for a timeout.
func (b *bridge) failInFlight() {
	for _, id := range b.inflight.drain() {
		_ = b.emit(errorResponse(id, "nefia connect: the connection to the gateway was lost before the answer arrived; the request may or may not have been carried out"))
	}
}

// reconnect dials again for at most ReconnectWindow, retrying only while
// the gateway is unreachable (say, restarting): a refused certificate will
// not become acceptable by retrying.
func (b *bridge) reconnect(ctx context.Context) (*conn, error) {
	deadline := time.Now().Add(b.opts.ReconnectWindow)
	wait := 250 * time.Millisecond
	for {
		c, err := b.dial(ctx, b.emit)
		if err == nil {
			if err = b.reinit(c); err == nil {
				return c, nil
			}
			c.tls.Close()
			return nil, err
		}
		if !errors.Is(err, ErrUnreachable) || time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("%w; reconnecting failed: %w", ErrConnectionLost, err)
		}
		b.log.Debug("gateway unreachable; retrying", "addr", b.opts.Addr, "in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// reinit replays the client's initialize on a new connection, under the
// bridge's own id, so the new session knows the client as the old one did
// (its info, capabilities and protocol version). A client that never sent
// initialize (2026-07-28 is stateless) needs nothing.
func (b *bridge) reinit(c *conn) error {
	b.mu.Lock()
	initLine, initialized := b.initLine, b.initializedLine
	b.mu.Unlock()
	if initLine == nil {
		return nil
	}
	line, err := withID(initLine, reinitID)
	if err != nil {
		return fmt.Errorf("%w: replaying initialize: %v", ErrConnectionLost, err)
	}
	_ = c.tls.SetDeadline(time.Now().Add(b.opts.DialTimeout))
	defer c.tls.SetDeadline(time.Time{})
	if _, err := c.tls.Write(line); err != nil {
		return fmt.Errorf("%w: replaying initialize: %v", ErrConnectionLost, err)
	}
	if err := b.await(c, "s:"+reinitID, b.emit); err != nil {
		return fmt.Errorf("%w: replaying initialize: %v", ErrConnectionLost, err)
	}
	if initialized != nil {
		if _, err := c.tls.Write(append(initialized, '\n')); err != nil {
			return fmt.Errorf("%w: replaying initialize: %v", ErrConnectionLost, err)
		}
	}
	return nil
}
