package server

import (
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
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/internal/defaults"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/tools"
)

// revokeGrace bounds how long a revoked raw session (or one whose CA was
// replaced) may take to answer the requests it was already running
// (StreamSession.Finish); it reads nothing more from that moment.
const revokeGrace = time.Second

// Gateway defaults.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultFirstByteTimeout bounds the wait for a connection's first
	// message after its handshake (GatewayOptions.FirstByteTimeout).
	DefaultFirstByteTimeout = 10 * time.Second
	DefaultMaxConnections   = 50
	// DefaultMaxConnectionsPerClient, DefaultOperatorReserve and
	// DefaultIdleTimeout are the defaults of mcp.mtls.max_connections_per_client,
	// mcp.mtls.operator_reserve and mcp.mtls.idle_timeout.
	DefaultMaxConnectionsPerClient = config.DefaultMaxConnectionsPerClient
	DefaultOperatorReserve         = config.DefaultOperatorReserve
	DefaultIdleTimeout             = config.DefaultIdleTimeout
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
	Revocations Revocations
	// Tools are the dependencies of the MCP tools; the gateway fills in
	// Sessions itself.
	Tools tools.Deps
	// Audit receives every tool call and connection event. Nil turns the
	// audit trail off (benchmarks and tests only).
	Audit *audit.Logger
	// Policy decides which tools each caller may list and call (mcp.policy);
	// nil is policy.Default(). Gateway.SetPolicy swaps it while serving.
	Policy *policy.Policy
	// Observer receives every connection and tool call event besides the
	// log and the audit trail, which the gateway always feeds (metrics;
	// nil for none).
	Observer observe.Observer
	// Register adds tools of its own (upstream MCP servers) to the
	// gateway's MCP server after nefia's, so that they are served under the
	// same policy, identity and observer: the gateway builds the server
	// because authorization and call events must wrap every tool.
	Register func(*mcpserver.MCPServer) error
	// ControlSocket, if set, is where Serve offers the local control socket
	// (see ControlSocketFile): the live connections, and disconnecting them.
	// A socket that cannot be made is logged, not fatal.
	ControlSocket string

	// MaxConnections caps established sessions: connections whose
	// handshake succeeded (mcp.mtls.max_connections). One more waits at most
	// SlotWait for a slot to be released, and is refused then: before its
	// handshake when every slot is already taken at accept, else as soon as
	// its handshake completes, before it can send a request. At most
	// MaxHandshakes/8 connections wait at once (maxSlotWaiters); beyond
	// that one is refused at once, at accept when every slot is taken.
	MaxConnections int
	// MaxHandshakes caps connections still in their TLS handshake. It is a
	// budget of its own, not a share of MaxConnections: otherwise clients
	// that connect and stall (a handshake flood; issue 7) would fill every
	// session slot and lock everyone out for up to HandshakeTimeout. When it
	// is reached, a new connection cuts a pending handshake instead of being
	// refused: the oldest of the remote address (an IPv6 /64) that holds
	// the most if it holds more than an eighth of the budget, else the
	// oldest of all. A legitimate handshake completes in milliseconds, so
	// the oldest is almost certainly stalled, whoever arrives after a flood
	// still gets in, and a flood from one address cuts its own handshakes,
	// not another client's (pendingHandshakes), while one from many
	// addresses cannot single out clients that share one. Holding a slot
	// therefore takes a steady stream of new connections, not a pile of
	// idle ones. Default DefaultMaxHandshakes.
	MaxHandshakes    int
	HandshakeTimeout time.Duration
	// FirstByteTimeout bounds the wait for a connection's first byte after
	// its handshake: a client that handshakes and then says nothing would
	// otherwise hold a session slot forever. Default DefaultFirstByteTimeout.
	FirstByteTimeout time.Duration
	// SlotWait bounds how long a connection that finds its slots taken
	// waits for one being released before it is refused. Default
	// DefaultSlotWait.
	SlotWait time.Duration
	// MaxConnectionsPerClient caps the session slots one certificate (by
	// serial) holds at once (mcp.mtls.max_connections_per_client), so one
	// agent cannot take them all. Default DefaultMaxConnectionsPerClient;
	// above MaxConnections it is MaxConnections.
	MaxConnectionsPerClient int
	// OperatorReserve is how many of the MaxConnections slots only operator
	// certificates may take (mcp.mtls.operator_reserve), so that an operator
	// can always get in to revoke an agent that holds the rest. Zero takes
	// DefaultOperatorReserve, NoOperatorReserve keeps none; at most
	// MaxConnections-1 of it is kept, so someone else can still get in.
	OperatorReserve int
	// IdleTimeout ends a raw session that has received no message for this
	// long and has no request in flight (mcp.mtls.idle_timeout), freeing its
	// slot. 'nefia mcp connect' reconnects on the client's next message.
	// Default DefaultIdleTimeout.
	IdleTimeout     time.Duration
	MaxMessageBytes int
	// WriteTimeout bounds one write to a peer; a peer that stops reading
	// its responses loses its session after this long instead of pinning
	// request handlers. Default DefaultWriteTimeout.
	WriteTimeout   time.Duration
	RevocationPoll time.Duration
	ShutdownGrace  time.Duration
	// AllowedOrigins are the origins the HTTP transport serves besides the
	// gateway's own (mcp.mtls.allowed_origins; HTTPOptions.AllowedOrigins).
	AllowedOrigins []string

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
	watch *atomicfile.Watch // feeds certs and ca; nil: they stat
	audit *auditor          // nil: no audit trail
	// obs receives connection and call events: the log, the audit trail
	// (when there is one) and GatewayOptions.Observer.
	obs   observe.Observer
	authz *Authorizer
	// verified remembers chains already verified against the current CA,
	// so reconnections and resumptions skip the signature check.
	verified verifiedChains
	http     *HTTPTransport // Streamable HTTP at /mcp on the same port
	tlsCfg   *tls.Config    // the policy; ClientCAs is filled per CA version

	cfgMu   sync.Mutex
	cfgPool *x509.CertPool
	cfg     *tls.Config // tlsCfg with the current CA

	// established mirrors held for Count and the check at accept.
	established atomic.Int64

	handshakes *pendingHandshakes // at most MaxHandshakes

	// mu guards the connection table (see connState) and the slots.
	mu        sync.Mutex
	conns     map[*trackedConn]struct{} // every accepted connection, accept to close
	held      int                       // session slots taken (at most MaxConnections)
	perSerial map[string]int            // slots taken per certificate serial
	slotFreed chan struct{}             // closed at the next release; nil when nobody waits
	// slotWaiters counts connections waiting for a session slot (before
	// their handshake or after it); at most maxSlotWaiters.
	slotWaiters atomic.Int32
	serialWaits map[string]int // waiting places per certificate serial (enterWait), under mu
	handlers    sync.WaitGroup
	addr        atomic.Pointer[net.Addr]
	ready       chan struct{}
	readyOne    sync.Once
}

