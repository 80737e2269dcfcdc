package server

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

// Gateway defaults.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxConnections   = 50
	// DefaultMaxHandshakes caps connections still in their TLS handshake
	// (GatewayOptions.MaxHandshakes). Each costs a socket, two goroutines and
	// its TLS state: under 50 KiB (TestHandshakeFlood measures about 50 KiB
	// per stalled connection with both ends in one process), so 512 of them
	// hold about 25 MiB at most.
	DefaultMaxHandshakes   = 512
	DefaultMaxMessageBytes = streamDefaultMaxMessageBytes
	// DefaultWriteTimeout bounds one write to a peer; a peer that stops
	// reading loses its session after this long (StreamOptions.WriteTimeout).
	DefaultWriteTimeout = streamDefaultWriteTimeout
	// DefaultRevocationPoll is how often live sessions are checked against
	// the revocation store, which the CLI may change from another process.
	// Revocations made through the gateway's own tool act at once.
	DefaultRevocationPoll = 200 * time.Millisecond
	// DefaultShutdownGrace bounds how long in-flight calls may run after a
	// shutdown signal.
	DefaultShutdownGrace = 5 * time.Second
)

// GatewayOptions configure a Gateway. Zero durations and sizes take the
// defaults above.
type GatewayOptions struct {
	// CACertFile is the CA client certificates must chain to.
	CACertFile string
	// CertFile and KeyFile are the gateway's own certificate, re-read when
	// they change.
	CertFile, KeyFile string
	// Revocations is consulted on every handshake and polled for live
	// sessions.
	Revocations *pki.RevocationChecker
	// Tools are the dependencies of the MCP tools; the gateway fills in
	// Sessions itself.
	Tools tools.Deps
	// Audit receives every tool call and connection event. Nil turns the
	// audit trail off (benchmarks and tests only).
	Audit *audit.Logger

	// MaxConnections caps established sessions: connections whose
	// handshake succeeded (mcp.mtls.max_connections). One more is refused at
	// once, never queued: at accept when every slot is already taken, else
	// as soon as its handshake completes, before it can send a request.
	MaxConnections int
	// MaxHandshakes caps connections still in their TLS handshake. It is a
	// budget of its own, not a share of MaxConnections: otherwise clients
	// that connect and stall (a handshake flood; issue 7) would fill every
	// session slot and lock everyone out for up to HandshakeTimeout. When it
	// is reached, a new connection cuts the oldest pending handshake instead
	// of being refused: a legitimate handshake completes in milliseconds, so
	// the oldest is almost certainly stalled, and whoever arrives after a
	// flood still gets in. Holding a slot therefore takes a steady stream of
	// new connections, not a pile of idle ones. Default
	// DefaultMaxHandshakes.
	MaxHandshakes    int
	HandshakeTimeout time.Duration
	MaxMessageBytes  int
	// WriteTimeout bounds one write to a peer; a peer that stops reading
	// its responses loses its session after this long instead of pinning
	// request handlers. Default DefaultWriteTimeout.
	WriteTimeout   time.Duration
	RevocationPoll time.Duration
	ShutdownGrace  time.Duration

	// Clock is the time certificates are verified at. Nil is the system
	// clock.
	Clock  pki.Clock
	Logger *slog.Logger
}

// Gateway is the mutual-TLS front of the MCP server: it owns the listener,
// the TLS policy, the connection limit, revocation on live sessions and the
// identity every request carries.
type Gateway struct {
	opts  GatewayOptions
	mcp   *mcpserver.MCPServer
	log   *slog.Logger
	certs *reloader[tls.Certificate]
	ca    *reloader[*x509.CertPool]
	audit *auditor // nil: no audit trail
	// verified remembers chains already verified against the current CA,
	// so reconnections and resumptions skip the signature check.
	verified verifiedChains
	http     *HTTPTransport // Streamable HTTP at /mcp on the same port
	tlsCfg   *tls.Config    // the policy; ClientCAs is filled per CA version

	cfgMu   sync.Mutex
	cfgPool *x509.CertPool
	cfg     *tls.Config // tlsCfg with the current CA

	slots chan struct{} // one token per established session (MaxConnections)

	hsMu    sync.Mutex
	pending *list.List // of *pendingHandshake, oldest first; at most MaxHandshakes

	mu       sync.Mutex
	sessions map[*liveConn]struct{}
	handlers sync.WaitGroup
	addr     atomic.Pointer[net.Addr]
	ready    chan struct{}
	readyOne sync.Once
}

