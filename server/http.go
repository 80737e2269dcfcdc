package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/defaults"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

// HTTP transport defaults.
const (
	// DefaultHTTPSessionIdleTTL is how long an HTTP session id stays valid
	// without being used.
	DefaultHTTPSessionIdleTTL = 30 * time.Minute
	// DefaultHTTPMaxSessionsPerCert caps the HTTP sessions one certificate
	// holds at once; initializing one more forgets its least recently used.
	DefaultHTTPMaxSessionsPerCert = 32
	// DefaultHTTPReadHeaderTimeout bounds reading a request's headers, and
	// DefaultHTTPBodyTimeout its body, so a client that trickles bytes does
	// not hold one of the gateway's connection slots.
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPBodyTimeout       = 30 * time.Second
	// DefaultHTTPIdleTimeout closes a keep-alive connection with no request
	// in progress, which would otherwise hold a connection slot for nothing.
	DefaultHTTPIdleTimeout = 2 * time.Minute
	// DefaultHTTPMaxStreams caps concurrent HTTP/2 requests on one
	// connection, like StreamOptions.MaxInFlight on the raw stream.
	DefaultHTTPMaxStreams = 64
	// httpReceiveWindow is the HTTP/2 flow-control window of a connection
	// and of each of its streams: what the peer may send that no handler
	// has read yet. Go's default, stated here because the per-connection
	// memory bound counts on it.
	httpReceiveWindow = 1 << 20
	// httpMaxFrame is the largest HTTP/2 frame the gateway reads: the
	// protocol's initial SETTINGS_MAX_FRAME_SIZE (RFC 9113, 6.5.2), which is
	// also what one TLS record carries. Go's default of 1 MiB buys nothing
	// here and makes a Go client keep a 512 KiB buffer per request body.
	httpMaxFrame = 16 << 10
	// httpFirstBodyBuffer and httpBodyChunk size the buffers a body of
	// undeclared length is read into: the first is small, as most messages
	// are; each next one is twice the last, up to httpBodyChunk. None is
	// copied into the next, so a growing body makes no garbage.
	httpFirstBodyBuffer = 4 << 10
	httpBodyChunk       = 64 << 10
)

// MCPPath is the one URL path the HTTP transport serves.
const MCPPath = "/mcp"

const headerSessionID = mcpserver.HeaderKeySessionID

// Log keys of the HTTP transport.
const (
	httpLogName    = "name"
	httpLogSerial  = "serial"
	httpLogRemote  = "remote_addr"
	httpLogSession = "session_id"
	httpLogError   = "error"
	httpLogReason  = "reason"
	httpLogLimit   = "limit_bytes"
)

// HTTPOptions configure an HTTPTransport. Zero durations and sizes take the
// defaults above.
type HTTPOptions struct {
	// Identify builds the caller of one request from the TLS state of its
	// connection, and must fail for a certificate that is no longer
	// acceptable (revoked since the handshake). It is called for every
	// request: the identity always comes from the verified chain, never
	// from a session id. Required.
	Identify func(*tls.ConnectionState) (identity.Agent, error)
	// ContextFunc, if set, derives each request's context once the
	// caller's identity is in it (the gateway adds its policy enforcer).
	ContextFunc func(context.Context) context.Context

	// MaxMessageBytes caps one request body (one JSON-RPC message). mcp-go
	// reads the whole body into memory with no limit of its own; a larger
	// body is answered 413. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxInFlightBytes caps the request bodies one connection holds at
	// once, across all its HTTP/2 streams, as StreamOptions.MaxInFlightBytes
	// does for a raw session: without it one connection could make the
	// gateway buffer MaxStreams bodies of MaxMessageBytes (64 × 4 MiB; issue
	// 10, TestHTTPConnectionMemoryBound). A body's room is taken before any
	// of it is buffered and given back once its request is answered: its
	// declared length, or for a body of undeclared length (rare: clients
	// declare it for a JSON message) the whole message cap while it is read,
	// then what it used. A request that finds no room is answered 503 with
	// Retry-After at once, its body unread. It does not wait: HTTP/2 flow
	// control is shared by the connection's streams, so bodies left unread
	// while they wait could stall the very request holding the room until
	// its body timeout. HTTP/1.1, one request at a time, never sees a 503.
	// It must be at least MaxMessageBytes, so that a message at the cap
	// always fits alone. Default MaxMessageBytes.
	MaxInFlightBytes int

	// SessionIdleTTL ends an HTTP session unused for this long (clients
	// that never send DELETE would otherwise keep their state forever).
	SessionIdleTTL time.Duration
	// MaxSessionsPerCert bounds the sessions one certificate holds.
	MaxSessionsPerCert int
	// ReadHeaderTimeout, BodyTimeout and IdleTimeout bound a request's
	// headers, its body, and a keep-alive connection between requests.
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxStreams caps concurrent requests on one HTTP/2 connection.
	MaxStreams int

	// AllowedOrigins lists the origins (scheme://host[:port]) whose
	// requests are served besides the gateway's own; a request with any
	// other Origin header is refused 403 (see originPolicy for the rule,
	// which the MCP specification requires). mcp.mtls.allowed_origins.
	AllowedOrigins []string

	// Refused, if set, is told of every request refused for who sent it
	// (403), or for its size (413), so the gateway can audit it as it audits
	// refused handshakes. agent is nil when no certificate was presented.
	Refused func(remote string, agent *identity.Agent, reason string, err error)

	// Clock decides when a certificate has expired mid-connection. Nil is
	// the system clock.
	Clock  pki.Clock
	Logger *slog.Logger
}