// NoOperatorReserve, as GatewayOptions.OperatorReserve, keeps no slot for
// operators (mcp.mtls.operator_reserve: 0).
const NoOperatorReserve = -1

// NewGateway checks the options, loads the CA and server certificate, and
// builds the MCP server every connection's session is served by.
func NewGateway(opts GatewayOptions) (*Gateway, error) {
	defaults.Set(&opts.MaxConnections, DefaultMaxConnections)
	defaults.Set(&opts.MaxHandshakes, DefaultMaxHandshakes)
	defaults.Set(&opts.WriteTimeout, DefaultWriteTimeout)
	defaults.Set(&opts.HandshakeTimeout, DefaultHandshakeTimeout)
	defaults.Set(&opts.FirstByteTimeout, DefaultFirstByteTimeout)
	defaults.Set(&opts.SlotWait, DefaultSlotWait)
	defaults.Set(&opts.MaxConnectionsPerClient, DefaultMaxConnectionsPerClient)
	switch opts.OperatorReserve {
	case 0:
		opts.OperatorReserve = DefaultOperatorReserve
	case NoOperatorReserve:
		opts.OperatorReserve = 0
	}
	defaults.Set(&opts.IdleTimeout, DefaultIdleTimeout)
	defaults.Set(&opts.MaxMessageBytes, DefaultMaxMessageBytes)
	defaults.Set(&opts.RevocationPoll, DefaultRevocationPoll)
	defaults.Set(&opts.ShutdownGrace, DefaultShutdownGrace)
	if opts.Clock == nil {
		opts.Clock = pki.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Revocations == nil {
		return nil, errors.New("server: gateway needs a revocation checker")
	}
	if opts.MaxConnections < 0 || opts.MaxHandshakes < 0 || opts.HandshakeTimeout < 0 || opts.MaxMessageBytes < 0 || opts.WriteTimeout < 0 ||
		opts.FirstByteTimeout < 0 || opts.MaxConnectionsPerClient < 0 || opts.OperatorReserve < 0 || opts.IdleTimeout < 0 {
		return nil, errors.New("server: gateway limits must be positive")
	}
	opts.MaxConnectionsPerClient = min(opts.MaxConnectionsPerClient, opts.MaxConnections)
	opts.OperatorReserve = min(opts.OperatorReserve, opts.MaxConnections-1)
	// One watch of the certificate files' directories for both reloaders
	// (issue 16 item 4); without one (not Linux, a symlink) they stat.
	watch, _ := atomicfile.NewWatch(opts.CACertFile, opts.CertFile, opts.KeyFile)
	ca, err := newReloader("CA certificate", opts.Logger, watch, func() (*x509.CertPool, error) { return loadCAPool(opts.CACertFile) }, opts.CACertFile)
	if err != nil {
		return nil, err
	}
	certs, err := newReloader("server certificate", opts.Logger, watch, loadKeyPair(opts.CertFile, opts.KeyFile), opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := opts.Revocations.Refresh(); err != nil {
		// Not fatal: handshakes fail closed until the store is fixed.
		opts.Logger.Error("revocation store unavailable: refusing all handshakes until it is fixed", "error", err)
	}
	g := &Gateway{
		opts:        opts,
		log:         opts.Logger,
		watch:       watch,
		certs:       certs,
		ca:          ca,
		handshakes:  newPendingHandshakes(opts.MaxHandshakes),
		conns:       map[*trackedConn]struct{}{},
		perSerial:   map[string]int{},
		serialWaits: map[string]int{},
		ready:       make(chan struct{}),
	}
	deps := opts.Tools
	deps.Sessions = g
	obs := observe.Multi{logObserver{opts.Logger}} // calls are counted per connection by callHooks
	if opts.Audit != nil {
		g.audit = newAuditor(opts.Audit, opts.Logger)
		obs = append(obs, g.audit)
	}
	if opts.Observer != nil {
		obs = append(obs, opts.Observer)
	}
	g.obs = obs
	g.authz = NewAuthorizer(opts.Policy)
	if g.mcp, err = NewMCPServerWithPolicy(deps, g.authz, opts.Logger, opts.Audit, g.obs); err != nil {
		return nil, err
	}
	g.addGatewayTools(g.mcp)
	if opts.Register != nil {
		if err := opts.Register(g.mcp); err != nil {
			return nil, fmt.Errorf("server: register tools: %w", err)
		}
	}
	g.http, err = NewHTTPTransport(g.mcp, HTTPOptions{
		Identify:        g.identify,
		ContextFunc:     func(ctx context.Context) context.Context { return g.authz.Enforcing(ctx, g.log) },
		MaxMessageBytes: opts.MaxMessageBytes,
		AllowedOrigins:  opts.AllowedOrigins,
		Refused: func(remote string, agent *identity.Agent, reason string, err error) {
			g.obs.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Agent: agent, Remote: remote,
				Transport: identity.TransportHTTP, Reason: reason, Err: err})
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
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			_, err := g.identifyAgainst(roots, &cs)
			return err
		}
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
	_, err := g.identify(&cs)
	return err
}

// identify is verifyConnection returning the identity the certificate
// carries, which its role check builds anyway. The HTTP transport re-runs
// it per request: a kept-alive connection can outlive its certificate's
// revocation or expiry.
func (g *Gateway) identify(cs *tls.ConnectionState) (identity.Agent, error) {
	pool, _, err := g.ca.get()
	if err != nil {
		return identity.Agent{}, &rejection{reason: ReasonOther, err: err}
	}
	return g.identifyAgainst(*pool, cs)
}

// identifyAgainst applies verifyConnection's policy with roots as the CA
// and returns the certificate's identity.
func (g *Gateway) identifyAgainst(roots *x509.CertPool, cs *tls.ConnectionState) (identity.Agent, error) {
	if len(cs.PeerCertificates) == 0 {
		return identity.Agent{}, &rejection{reason: ReasonNoCertificate, err: errors.New("no client certificate")}
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
			return identity.Agent{}, &rejection{reason: verifyReason(err, leaf, now), name: leaf.Subject.CommonName,
				serial: pki.FormatSerial(leaf.SerialNumber), unverified: true, err: err}
		}
	}
	if err := requireClientAuth(leaf); err != nil {
		return identity.Agent{}, rejected(ReasonBadUsage, err)
	}
	if err := g.opts.Revocations.Check(leaf); err != nil {
		if errors.Is(err, pki.ErrRevoked) {
			return identity.Agent{}, rejected(ReasonRevoked, err)
		}
		return identity.Agent{}, rejected(ReasonRevocationErr, err)
	}
	agent, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.Agent{}, rejected(ReasonNoRole, err)
	}
	return agent, nil
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
	return int(g.established.Load()) + g.handshakes.count()
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
	if path := g.opts.ControlSocket; path != "" {
		if cln, err := listenControl(ctx, path); err != nil {
			g.log.Warn("no control socket: 'nefia mtls sessions' cannot reach this gateway", "error", err)
		} else {
			pollerDone.Add(1)
			go func() {
				defer pollerDone.Done()
				g.serveControl(ctx, cln, path)
			}()
		}
	}
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
		// Every slot taken: the connection may wait for one, as one of at
		// most maxSlotWaiters, else it is refused here, before it takes a
		// pending-handshake place: a flood of connections while the
		// gateway is full must not cut handshakes in progress
		// (pendingHandshakes.begin cuts one when the places are taken).
		waiter := false
		if g.full() {
			if waiter = g.takeWaiter(); !waiter {
				conn.Close()
				g.limitReached(conn.RemoteAddr().String(), nil, &limitError{limit: limitMaxConnections, value: g.opts.MaxConnections})
				continue
			}
		}
		hsCtx, hs := g.handshakes.begin(ctx, addrKey(conn.RemoteAddr()))
		tc := g.track(conn)
		g.handlers.Add(1)
		go func() {
			defer g.handlers.Done()
			defer g.untrack(tc)
			g.handle(ctx, hsCtx, hs, tc, waiter)
		}()
	}
	cancel()
	ln.Close()
	g.shutdown()
	pollerDone.Wait()
	if g.watch != nil {
		g.watch.Close() // the reloaders stat from now on
	}
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
	g.closeAll(errShutdown)
	<-done
}