// pendingHandshake is one connection in its TLS handshake, an element of
// Gateway.pending while it lasts.
type pendingHandshake struct {
	elem   *list.Element // nil once removed; guarded by Gateway.hsMu
	cancel context.CancelCauseFunc
}

// errEvicted is why a pending handshake was cut: the handshake budget was
// full and a newer connection needed the room.
var errEvicted = errors.New("server: handshake cut to admit a newer connection (handshake limit reached)")

// liveConn is one authenticated connection.
type liveConn struct {
	agent   identity.Agent
	leaf    *x509.Certificate
	session *StreamSession
}

// NewGateway checks the options, loads the CA and server certificate, and
// builds the MCP server every connection's session is served by.
func NewGateway(opts GatewayOptions) (*Gateway, error) {
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxHandshakes == 0 {
		opts.MaxHandshakes = DefaultMaxHandshakes
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.RevocationPoll == 0 {
		opts.RevocationPoll = DefaultRevocationPoll
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.Clock == nil {
		opts.Clock = pki.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Revocations == nil {
		return nil, errors.New("server: gateway needs a revocation checker")
	}
	if opts.MaxConnections < 0 || opts.MaxHandshakes < 0 || opts.HandshakeTimeout < 0 || opts.MaxMessageBytes < 0 || opts.WriteTimeout < 0 {
		return nil, errors.New("server: gateway limits must be positive")
	}
	ca, err := newReloader("CA certificate", opts.Logger, func() (*x509.CertPool, error) { return pki.LoadCertPool(opts.CACertFile) }, opts.CACertFile)
	if err != nil {
		return nil, err
	}
	certs, err := newReloader("server certificate", opts.Logger, loadKeyPair(opts.CertFile, opts.KeyFile), opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := opts.Revocations.Refresh(); err != nil {
		// Not fatal: handshakes fail closed until the store is fixed.
		opts.Logger.Error("revocation store unavailable: refusing all handshakes until it is fixed", "error", err)
	}
	g := &Gateway{
		opts:     opts,
		log:      opts.Logger,
		certs:    certs,
		ca:       ca,
		slots:    make(chan struct{}, opts.MaxConnections),
		pending:  list.New(),
		sessions: map[*liveConn]struct{}{},
		ready:    make(chan struct{}),
	}
	deps := opts.Tools
	deps.Sessions = g
	if opts.Audit != nil {
		g.audit = newAuditor(opts.Audit, opts.Logger)
	}
	if g.mcp, err = NewMCPServer(deps, opts.Logger, opts.Audit); err != nil {
		return nil, err
	}
	g.http, err = NewHTTPTransport(g.mcp, HTTPOptions{
		Identify:        g.identify,
		MaxMessageBytes: opts.MaxMessageBytes,
		Refused: func(remote string, agent *identity.Agent, reason string, err error) {
			if g.audit != nil {
				g.audit.connection(audit.EventConnectionRejected, agent, remote, reason, err)
			}
		},
		Clock:  opts.Clock,
		Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	g.tlsCfg = &tls.Config{
		// ALPN lets HTTP clients say so; raw JSON-RPC clients offer none
		// and are told apart by their first byte (SniffHTTP).
		NextProtos: []string{"h2", "http/1.1"},
		// TLS 1.3 only: no renegotiation, no RSA key exchange, encrypted
		// client certificates.
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// A certificate is required; verifyConnection verifies it (chain
		// to the current CA, validity, clientAuth, revocation, role) so
		// that every refusal has a reason and a name for the audit trail.
		// crypto/tls still checks the client's proof of possession.
		ClientAuth: tls.RequireAnyClientCert,
		Time:       opts.Clock.Now,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, _, err := certs.get()
			return c, err
		},
		// crypto/tls has already verified the chain to ClientCAs, the
		// validity period at Time and the clientAuth EKU; what is left is
		// nefia's own policy.
		VerifyConnection: g.verifyConnection,
	}
	if _, err := g.configForClient(nil); err != nil {
		return nil, err
	}
	return g, nil
}

// configForClient returns the TLS policy with the current CA as ClientCAs:
// the CA file is re-read when it changes, so after 'nefia mtls init --force'
// certificates of the old CA stop getting in without a restart.
func (g *Gateway) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	pool, _, err := g.ca.get()
	if err != nil {
		return nil, err
	}
	g.cfgMu.Lock()
	defer g.cfgMu.Unlock()
	if g.cfgPool != *pool {
		roots := *pool
		cfg := g.tlsCfg.Clone()
		cfg.ClientCAs = roots
		// The handshake verifies against the very CA it advertised, with
		// no second look at the CA file.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return g.verifyAgainst(roots, cs) }
		g.cfg, g.cfgPool = cfg, roots
	}
	return g.cfg, nil
}

// verifyConnection is the gateway's client certificate policy, run inside
// the handshake (also on resumption, so a ticket never outlives a
// revocation): the chain must lead to the current CA at the gateway's clock,
// with the clientAuth usage; the serial must not be revoked (the store is
// consulted through the checker: one stat, no read); the subject must carry
// a nefia role. A refusal is a *rejection naming the reason and the
// certificate, for the log and the audit trail.
func (g *Gateway) verifyConnection(cs tls.ConnectionState) error {
	pool, _, err := g.ca.get()
	if err != nil {
		return &rejection{reason: ReasonOther, err: err}
	}
	return g.verifyAgainst(*pool, cs)
}

// verifyAgainst applies verifyConnection's policy with roots as the CA.
func (g *Gateway) verifyAgainst(roots *x509.CertPool, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &rejection{reason: ReasonNoCertificate, err: errors.New("no client certificate")}
	}
	leaf := cs.PeerCertificates[0]
	rejected := func(reason string, err error) error {
		return &rejection{reason: reason, name: leaf.Subject.CommonName, serial: pki.FormatSerial(leaf.SerialNumber), err: err}
	}
	now := g.opts.Clock.Now()
	if !g.verified.holds(roots, cs.PeerCertificates, now) {
		intermediates := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			intermediates.AddCert(c)
		}
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: intermediates, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err == nil {
			g.verified.remember(roots, cs.PeerCertificates, chains[0])
		}
		if err != nil {
			return &rejection{reason: verifyReason(err, leaf, now), name: leaf.Subject.CommonName,
				serial: pki.FormatSerial(leaf.SerialNumber), unverified: true, err: err}
		}
	}
	if err := g.opts.Revocations.Check(leaf); err != nil {
		if errors.Is(err, pki.ErrRevoked) {
			return rejected(ReasonRevoked, err)
		}
		return rejected(ReasonRevocationErr, err)
	}
	if _, err := identity.FromCertificate(leaf); err != nil {
		return rejected(ReasonNoRole, err)
	}
	return nil
}

// MCPServer returns the MCP server behind the gateway.
func (g *Gateway) MCPServer() *mcpserver.MCPServer { return g.mcp }

// TLSConfig returns the gateway's TLS policy (for inspection and tests; do
// not modify it).
func (g *Gateway) TLSConfig() *tls.Config { return g.tlsCfg }

// Addr returns the listening address once Serve has started, else nil.
func (g *Gateway) Addr() net.Addr {
	if a := g.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Ready is closed once the gateway accepts connections.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Count returns the number of live connections, handshaking ones included:
// at most MaxConnections established sessions plus MaxHandshakes pending
// handshakes.
func (g *Gateway) Count() int {
	g.hsMu.Lock()
	defer g.hsMu.Unlock()
	return len(g.slots) + g.pending.Len()
}

// ListenAndServe listens on addr (TCP) and serves until ctx is cancelled.
func (g *Gateway) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	return g.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is cancelled, then stops
// accepting, lets in-flight calls finish (at most ShutdownGrace), closes every
// session and returns. It closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	addr := ln.Addr()
	g.addr.Store(&addr)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()

	var pollerDone sync.WaitGroup
	pollerDone.Add(1)
	go func() {
		defer pollerDone.Done()
		g.pollRevocations(ctx)
	}()
	g.log.Info("gateway listening", "addr", addr.String(), "max_connections", g.opts.MaxConnections, "max_handshakes", g.opts.MaxHandshakes)
	g.readyOne.Do(func() { close(g.ready) })

	var err error
	for {
		var conn net.Conn
		conn, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			err = fmt.Errorf("server: accept: %w", err)
			break
		}
		if len(g.slots) == cap(g.slots) {
			// Every session slot is taken: refused at once, never queued (a
			// queue would let a flood hold sockets open and delay legitimate
			// clients behind it), and before a handshake is spent on it.
			// A racing handshake may still fill the last slot; handle checks
			// again when the handshake is done.
			conn.Close()
			g.limitReached(conn.RemoteAddr().String(), nil)
			continue
		}
		hsCtx, hs := g.beginHandshake(ctx)
		g.handlers.Add(1)
		go func() {
			defer g.handlers.Done()
			g.handle(ctx, hsCtx, hs, conn)
		}()
	}
	cancel()
	ln.Close()
	g.shutdown()
	pollerDone.Wait()
	if g.audit != nil {
		g.audit.close() // the summary of refusals the rate limit suppressed
	}
	return err
}

// shutdown waits for connections to end by themselves for the grace period
// (the sessions drain in-flight calls when their context ends), then closes
// whatever is left.
func (g *Gateway) shutdown() {
	done := make(chan struct{})
	go func() {
		g.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(g.opts.ShutdownGrace):
	}
	g.mu.Lock()
	for lc := range g.sessions {
		lc.session.Close()
	}
	g.mu.Unlock()
	<-done
}

// beginHandshake counts a new connection against MaxHandshakes, cutting the
// oldest pending handshake if the budget is full (see
// GatewayOptions.MaxHandshakes). The returned context ends the handshake when
// it is cut, with errEvicted as its cause.
func (g *Gateway) beginHandshake(ctx context.Context) (context.Context, *pendingHandshake) {
	hsCtx, cancel := context.WithCancelCause(ctx)
	hs := &pendingHandshake{cancel: cancel}
	g.hsMu.Lock()
	defer g.hsMu.Unlock()
	if g.pending.Len() >= g.opts.MaxHandshakes {
		oldest := g.pending.Remove(g.pending.Front()).(*pendingHandshake)
		oldest.elem = nil
		// Closes that connection (crypto/tls closes it when the handshake's
		// context ends); its own goroutine logs and audits the cut.
		oldest.cancel(errEvicted)
	}
	hs.elem = g.pending.PushBack(hs)
	return hsCtx, hs
}

// endHandshake removes hs from the pending handshakes, if it is still there.
func (g *Gateway) endHandshake(hs *pendingHandshake) {
	g.hsMu.Lock()
	defer g.hsMu.Unlock()
	if hs.elem != nil {
		g.pending.Remove(hs.elem)
		hs.elem = nil
	}
}

// limitReached logs and audits a connection refused because every session
// slot was taken; who is nil when it was refused before its handshake.
func (g *Gateway) limitReached(remote string, who *identity.Agent) {
	attrs := []any{"remote_addr", remote, "reason", ReasonLimit, "max_connections", g.opts.MaxConnections}
	if who != nil {
		attrs = append(attrs, "name", who.Name, "serial", who.Serial)
	}
	g.log.Warn("connection rejected", attrs...)
	if g.audit != nil {
		g.audit.connection(audit.EventConnectionRejected, who, remote, ReasonLimit, nil)
	}
}

// handle runs one connection: an explicit handshake under a deadline (hsCtx
// also ends it when the connection is cut to make room, see beginHandshake),
// then, if a session slot is free, one MCP session until either side ends
// it.
func (g *Gateway) handle(ctx, hsCtx context.Context, hs *pendingHandshake, raw net.Conn) {
	defer hs.cancel(nil)
	defer g.endHandshake(hs)
	remote := raw.RemoteAddr().String()
	cfg, err := g.configForClient(nil)
	if err != nil {
		g.log.Error("connection rejected: no usable CA", "remote_addr", remote, "error", err)
		raw.Close()
		return
	}
	conn := tls.Server(raw, cfg)
	defer conn.Close()

	hsCtx, cancel := context.WithTimeout(hsCtx, g.opts.HandshakeTimeout)
	_ = raw.SetDeadline(time.Now().Add(g.opts.HandshakeTimeout))
	err = conn.HandshakeContext(hsCtx)
	cancel()
	if err != nil {
		if errors.Is(context.Cause(hsCtx), errEvicted) {
			err = &rejection{reason: ReasonLimit, err: errEvicted}
		}
		g.rejected(remote, err)
		return
	}
	_ = raw.SetDeadline(time.Time{})

	state := conn.ConnectionState()
	agent, err := identity.FromCertificate(state.PeerCertificates[0])
	if err != nil { // verifyConnection already refused these
		g.log.Warn("connection rejected", "remote_addr", remote, "error", err)
		return
	}
	agent.RemoteAddr = remote
	agent.Transport = identity.TransportStream

	// The session slot is taken only now, so a stalled handshake never
	// holds one. Taking it before leaving the pending list keeps Count from
	// dipping in between.
	select {
	case g.slots <- struct{}{}:
	default:
		g.endHandshake(hs)
		g.limitReached(remote, &agent)
		return
	}
	defer func() { <-g.slots }()
	g.endHandshake(hs)

	isHTTP, sconn, err := SniffHTTP(ctx, conn)
	if err != nil {
		g.log.Info("connection closed before its first message", "name", agent.Name, "serial", agent.Serial, "remote_addr", remote, "error", err)
		return
	}
	if isHTTP {
		g.serveHTTP(ctx, sconn, agent)
		return
	}
	sess, err := NewStreamSession(sconn, g.mcp, StreamOptions{
		MaxMessageBytes: g.opts.MaxMessageBytes,
		WriteTimeout:    g.opts.WriteTimeout,
		Logger:          g.log,
		// Captures agent, whose SessionID is filled in below before Serve.
		ContextFunc: func(ctx context.Context) context.Context { return identity.WithAgent(ctx, agent) },
	})
	if err != nil {
		g.log.Error("session setup failed", "error", err)
		return
	}
	agent.SessionID = sess.SessionID()

	lc := &liveConn{agent: agent, leaf: state.PeerCertificates[0], session: sess}
	g.mu.Lock()
	g.sessions[lc] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.sessions, lc)
		g.mu.Unlock()
	}()

	// A certificate that expires mid-session ends the session at NotAfter.
	expiry := time.AfterFunc(agent.NotAfter.Sub(g.opts.Clock.Now()), func() {
		g.log.Info("session ended: certificate expired", "name", agent.Name, "serial", agent.Serial)
		sess.Close()
	})
	defer expiry.Stop()

	g.log.Info("connection open", "name", agent.Name, "serial", agent.Serial, "role", agent.Role,
		"remote_addr", remote, "session_id", agent.SessionID)
	if g.audit != nil {
		g.audit.connection(audit.EventConnectionOpen, &agent, remote, "", nil)
	}
	start := time.Now()
	err = sess.Serve(ctx)
	reason := closeReason(err)
	g.log.Info("connection closed", "name", agent.Name, "serial", agent.Serial, "session_id", agent.SessionID,
		"duration", time.Since(start).Round(time.Millisecond), "reason", reason)
	if g.audit != nil {
		g.audit.connection(audit.EventConnectionClose, &agent, remote, reason, nil)
	}
}