// Reasons an HTTP request is refused, besides the handshake's (Reason*).
const (
	ReasonForeignSession = "session of another certificate"
	ReasonTooLarge       = "message too large"
)

// HTTPTransport serves MCP Streamable HTTP at /mcp on connections the
// gateway has already accepted and verified. mcp-go's StreamableHTTPServer
// does the protocol; this type adds what mcp-go leaves to its host:
//
//   - identity from each request's verified certificate, re-checked per
//     request, so a certificate revoked on a keep-alive connection fails at
//     its next request (403) instead of riding the handshake it made earlier;
//   - the binding of each Mcp-Session-Id to the certificate that initialized
//     it: a session id is a bearer token in mcp-go, so a leaked id presented
//     by another certificate would otherwise join that session (403);
//   - a cap on the request body, which mcp-go reads without limit (413);
//   - nothing but 404 for any other path, and no session to guess.
//
// mcp-go's Start and WithTLSCert are not used: they cannot require client
// certificates.
type HTTPTransport struct {
	opts    HTTPOptions
	log     *slog.Logger
	mcp     *mcpserver.StreamableHTTPServer
	origins originPolicy

	mu       sync.Mutex
	sessions map[string]*boundSession // Mcp-Session-Id -> the certificate that made it
	uses     uint64                   // counts session uses
	conns    map[*httpConn]struct{}
}

// boundSession is an HTTP session id and the certificate it belongs to.
type boundSession struct {
	fingerprint string
	serial      string
	lastUsed    time.Time
	notAfter    time.Time // the certificate's expiry: SweepSessions ends the session then
	use         uint64    // order of last use, for least-recently-used eviction
	// done is closed when the session leaves the table (DELETE, expiry,
	// eviction, revocation): identity.SessionDone of its requests.
	done chan struct{}
}

// httpConn is one connection being served by ServeConn.
type httpConn struct {
	agent  identity.Agent
	state  tls.ConnectionState
	srv    *http.Server
	budget byteBudget // bytes of the bodies its requests hold (MaxInFlightBytes)

	mu      sync.Mutex
	cause   error // why the transport closed it; nil while open
	active  int   // requests in their handler
	idle    chan struct{}
	waiting bool
}