// limitReached reports a connection refused because a limit was reached
// (err, a *limitError, says which); who is nil when it was refused before
// its handshake.
func (g *Gateway) limitReached(remote string, who *identity.Agent, err error) {
	g.obs.Connection(observe.ConnEvent{Kind: observe.ConnRefused, Agent: who, Remote: remote,
		Transport: identity.TransportStream, Reason: ReasonLimit, Err: err})
}

// handle runs one connection, tracked in the table as tc: an explicit
// handshake under a deadline (hsCtx also ends it when the connection is cut
// to make room, see pendingHandshakes.begin), then, if the limits admit it,
// one MCP session until either side ends it. The connection's state in the table
// follows each step (see connState). waiter says the accept loop found
// every slot taken and gave the connection one of the waiting places
// (takeWaiter), which waitForSlot gives back.
func (g *Gateway) handle(ctx, hsCtx context.Context, hs *pendingHandshake, tc *trackedConn, waiter bool) {
	defer hs.cancel(nil)
	defer g.handshakes.end(hs)
	raw, remote := tc.raw, tc.remote
	if waiter && !g.waitForSlot(hsCtx) {
		// Every session slot is still taken: refused before a handshake is
		// spent on it. A racing handshake may still fill the last slot;
		// admission checks again when the handshake is done. Out of the
		// counts before the peer sees the close, as when it was refused in
		// the accept loop.
		g.handshakes.end(hs)
		g.untrack(tc)
		raw.Close()
		g.limitReached(remote, nil, &limitError{limit: limitMaxConnections, value: g.opts.MaxConnections})
		return
	}
	cfg, err := g.configForClient(nil)
	if err != nil {
		g.log.Error("connection rejected: no usable CA", "remote_addr", remote, "error", err)
		raw.Close()
		return
	}
	conn := tls.Server(raw, cfg)
	defer conn.Close()

	// The deadline bounds the handshake, and a cut to make room
	// (pendingHandshakes.begin) or the shutdown closes the connection: no
	// context, timer and watcher goroutine per handshake (issue 16 item 4),
	// which HandshakeContext would start.
	_ = raw.SetDeadline(time.Now().Add(g.opts.HandshakeTimeout))
	stopCut := context.AfterFunc(hsCtx, func() { raw.Close() })
	err = conn.Handshake()
	stopCut()
	if err != nil {
		if errors.Is(context.Cause(hsCtx), errEvicted) {
			err = &rejection{reason: ReasonLimit, err: errEvicted}
		}
		g.rejected(remote, err)
		return
	}
	_ = raw.SetDeadline(time.Time{})

	state := conn.ConnectionState()
	agent, err := identity.FromConnection(state, remote, identity.TransportStream)
	if err != nil { // verifyConnection already refused these
		g.rejected(remote, &rejection{reason: ReasonNoRole, err: err})
		return
	}

	// The session slot is taken only now, so a stalled handshake never
	// holds one. Taking it before leaving the pending list keeps Count from
	// dipping in between.
	if err := g.admitWithin(hsCtx, tc, agent, state); err != nil {
		g.handshakes.end(hs)
		g.limitReached(remote, &agent, err)
		return
	}
	g.handshakes.end(hs)
	// From admission on, revocation finds the connection by serial. Check
	// once more, so that one revoked (or a CA replaced) between the
	// handshake's check and the admission is not missed.
	if err := g.verifyConnection(state); err != nil {
		g.rejected(remote, err)
		return
	}
	g.log.Debug("connection admitted, awaiting its first message", "name", agent.Name, "serial", agent.Serial, "remote_addr", remote)

	fbCtx, cancel := context.WithTimeoutCause(ctx, g.opts.FirstByteTimeout, errFirstByteTimeout)
	isHTTP, sconn, err := SniffHTTP(fbCtx, conn)
	cancel()
	if err != nil {
		g.endedSilent(tc, agent, err)
		return
	}
	if isHTTP {
		g.serveHTTP(ctx, tc, sconn, agent)
		return
	}
	// The raw stream has no per-request check as HTTP has: judge the
	// certificate again now that it speaks, which may be long after the
	// handshake.
	if err := g.verifyConnection(state); err != nil {
		g.rejected(remote, err)
		return
	}
	sess, err := NewStreamSession(sconn, g.mcp, StreamOptions{
		MaxMessageBytes: g.opts.MaxMessageBytes,
		WriteTimeout:    g.opts.WriteTimeout,
		IdleTimeout:     g.opts.IdleTimeout,
		DirectWrites:    true, // TLS over TCP: the kernel buffers writes
		Logger:          g.log,
		// Captures agent, whose SessionID is filled in below before Serve.
		ContextFunc: func(ctx context.Context) context.Context {
			return g.authz.Enforcing(identity.WithAgent(withActivity(ctx, tc.act), agent), g.log)
		},
	})
	if err != nil {
		g.log.Error("session setup failed", "error", err)
		return
	}
	agent.SessionID = sess.SessionID()
	tc.setSession(agent.SessionID)
	// A revoked session, or one whose CA was replaced, answers what it is
	// already running (at most revokeGrace) but reads nothing more; every
	// other cause ends it now. The CA case matters for the operator whose
	// nefia.mtls.init --force replaced it: the answer carries the new CA,
	// and the CA watch can see the change before the tool has answered.
	closer := func(cause error) {
		if errors.Is(cause, errRevoked) || errors.Is(cause, errCAReplaced) {
			sess.Finish(cause, revokeGrace)
			return
		}
		sess.kill(cause)
	}
	if !tc.enter(stateRaw, closer) {
		return // closed (revoked) since the check above
	}

	// A certificate that expires mid-session ends the session at NotAfter.
	expiry := time.AfterFunc(agent.NotAfter.Sub(g.opts.Clock.Now()), func() { sess.kill(errCertExpired) })
	defer expiry.Stop()

	g.obs.Connection(observe.ConnEvent{Kind: observe.ConnOpened, Agent: &agent, Remote: remote})
	start := time.Now()
	err = sess.Serve(ctx)
	g.closed(&agent, remote, err, time.Since(start))
}