// rejected logs and audits a failed handshake with its reason and, when a
// certificate was presented, its name and serial. A certificate whose chain
// did not verify proves nothing: its name is cut to the longest valid name
// (a 200,000-character CN once cost 1.2 MB of trail per handshake) and the
// record marks it unverified.
func (g *Gateway) rejected(remote string, err error) {
	reason, who, unverified := handshakeReason(err), (*identity.Agent)(nil), false
	var rj *rejection
	if errors.As(err, &rj) {
		reason, unverified = rj.reason, rj.unverified
		if rj.serial != "" {
			who = &identity.Agent{Name: rj.name, Serial: rj.serial, Transport: identity.TransportStream}
			if unverified {
				who.Name, who.Serial = audit.Clip(who.Name, maxUnverifiedName), audit.Clip(who.Serial, maxUnverifiedName)
			}
		}
	}
	attrs := []any{"remote_addr", remote, "reason", reason, "error", audit.Clip(fmt.Sprint(err), maxLoggedError)}
	if who != nil {
		attrs = append(attrs, "name", who.Name, "serial", who.Serial, "unverified", unverified)
	}
	g.log.Warn("connection rejected", attrs...)
	if g.audit != nil {
		g.audit.refused(refusal{remote: remote, reason: reason, who: who, unverified: unverified, err: err})
	}
}