// NewHTTPTransport returns a transport serving srv. Call ServeConn for each
// connection the gateway routes to HTTP.
func NewHTTPTransport(srv *mcpserver.MCPServer, opts HTTPOptions) (*HTTPTransport, error) {
	if srv == nil || opts.Identify == nil {
		return nil, errors.New("server: http transport needs an MCP server and an Identify function")
	}
	if opts.MaxMessageBytes < 0 || opts.MaxInFlightBytes < 0 || opts.SessionIdleTTL < 0 || opts.MaxSessionsPerCert < 0 || opts.ReadHeaderTimeout < 0 ||
		opts.BodyTimeout < 0 || opts.IdleTimeout < 0 || opts.MaxStreams < 0 {
		return nil, errors.New("server: http transport limits must be positive")
	}
	defaults.Set(&opts.MaxMessageBytes, DefaultMaxMessageBytes)
	defaults.Set(&opts.MaxInFlightBytes, opts.MaxMessageBytes)
	if opts.MaxInFlightBytes < opts.MaxMessageBytes {
		return nil, fmt.Errorf("server: http option MaxInFlightBytes is %d, must be at least MaxMessageBytes (%d)", opts.MaxInFlightBytes, opts.MaxMessageBytes)
	}
	defaults.Set(&opts.SessionIdleTTL, DefaultHTTPSessionIdleTTL)
	defaults.Set(&opts.MaxSessionsPerCert, DefaultHTTPMaxSessionsPerCert)
	defaults.Set(&opts.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	defaults.Set(&opts.BodyTimeout, DefaultHTTPBodyTimeout)
	defaults.Set(&opts.IdleTimeout, DefaultHTTPIdleTimeout)
	defaults.Set(&opts.MaxStreams, DefaultHTTPMaxStreams)
	if opts.Clock == nil {
		opts.Clock = pki.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	origins, err := newOriginPolicy(opts.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	h := &HTTPTransport{
		opts:     opts,
		log:      opts.Logger,
		origins:  origins,
		sessions: map[string]*boundSession{},
		conns:    map[*httpConn]struct{}{},
	}
	// No WithSessionIdleTTL: its sweeper is a goroutine per server that only
	// Shutdown stops. Idle sessions are ended by forget instead, which runs
	// when a session is created.
	h.mcp = mcpserver.NewStreamableHTTPServer(srv,
		mcpserver.WithSessionIdManager(sessionIDs{h}),
		mcpserver.WithStreamableHTTPLogger(opts.Logger),
	)
	return h, nil
}

// ServeConn serves HTTP/1.1 or HTTP/2 (chosen by ALPN) on one connection
// whose TLS handshake the gateway has completed and verified, until the
// peer closes it, ctx ends, or the transport closes it (CloseSerial, or the
// certificate's expiry). conn must be a *tls.Conn or carry its
// ConnectionState, as SniffHTTP's result does. ServeConn closes conn and
// returns only after every request handler on it has returned: nil when
// the peer closed the connection, ctx's cause when ctx ended, and an error
// wrapping ErrSessionClosed when the transport closed it.
func (h *HTTPTransport) ServeConn(ctx context.Context, conn net.Conn) error {
	cs, ok := conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		conn.Close()
		return errors.New("server: http: connection is not TLS")
	}
	state := cs.ConnectionState()
	agent, err := h.identify(&state)
	if err != nil {
		conn.Close()
		return fmt.Errorf("server: http: %w", err)
	}
	agent.RemoteAddr = conn.RemoteAddr().String()

	hc := &httpConn{agent: agent, state: state, idle: make(chan struct{}), budget: newByteBudget(h.opts.MaxInFlightBytes)}
	ln := newOneConnListener(conn)
	// What one connection can make the gateway hold: the bodies of its
	// requests (MaxInFlightBytes, shared by all its streams), what the peer
	// sent that no handler has read yet (one receive window, shared too),
	// one frame being read, and the headers of at most MaxStreams requests.
	h2 := &http.HTTP2Config{
		MaxConcurrentStreams:          h.opts.MaxStreams,
		MaxReceiveBufferPerConnection: httpReceiveWindow,
		MaxReceiveBufferPerStream:     httpReceiveWindow,
		MaxReadFrameSize:              httpMaxFrame,
	}
	hc.srv = &http.Server{
		Handler:           hc.track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveHTTP(w, r, &hc.budget) })),
		ReadHeaderTimeout: h.opts.ReadHeaderTimeout,
		IdleTimeout:       h.opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             h2,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				// http.Server.Close closes the connections it tracks; one
				// it starts tracking just after (ctx ended as ServeConn
				// began) is closed here instead.
				if hc.closing() {
					c.Close()
				}
			case http.StateClosed, http.StateHijacked:
				ln.finish()
			}
		},
	}

	h.mu.Lock()
	h.conns[hc] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, hc)
		h.mu.Unlock()
	}()

	stopWatch := context.AfterFunc(ctx, func() { hc.close(context.Cause(ctx)) })
	defer stopWatch()
	// A certificate that expires mid-connection ends it at NotAfter, as on
	// the raw stream.
	if !agent.NotAfter.IsZero() {
		expiry := time.AfterFunc(agent.NotAfter.Sub(h.opts.Clock.Now()), func() {
			h.log.Info("http connection closed: certificate expired", httpLogName, agent.Name, httpLogSerial, agent.Serial)
			hc.close(fmt.Errorf("%w: certificate expired", ErrSessionClosed))
		})
		defer expiry.Stop()
	}

	h.log.Debug("http connection open", httpLogName, agent.Name, httpLogSerial, agent.Serial, httpLogRemote, agent.RemoteAddr)
	_ = hc.srv.Serve(ln) // returns once the connection is done or the server closed
	if !ln.accepted() {
		conn.Close()
	} else {
		<-ln.done
	}
	hc.srv.Close()
	hc.wait() // HTTP/2 runs handlers on goroutines of their own
	h.log.Debug("http connection closed", httpLogName, agent.Name, httpLogSerial, agent.Serial, httpLogRemote, agent.RemoteAddr)
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.cause
}