// closed reports the end of an admitted connection with why it ended.
func (g *Gateway) closed(agent *identity.Agent, remote string, err error, lasted time.Duration) {
	reason := closeReason(err)
	e := observe.ConnEvent{Kind: observe.ConnClosed, Agent: agent, Remote: remote, Reason: reason, Duration: lasted}
	if reason == ReasonCloseError {
		e.Err = err
	}
	g.obs.Connection(e)
}

// endedSilent reports a connection that ended before its first byte: the
// first-byte deadline passed, it was revoked (or its CA replaced) while
// silent, or the peer went away. A peer that went away is logged only,
// not audited: it never spoke.
func (g *Gateway) endedSilent(tc *trackedConn, agent identity.Agent, err error) {
	cause := tc.closedBy()
	switch {
	case cause != nil:
	case errors.Is(err, errFirstByteTimeout):
		cause = errFirstByteTimeout
	default:
		g.log.Info("connection closed before its first message", "name", agent.Name, "serial", agent.Serial, "remote_addr", tc.remote, "error", err)
		return
	}
	g.closed(&agent, tc.remote, cause, 0)
}

// rejected reports a failed handshake with its reason and, when a
// certificate was presented, its name and serial. A certificate whose chain
// did not verify proves nothing: its name is cut to the longest valid name
// (a 200,000-character CN once cost 1.2 MB of trail per handshake) and the
// event marks it unverified.
func (g *Gateway) rejected(remote string, err error) {
	e := observe.ConnEvent{Kind: observe.ConnRefused, Remote: remote, Transport: identity.TransportStream,
		Reason: handshakeReason(err), Err: err}
	var rj *rejection
	if errors.As(err, &rj) {
		e.Reason, e.Unverified = rj.reason, rj.unverified
		if rj.serial != "" {
			e.Agent = &identity.Agent{Name: rj.name, Serial: rj.serial, Transport: identity.TransportStream}
			if rj.unverified {
				e.Agent.Name, e.Agent.Serial = audit.Clip(rj.name, maxUnverifiedName), audit.Clip(rj.serial, maxUnverifiedName)
			}
		}
	}
	g.obs.Connection(e)
}