// Bounds on what a refused peer gets into logs and the trail: names nefia
// issues are at most 64 characters, so a longer unverified one was never
// ours; handshake errors may quote what the peer sent.
const (
	maxUnverifiedName = 64
	maxLoggedError    = 512
)

// CloseSerial ends every live session of the certificate with this serial
// (canonical form) and returns how many it closed.
func (g *Gateway) CloseSerial(serial string) int {
	g.mu.Lock()
	var victims []*liveConn
	for lc := range g.sessions {
		if lc.agent.Serial == serial {
			victims = append(victims, lc)
		}
	}
	g.mu.Unlock()
	for _, lc := range victims {
		g.log.Info("session closed: certificate revoked", "name", lc.agent.Name, "serial", serial, "session_id", lc.agent.SessionID)
		lc.session.Close()
	}
	return len(victims) + g.http.CloseSerial(serial)
}

// serveHTTP serves one connection as MCP Streamable HTTP; identity is taken
// again from the connection's certificate on every request.
func (g *Gateway) serveHTTP(ctx context.Context, conn net.Conn, agent identity.Agent) {
	agent.Transport = identity.TransportHTTP
	g.log.Info("connection open", "name", agent.Name, "serial", agent.Serial, "role", agent.Role,
		"remote_addr", agent.RemoteAddr, "transport", agent.Transport)
	if g.audit != nil {
		g.audit.connection(audit.EventConnectionOpen, &agent, agent.RemoteAddr, "", nil)
	}
	start := time.Now()
	reason := closeReason(g.http.ServeConn(ctx, conn))
	g.log.Info("connection closed", "name", agent.Name, "serial", agent.Serial, "transport", agent.Transport,
		"duration", time.Since(start).Round(time.Millisecond), "reason", reason)
	if g.audit != nil {
		g.audit.connection(audit.EventConnectionClose, &agent, agent.RemoteAddr, reason, nil)
	}
}