// CloseSerial closes every HTTP connection of the certificate with this
// serial (canonical form), which ends its open SSE streams and cancels its
// requests in progress, ends the HTTP sessions that certificate created, and
// returns how many connections it closed. The gateway calls it when the
// serial is revoked; the next request on any other connection fails anyway,
// because Identify is asked again for every request.
func (h *HTTPTransport) CloseSerial(serial string) int {
	h.mu.Lock()
	var victims []*httpConn
	for hc := range h.conns {
		if hc.agent.Serial == serial {
			victims = append(victims, hc)
		}
	}
	var ids []string
	for id, b := range h.sessions {
		if b.serial == serial {
			ids = append(ids, id)
		}
	}
	h.mu.Unlock()
	for _, hc := range victims {
		h.log.Info("http connection closed: certificate revoked", httpLogName, hc.agent.Name, httpLogSerial, serial, httpLogRemote, hc.agent.RemoteAddr)
		hc.close(fmt.Errorf("%w: certificate revoked", ErrSessionClosed))
	}
	for _, id := range ids {
		h.endSession(id)
	}
	return len(victims)
}

// Recheck asks Identify again about every open connection and closes those
// it now refuses (revoked by another process, CA replaced, expired),
// returning how many. Requests already fail once their certificate is
// refused; this also ends open SSE streams and idle keep-alive connections,
// which send no request to fail. The gateway calls it from its revocation
// poll.
func (h *HTTPTransport) Recheck() int {
	h.mu.Lock()
	conns := make([]*httpConn, 0, len(h.conns))
	for hc := range h.conns {
		conns = append(conns, hc)
	}
	h.mu.Unlock()
	var n int
	for _, hc := range conns {
		if _, err := h.identify(&hc.state); err != nil {
			h.log.Info("http connection closed: certificate no longer accepted", httpLogName, hc.agent.Name, httpLogSerial, hc.agent.Serial,
				httpLogReason, refusalReason(err), httpLogError, err)
			hc.close(fmt.Errorf("%w: %v", ErrSessionClosed, err))
			n++
		}
	}
	return n
}

// Count returns the number of connections being served.
func (h *HTTPTransport) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// identify asks the gateway who holds this connection's certificate and
// refuses one past its NotAfter.
func (h *HTTPTransport) identify(state *tls.ConnectionState) (identity.Agent, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return identity.Agent{}, errNoCertificate
	}
	agent, err := h.opts.Identify(state)
	if err != nil {
		return identity.Agent{}, err
	}
	if !agent.NotAfter.IsZero() && !h.opts.Clock.Now().Before(agent.NotAfter) {
		return identity.Agent{}, errExpired
	}
	agent.Transport = identity.TransportHTTP
	return agent, nil
}