// Bounds on what a refused peer gets into logs and the trail: names nefia
// issues are at most 64 characters, so a longer unverified one was never
// ours; handshake errors may quote what the peer sent.
const (
	maxUnverifiedName = 64
	maxLoggedError    = 512
)

// CloseSerial ends every connection of the certificate with this serial
// (canonical form), whatever its state (see connState), ends the HTTP
// sessions it created, and returns how many connections it closed. Their
// session slots are free once their goroutines have returned. The count
// includes the connections the revocation watch closed for this serial
// before it (issue 16: the watch sees a revocation by the tool within
// milliseconds, often before the tool's own CloseSerial), each once: the
// count is a mark on each connection (trackedConn.counted), not a table
// of its own.
func (g *Gateway) CloseSerial(serial string) int {
	g.closeSerial(serial)
	return g.countRevoked(serial)
}

// closeSerial is CloseSerial without the count, for the revocation watch.
func (g *Gateway) closeSerial(serial string) {
	victims := g.admitted(func(a identity.Agent) bool { return a.Serial == serial })
	for _, tc := range victims {
		g.closeConn(tc, errRevoked)
	}
	// Ends the HTTP sessions bound to the serial; its connections are
	// closed above already.
	g.http.CloseSerial(serial)
}

// serveHTTP serves one connection as MCP Streamable HTTP; identity is taken
// again from the connection's certificate on every request.
func (g *Gateway) serveHTTP(ctx context.Context, tc *trackedConn, conn net.Conn, agent identity.Agent) {
	agent.Transport = identity.TransportHTTP
	ctx, cancel := context.WithCancelCause(withActivity(ctx, tc.act))
	defer cancel(nil)
	if !tc.enter(stateHTTP, cancel) {
		conn.Close()
		return
	}
	g.obs.Connection(observe.ConnEvent{Kind: observe.ConnOpened, Agent: &agent, Remote: agent.RemoteAddr})
	start := time.Now()
	err := g.http.ServeConn(ctx, conn)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // closed by the gateway: say why (revoked, CA replaced, shutdown)
	}
	g.closed(&agent, agent.RemoteAddr, err, time.Since(start))
}

// pollRevocations closes connections, in any state (see connState), whose
// certificate was revoked by another process (the CLI), or no longer chains
// to the CA after the CA was replaced. One stat per file per tick; files are
// re-read only when they changed.
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
	_, caSeen, _ := g.ca.get()               // the CA the connections were admitted under
	var changed <-chan struct{}              // nil: poll only
	if n, ok := g.opts.Revocations.(revocationsNotifier); ok {
		changed = n.Changed()
	} else if w, ok := g.opts.Revocations.(revocationsWatcher); ok {
		changed = w.Watch(ctx)
	}
	swept := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed: // a shared store's watch saw a revocation: re-judge now
		}
		if time.Since(swept) >= SweepEvery {
			swept = time.Now()
			g.http.SweepSessions() // abandoned HTTP sessions (attack item 4)
		}
		err := g.opts.Revocations.Refresh()
		switch {
		case err != nil && (storeErr == nil || err.Error() != storeErr.Error()):
			g.log.Error("revocation store unavailable: refusing all new handshakes until it is fixed",
				"file", storeName(g.opts.Revocations), "error", err)
		case err == nil && storeErr != nil:
			g.log.Info("revocation store readable again: accepting handshakes", "file", storeName(g.opts.Revocations))
		}
		storeErr = err
		pool, caGen, _ := g.ca.get()
		caChanged := caGen != caSeen
		caSeen = caGen
		// Every admitted connection, whatever its state: one map look-up
		// each per tick, and a chain verification each only when the CA
		// changed.
		revoked := map[string]bool{}
		for _, tc := range g.admitted(nil) {
			_, agent, cs, ok := tc.snapshot()
			if !ok {
				continue // ended since
			}
			leaf := cs.PeerCertificates[0]
			if r, err := g.opts.Revocations.IsRevoked(leaf.SerialNumber); err == nil && r {
				revoked[agent.Serial] = true
				continue
			}
			if caChanged && !chainsTo(leaf, *pool, g.opts.Clock.Now()) {
				g.closeConn(tc, errCAReplaced)
			}
		}
		for serial := range revoked {
			g.closeSerial(serial)
		}
		g.countRevoked("") // drops the traces no CloseSerial claimed
	}
}

func chainsTo(leaf *x509.Certificate, roots *x509.CertPool, now time.Time) bool {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}