// identify re-runs the handshake policy for one HTTP request: a kept-alive
// connection can outlive its certificate's revocation or expiry.
func (g *Gateway) identify(cs *tls.ConnectionState) (identity.Agent, error) {
	if err := g.verifyConnection(*cs); err != nil {
		return identity.Agent{}, err
	}
	return identity.FromCertificate(cs.PeerCertificates[0])
}

// pollRevocations closes live sessions whose certificate was revoked by
// another process (the CLI), or no longer chains to the CA after the CA was
// replaced. One stat per file per tick; files are re-read only when they
// changed.
//
// It also says, once, when the revocation store becomes unreadable (every
// new handshake is then refused) and when it is readable again, so the log
// tells why clients are refused even before one tries (issue 7: corruption
// while serving). Live sessions are kept meanwhile: they were checked
// against the last store that could be read, and no revocation can be
// recorded in a store that does not parse.
func (g *Gateway) pollRevocations(ctx context.Context) {
	t := time.NewTicker(g.opts.RevocationPoll)
	defer t.Stop()
	storeErr := g.opts.Revocations.Refresh() // NewGateway has logged it
	generation := g.opts.Revocations.Generation()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := g.opts.Revocations.Refresh()
		switch {
		case err != nil && (storeErr == nil || err.Error() != storeErr.Error()):
			g.log.Error("revocation store unavailable: refusing all new handshakes until it is fixed",
				"file", g.opts.Revocations.Path(), "error", err)
		case err == nil && storeErr != nil:
			g.log.Info("revocation store readable again: accepting handshakes", "file", g.opts.Revocations.Path())
		}
		storeErr = err
		pool, caChanged, _ := g.ca.get()
		g.mu.Lock()
		var revoked, orphaned []*liveConn
		for lc := range g.sessions {
			if r, err := g.opts.Revocations.IsRevoked(lc.leaf.SerialNumber); err == nil && r {
				revoked = append(revoked, lc)
				continue
			}
			if caChanged && !chainsTo(lc.leaf, *pool, g.opts.Clock.Now()) {
				orphaned = append(orphaned, lc)
			}
		}
		g.mu.Unlock()
		for _, lc := range revoked {
			g.CloseSerial(lc.agent.Serial)
		}
		for _, lc := range orphaned {
			g.log.Info("session closed: the CA was replaced", "name", lc.agent.Name, "serial", lc.agent.Serial, "session_id", lc.agent.SessionID)
			lc.session.Close()
		}
		// HTTP connections are re-judged only when the store or the CA
		// changed: a full chain verification per connection per tick would
		// be waste.
		if gen := g.opts.Revocations.Generation(); gen != generation || caChanged {
			generation = gen
			g.http.Recheck()
		}
	}
}

func chainsTo(leaf *x509.Certificate, roots *x509.CertPool, now time.Time) bool {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}