// serveHTTP is the policy in front of mcp-go, run for every request.
// budget is the in-flight byte budget of the request's connection.
func (h *HTTPTransport) serveHTTP(w http.ResponseWriter, r *http.Request, budget *byteBudget) {
	if r.URL.Path != MCPPath {
		// Nothing useful: no body, no hint of what is served where.
		w.WriteHeader(http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Method == http.MethodPost {
		// A message for mcp-go: see there. First, so that the checks
		// below, identify's above all, do not grow the stack once more.
		presizeStack()
	}
	if err := h.origins.check(r); err != nil {
		h.refuse(r, presented(r.TLS), ReasonOrigin, err)
		http.Error(w, "forbidden origin", http.StatusForbidden)
		return
	}
	agent, err := h.identify(r.TLS)
	if err != nil {
		h.refuse(r, presented(r.TLS), refusalReason(err), err)
		// The connection is of no more use to anyone: end it after this.
		w.Header().Set("Connection", "close")
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	agent.RemoteAddr = r.RemoteAddr

	sid := r.Header.Get(headerSessionID)
	var sessionDone <-chan struct{}
	if sid != "" {
		switch owner, err := h.checkSession(sid, agent); {
		case errors.Is(err, errForeignSession):
			h.refuse(r, &agent, ReasonForeignSession, fmt.Errorf("session %s belongs to serial %s", sid, owner))
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		case err != nil:
			// 404 is how Streamable HTTP tells a client to initialize again.
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		agent.SessionID = sid
		if sessionDone = h.sessionDone(sid); sessionDone == nil { // ended just now
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
	}

	if r.Method == http.MethodPost {
		body, n, held, status := h.readBody(w, r, budget)
		// Held until mcp-go has answered: it copies the body and parses it,
		// and the answer may echo it.
		defer budget.release(held)
		switch status {
		case 0:
		case http.StatusServiceUnavailable:
			// The connection's other requests hold its budget: this one
			// may be sent again once they are answered. Not a refusal of
			// who sent it, so not audited, and the connection stays open.
			h.log.Info("http request deferred: connection's in-flight bytes budget is in use",
				httpLogName, agent.Name, httpLogSerial, agent.Serial, httpLogRemote, r.RemoteAddr, httpLogLimit, h.opts.MaxInFlightBytes)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many request bytes in flight on this connection", status)
			return
		default:
			if status == http.StatusRequestEntityTooLarge {
				h.refuse(r, &agent, ReasonTooLarge, fmt.Errorf("request body over %d bytes", h.opts.MaxMessageBytes))
			}
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(status), status)
			return
		}
		r.Body = io.NopCloser(body)
		r.ContentLength = int64(n)
	}

	// A POST carries one message: its own authorization decision slot.
	ctx := identity.WithAgent(r.Context(), agent)
	if h.opts.ContextFunc != nil {
		ctx = h.opts.ContextFunc(ctx)
	}
	ctx = policy.WithSlot(ctx)
	if sessionDone != nil {
		ctx = identity.WithSessionDone(ctx, sessionDone)
	}
	r = r.WithContext(ctx)
	if sid == "" && r.Method == http.MethodPost {
		// Only an initialize response carries a new session id: bind it to
		// this certificate before a byte of it reaches the client, so there is
		// no moment at which the id is known and unbound.
		w = &bindingWriter{ResponseWriter: w, bind: func(id string) { h.bindSession(id, agent) }}
	}
	// A DELETE reaches sessionIDs.Terminate, which forgets the binding.
	h.mcp.ServeHTTP(w, r)
}

// refuse logs a refused request and tells Refused.
func (h *HTTPTransport) refuse(r *http.Request, agent *identity.Agent, reason string, err error) {
	attrs := []any{httpLogRemote, r.RemoteAddr, httpLogReason, reason, httpLogError, err}
	if agent != nil {
		attrs = append(attrs, httpLogName, agent.Name, httpLogSerial, agent.Serial)
	}
	h.log.Warn("http request refused", attrs...)
	if h.opts.Refused != nil {
		h.opts.Refused(r.RemoteAddr, agent, reason, err)
	}
}

// presented names the certificate a refused request came with, if any.
func presented(state *tls.ConnectionState) *identity.Agent {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil
	}
	leaf := state.PeerCertificates[0]
	return &identity.Agent{Name: leaf.Subject.CommonName, Serial: pki.FormatSerial(leaf.SerialNumber), Transport: identity.TransportHTTP}
}

// refusalReason classifies why Identify refused a certificate.
func refusalReason(err error) string {
	var rj *rejection
	switch {
	case errors.As(err, &rj):
		return rj.reason
	case errors.Is(err, pki.ErrRevoked):
		return ReasonRevoked
	case errors.Is(err, pki.ErrRevocationUnavailable):
		return ReasonRevocationErr
	case errors.Is(err, identity.ErrNoRole):
		return ReasonNoRole
	case errors.Is(err, errExpired):
		return ReasonExpired
	case errors.Is(err, errNoCertificate):
		return ReasonNoCertificate
	}
	return ReasonOther
}

// readBody reads a POST body under MaxMessageBytes and BodyTimeout, taking
// room for it from budget before any of it is buffered: its declared
// length, or else the message cap until it ends, when what it did not use is
// given back. It returns the body, its length and the bytes it holds of
// budget, which the caller gives back once the request is answered; or an
// HTTP status instead (and nothing held) when the body is refused: 413 over
// the message cap, 503 when budget has no room, 400 when it cannot be read.
func (h *HTTPTransport) readBody(w http.ResponseWriter, r *http.Request, budget *byteBudget) (io.Reader, int, int, int) {
	limit := h.opts.MaxMessageBytes
	if r.ContentLength > int64(limit) {
		return nil, 0, 0, http.StatusRequestEntityTooLarge
	}
	reserved, size := limit, min(httpFirstBodyBuffer, limit)
	if r.ContentLength >= 0 {
		reserved, size = int(r.ContentLength), int(r.ContentLength)
	}
	// Taking all of the room at once, not as the body grows, means a
	// refused request has allocated nothing: many streams growing side by
	// side would each buffer part of a body only to be refused, garbage
	// that made the gateway's heap twice what it held.
	if !budget.tryAcquire(reserved) {
		return nil, 0, 0, http.StatusServiceUnavailable
	}
	var (
		parts []io.Reader
		buf   = make([]byte, 0, size) // being filled
		used  = size                  // the capacity of every buffer, at most reserved
		total int
	)
	done := func() (io.Reader, int, int, int) {
		budget.release(reserved - used)
		return io.MultiReader(append(parts, bytes.NewReader(buf))...), total, used, 0
	}
	refuse := func(status int) (io.Reader, int, int, int) {
		budget.release(reserved)
		return nil, 0, 0, status
	}

	defer h.bodyDeadline(w, r)()
	src := http.MaxBytesReader(w, r.Body, int64(limit))
	for {
		if len(buf) == cap(buf) {
			// Full: is there more? One byte tells, without allocating for
			// a body that has ended.
			var probe [1]byte
			n, err := io.ReadFull(src, probe[:])
			switch {
			case errors.Is(err, io.EOF):
				return done()
			case err != nil:
				return refuse(bodyStatus(err))
			case used == reserved:
				// More than declared (net/http stops a body at its
				// Content-Length, so this is belt and braces).
				return refuse(http.StatusBadRequest)
			}
			parts = append(parts, bytes.NewReader(buf))
			next := min(max(2*cap(buf), httpFirstBodyBuffer), httpBodyChunk, reserved-used)
			used += next
			buf = append(make([]byte, 0, next), probe[:n]...)
			total += n
		}
		n, err := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		total += n
		switch {
		case errors.Is(err, io.EOF):
			return done()
		case err != nil:
			return refuse(bodyStatus(err))
		}
	}
}

// bodyDeadline bounds the reading of r's body by BodyTimeout until the
// returned func is called.
//
// HTTP/1.1: a read deadline on the connection, cleared when done (the
// server keeps reading the connection in the background to notice a client
// that goes away, and a deadline left set would cancel a long SSE response
// when it passes).
//
// HTTP/2: a stream's read deadline is set and cleared by messages to the
// connection's serve goroutine, two wake-ups of it per request for a body
// that is almost always in already. Instead a timer sets a deadline in the
// past when it fires (which ends the body's reads at once, on the timer's
// goroutine) and costs nothing otherwise. The lock keeps a late firing
// from touching the stream once the caller is done with it: after the
// handler returns, its ResponseWriter is recycled.
func (h *HTTPTransport) bodyDeadline(w http.ResponseWriter, r *http.Request) (done func()) {
	rc := http.NewResponseController(w)
	if r.ProtoMajor != 2 {
		_ = rc.SetReadDeadline(time.Now().Add(h.opts.BodyTimeout))
		return func() { _ = rc.SetReadDeadline(time.Time{}) }
	}
	var (
		mu      sync.Mutex
		stopped bool
	)
	t := time.AfterFunc(h.opts.BodyTimeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			_ = rc.SetReadDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		t.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

// bodyStatus is the answer to a body that could not be read.
func bodyStatus(err error) int {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

var (
	errForeignSession = errors.New("session belongs to another certificate")
	errUnknownSession = errors.New("unknown session")
	errExpired        = errors.New("certificate expired")
	errNoCertificate  = errors.New("no client certificate")
)

// checkSession reports whether agent may use session id sid; on
// errForeignSession it also returns the owner's serial for the log.
func (h *HTTPTransport) checkSession(sid string, agent identity.Agent) (string, error) {
	now := h.opts.Clock.Now()
	h.mu.Lock()
	b, ok := h.sessions[sid]
	switch {
	case !ok:
		h.mu.Unlock()
		return "", errUnknownSession
	case subtle.ConstantTimeCompare([]byte(b.fingerprint), []byte(agent.Fingerprint)) != 1:
		h.mu.Unlock()
		return b.serial, errForeignSession
	case now.Sub(b.lastUsed) > h.opts.SessionIdleTTL:
		h.mu.Unlock()
		h.endSession(sid)
		return "", errUnknownSession
	}
	h.uses++
	b.lastUsed, b.use = now, h.uses
	h.mu.Unlock()
	return "", nil
}

// bindSession records that agent's certificate created session id, ends
// that certificate's least recently used session beyond
// MaxSessionsPerCert, and ends every session idle for longer than
// SessionIdleTTL. Sessions are only ever added here, so doing the cleanup
// here bounds the table without a goroutine of its own.
func (h *HTTPTransport) bindSession(id string, agent identity.Agent) {
	now := h.opts.Clock.Now()
	var stale []string
	h.mu.Lock()
	h.uses++
	h.sessions[id] = &boundSession{fingerprint: agent.Fingerprint, serial: agent.Serial, lastUsed: now, notAfter: agent.NotAfter, use: h.uses, done: make(chan struct{})}
	var (
		mine   int
		oldest string
	)
	for sid, b := range h.sessions {
		if now.Sub(b.lastUsed) > h.opts.SessionIdleTTL {
			stale = append(stale, sid)
			continue
		}
		if b.fingerprint == agent.Fingerprint {
			mine++
			if oldest == "" || b.use < h.sessions[oldest].use {
				oldest = sid
			}
		}
	}
	if mine > h.opts.MaxSessionsPerCert {
		stale = append(stale, oldest)
	}
	h.mu.Unlock()
	h.log.Debug("http session created", httpLogName, agent.Name, httpLogSerial, agent.Serial, httpLogSession, id)
	for _, sid := range stale {
		h.endSession(sid)
	}
}

// endSession forgets a session id and has mcp-go drop its state. mcp-go
// exports no way to end one HTTP session, so this sends it the protocol's
// own: a DELETE with that id, which reaches sessionIDs.Terminate and the
// session cleanup behind it.
func (h *HTTPTransport) endSession(id string) {
	h.mu.Lock()
	h.forget(id)
	h.mu.Unlock()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodDelete, MCPPath, nil)
	if err != nil {
		return
	}
	req.Header.Set(headerSessionID, id)
	h.mcp.ServeHTTP(discardResponse{header: http.Header{}}, req)
}

// sessionIDs is the mcp-go session id manager: ids are 128-bit random, and
// valid only while the transport's table holds them.
type sessionIDs struct{ h *HTTPTransport }

func (sessionIDs) Generate() string { return "nefia-" + rand.Text() }

func (m sessionIDs) Validate(id string) (bool, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	if _, ok := m.h.sessions[id]; !ok {
		return false, errUnknownSession
	}
	return false, nil
}

func (m sessionIDs) Terminate(id string) (bool, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	m.h.forget(id)
	return false, nil
}

// forget removes session id from the table and closes its done channel;
// h.mu is held.
func (h *HTTPTransport) forget(id string) {
	if b, ok := h.sessions[id]; ok {
		delete(h.sessions, id)
		close(b.done)
	}
}

// sessionDone is the done channel of session id; nil if it is unknown.
func (h *HTTPTransport) sessionDone(id string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b, ok := h.sessions[id]; ok {
		return b.done
	}
	return nil
}

// bindingWriter calls bind with the session id of a successful initialize
// response just before its header is written.
type bindingWriter struct {
	http.ResponseWriter
	bind  func(id string)
	wrote bool
}

func (b *bindingWriter) WriteHeader(status int) {
	if !b.wrote {
		b.wrote = true
		if id := b.Header().Get(headerSessionID); id != "" && status == http.StatusOK {
			b.bind(id)
		}
	}
	b.ResponseWriter.WriteHeader(status)
}

func (b *bindingWriter) Write(p []byte) (int, error) {
	if !b.wrote {
		b.WriteHeader(http.StatusOK)
	}
	return b.ResponseWriter.Write(p)
}

// Flush keeps SSE responses streaming: mcp-go streams only through an
// http.Flusher.
func (b *bindingWriter) Flush() {
	if !b.wrote {
		b.WriteHeader(http.StatusOK)
	}
	if f, ok := b.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (b *bindingWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header       { return d.header }
func (discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (discardResponse) WriteHeader(int)             {}

// track counts the connection's requests in their handler, so ServeConn can
// wait for them: HTTP/2 does not.
func (hc *httpConn) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc.mu.Lock()
		hc.active++
		hc.mu.Unlock()
		defer func() {
			hc.mu.Lock()
			hc.active--
			if hc.active == 0 && hc.waiting {
				hc.waiting = false
				close(hc.idle)
			}
			hc.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (hc *httpConn) wait() {
	hc.mu.Lock()
	if hc.active == 0 {
		hc.mu.Unlock()
		return
	}
	hc.waiting = true
	hc.mu.Unlock()
	<-hc.idle
}

func (hc *httpConn) closing() bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.cause != nil
}

// close ends the connection for cause; the first cause wins.
func (hc *httpConn) close(cause error) {
	hc.mu.Lock()
	if hc.cause == nil {
		hc.cause = cause
	}
	hc.mu.Unlock()
	hc.srv.Close()
}

// oneConnListener hands one connection to http.Server.Serve, then blocks
// until that connection is done (or the listener is closed), so that Serve
// lives exactly as long as the connection.
type oneConnListener struct {
	conn   net.Conn
	mu     sync.Mutex
	given  bool
	done   chan struct{} // the connection is closed
	closed chan struct{} // the listener is closed
	fin    sync.Once
	cls    sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, done: make(chan struct{}), closed: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) accepted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.given
}

func (l *oneConnListener) finish()        { l.fin.Do(func() { close(l.done) }) }
func (l *oneConnListener) Close() error   { l.cls.Do(func() { close(l.closed) }); return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// SniffHTTP tells an HTTP client from a raw JSON-RPC stream on a connection
// whose handshake is complete. ALPN decides when the client offered it
// ("h2" or "http/1.1"); otherwise the first byte does: a JSON-RPC message
// starts with '{' (or whitespace), an HTTP request with a method name in
// capitals. That byte has been read by then, so use the returned
// connection, which reads it again, not conn.
//
// Waiting for the first byte ends when ctx does (give it a deadline to cut
// clients that connect and say nothing); the connection is then unusable
// and the error is ctx's cause. Until SniffHTTP returns, the connection
// belongs to no session, so nothing else (revocation, shutdown) can end the
// wait: ctx must.
func SniffHTTP(ctx context.Context, conn *tls.Conn) (isHTTP bool, c net.Conn, err error) {
	switch conn.ConnectionState().NegotiatedProtocol {
	case "h2", "http/1.1":
		return true, conn, nil
	}
	// A deadline in the past is the one portable way to interrupt a Read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	var first [1]byte
	_, err = io.ReadFull(conn, first[:])
	if !stop() {
		return false, conn, fmt.Errorf("server: waiting for the first message: %w", context.Cause(ctx))
	}
	if err != nil {
		return false, conn, err
	}
	pc := &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(first[:]), conn)}
	return first[0] >= 'A' && first[0] <= 'Z', pc, nil
}

// prefixConn is a TLS connection whose first bytes were already read.
// Embedding *tls.Conn keeps ConnectionState, which net/http uses to fill in
// Request.TLS for connections that are not a *tls.Conn themselves.
type prefixConn struct {
	*tls.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }
