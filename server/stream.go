package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/defaults"
	"github.com/nefia/nefia/internal/jsonrpc"
)

// Defaults for StreamOptions. They are limits on what one peer can make the
// gateway hold: the line being read (MaxMessageBytes) plus the requests being
// handled (MaxInFlightBytes, and their answers) bound request memory per
// session, and the notification buffer bounds queued notifications.
const (
	streamDefaultMaxMessageBytes    = 4 << 20
	streamDefaultMaxInFlight        = 64
	streamDefaultWriteTimeout       = 10 * time.Second
	streamDefaultDrainTimeout       = 5 * time.Second
	streamDefaultNotificationBuffer = 64
)

// StreamOptions configures a StreamSession. The zero value is usable: every
// zero field takes the default given in its comment.
type StreamOptions struct {
	// MaxMessageBytes caps one inbound JSON-RPC message (one line, without
	// its line terminator). A longer message gets a JSON-RPC error naming the
	// limit and the connection is closed; no more than the cap is ever
	// buffered for it. Default 4 MiB.
	MaxMessageBytes int

	// MaxInFlight caps requests being handled at once on this session. When
	// it is reached the session stops reading until a handler finishes, so a
	// fast peer is slowed down (TCP backpressure) instead of growing memory.
	// Notifications queued behind that point, notifications/cancelled
	// included, wait too. Default 64.
	MaxInFlight int

	// MaxInFlightBytes caps the total size of the requests being handled at
	// once on this session; reaching it stops reading, as MaxInFlight does.
	// A request is counted until its answer has been handed to the writer,
	// so this also bounds the answers held for a peer that does not read
	// them, which may echo the request (an unknown method's name, a tool
	// argument). Without it, MaxInFlight requests of MaxMessageBytes each
	// and their answers (256 MiB and more at the defaults) could be held for
	// one such peer (issue 7, found by TestResourceBounds). It must be at
	// least MaxMessageBytes. Default MaxMessageBytes: one request at the cap
	// at a time, or many small ones.
	MaxInFlightBytes int

	// WriteTimeout bounds one write to the peer. A peer that stops reading
	// ends its session after this long instead of pinning handlers and
	// memory. Default 10s.
	WriteTimeout time.Duration

	// DrainTimeout bounds how long, after the peer closes its side, the
	// session keeps running in-flight requests so that their responses can
	// still be written (useful after a TCP half-close). Then their contexts
	// are cancelled. Default 5s.
	DrainTimeout time.Duration

	// NotificationBuffer is the capacity of the session's notification
	// channel. mcp-go drops a notification when it is full. Default 64.
	NotificationBuffer int

	// IdleTimeout, if set, ends the session with ErrIdleTimeout when the
	// peer has sent no message for this long and no request is in flight (a
	// request being handled, an open subscriptions/listen included, is
	// activity: a session is never cut mid-call). The gateway uses it so
	// that idle connections give their slot back. Zero: never.
	IdleTimeout time.Duration

	// ContextFunc, if set, derives the context every request of the session
	// is handled with; the gateway uses it to attach the authenticated
	// identity. It is called once, in Serve, with a context that already
	// carries the session (mcpserver.ClientSessionFromContext), and must
	// return a context derived from it.
	ContextFunc func(ctx context.Context) context.Context

	// DirectWrites lets the goroutine that has a response write it to the
	// stream itself when nothing else is being written, instead of waking
	// the session's writer (issue 16 item 2). Set it only for a stream
	// whose writes are buffered (a TCP or TLS connection, whose kernel
	// takes a response while the peer is still sending): on an unbuffered
	// one (net.Pipe) a peer that sends its next request before reading the
	// previous answer would wait for the read loop, blocked in that
	// answer's write, until WriteTimeout. The gateway sets it.
	DirectWrites bool

	// Logger receives diagnostics (never message contents). Nil discards.
	Logger *slog.Logger
}

// withDefaults returns o with every zero field replaced by its default.
func (o StreamOptions) withDefaults() StreamOptions {
	defaults.Set(&o.MaxMessageBytes, streamDefaultMaxMessageBytes)
	defaults.Set(&o.MaxInFlight, streamDefaultMaxInFlight)
	defaults.Set(&o.MaxInFlightBytes, o.MaxMessageBytes)
	defaults.Set(&o.WriteTimeout, streamDefaultWriteTimeout)
	defaults.Set(&o.DrainTimeout, streamDefaultDrainTimeout)
	defaults.Set(&o.NotificationBuffer, streamDefaultNotificationBuffer)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports the first option that cannot be used. It changes nothing.
func (o StreamOptions) validate() error {
	switch {
	case o.MaxMessageBytes < 0:
		return fmt.Errorf("server: stream option MaxMessageBytes is %d, must be positive", o.MaxMessageBytes)
	case o.MaxInFlight < 0:
		return fmt.Errorf("server: stream option MaxInFlight is %d, must be positive", o.MaxInFlight)
	case o.MaxInFlightBytes < o.MaxMessageBytes:
		return fmt.Errorf("server: stream option MaxInFlightBytes is %d, must be at least MaxMessageBytes (%d)", o.MaxInFlightBytes, o.MaxMessageBytes)
	case o.WriteTimeout < 0:
		return fmt.Errorf("server: stream option WriteTimeout is %v, must be positive", o.WriteTimeout)
	case o.DrainTimeout < 0:
		return fmt.Errorf("server: stream option DrainTimeout is %v, must be positive", o.DrainTimeout)
	case o.IdleTimeout < 0:
		return fmt.Errorf("server: stream option IdleTimeout is %v, must be positive", o.IdleTimeout)
	case o.NotificationBuffer < 0:
		return fmt.Errorf("server: stream option NotificationBuffer is %d, must be positive", o.NotificationBuffer)
	}
	return nil
}

// StreamSession is one MCP session carried by one newline-delimited JSON-RPC
// stream (the MCP stdio framing), such as a raw mutual-TLS connection. Each
// connection gets its own session with its own random id: mcp-go's
// StdioServer.Listen cannot be used per connection because it shares one
// package-global session (mcp-go server/stdio.go, stdioSessionInstance) and a
// second concurrent connection fails with ErrSessionExists.
//
// It serves both protocol eras mcp-go speaks: the initialize handshake
// (2025-11-25 and earlier) and the stateless core of 2026-07-28
// (server/discover, per-request _meta, subscriptions/listen), and the two may
// even alternate on one connection, because mcp-go decides the era per
// request.
//
// Server-initiated requests (sampling, elicitation, roots) are not supported:
// 2026-07-28 removed them, the gateway does not use them, and a handler
// waiting for a client reply could deadlock against read backpressure.
type StreamSession struct {
	sessionState

	rw   io.ReadWriteCloser
	srv  *mcpserver.MCPServer
	opts StreamOptions
	log  *slog.Logger

	served atomic.Bool
	done   chan struct{} // closed when Serve returns
	// finishing is set by Finish: reading has stopped, and the read loop's
	// error is the end of input, not a failure.
	finishing atomic.Bool

	mu     sync.Mutex
	cause  error                   // why the session ended; first one wins
	cancel context.CancelCauseFunc // cancels request handlers; nil before Serve
	// idle fires checkIdle (StreamOptions.IdleTimeout); idleStopped is set
	// when Serve stops it, after which it is never set again.
	idle        *time.Timer
	idleStopped bool
	idleRun     sync.WaitGroup // checkIdle calls under way: stopIdle waits for them

	closeRW sync.Once // rw is closed exactly once

	slots      chan struct{}  // one token per in-flight request
	born       time.Time      // when the session was made; lastActive counts from it (monotonic)
	lastActive atomic.Int64   // time.Since(born) at the last message read or request answered
	inflight   byteBudget     // bytes of the in-flight requests, at most MaxInFlightBytes
	handlers   sync.WaitGroup // request handlers running
	workers    sessionWorkers // the goroutines they run on
	rd         streamReader   // the read loop's state, which may move between goroutines
	wmu        sync.Mutex     // held while writing to rw (by the writer, or a direct write)
	out        chan []byte    // encoded responses for the writer, closed when no producer is left
	writerDead chan struct{}  // closed when the writer has stopped, after s.out closed or a write failed
}

// NewStreamSession returns a session that will serve MCP over rw for srv. It
// does not start reading: call Serve. Its SessionID is known at once, so the
// caller can index the session (say by certificate serial) before serving it.
func NewStreamSession(rw io.ReadWriteCloser, srv *mcpserver.MCPServer, opts StreamOptions) (*StreamSession, error) {
	if rw == nil {
		return nil, errors.New("server: new stream session: nil stream")
	}
	if srv == nil {
		return nil, errors.New("server: new stream session: nil MCP server")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &StreamSession{
		sessionState: sessionState{
			id:            uuid.NewString(),
			notifications: make(chan mcp.JSONRPCNotification, opts.NotificationBuffer),
		},
		rw:         rw,
		srv:        srv,
		opts:       opts,
		log:        opts.Logger,
		done:       make(chan struct{}),
		born:       time.Now(),
		slots:      make(chan struct{}, opts.MaxInFlight),
		inflight:   newByteBudget(opts.MaxInFlightBytes),
		out:        make(chan []byte),
		writerDead: make(chan struct{}),
	}, nil
}

// ServeStream serves MCP over rw as one new session of srv until the peer
// closes the stream, ctx is cancelled, or the stream fails; it closes rw
// before returning. rw's Close must unblock a Read or Write in progress, as
// net.Conn's does: that is how cancellation reaches a blocked peer. It is
// NewStreamSession followed by Serve: use those when the caller needs the
// session id or a way to close the session from outside.
func ServeStream(ctx context.Context, rw io.ReadWriteCloser, srv *mcpserver.MCPServer, opts StreamOptions) error {
	s, err := NewStreamSession(rw, srv, opts)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve registers the session with the MCP server, serves requests read from
// the stream until the session ends, waits for its request handlers, then
// unregisters the session and closes the stream. It may be called once.
//
// It returns nil when the peer closed the stream, ctx's error (or cause) when
// ctx was cancelled, ErrSessionClosed after Close, and otherwise an error
// wrapping ErrMessageTooLarge, ErrWriteTimeout or the stream's read or write
// error. Serve never returns before every goroutine it started has finished,
// so request handlers must honour their context's cancellation.
func (s *StreamSession) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("server: stream session served twice")
	}
	defer close(s.done)
	defer s.closeStream()

	ctx = s.srv.WithContext(ctx, s)
	if s.opts.ContextFunc != nil {
		ctx = s.opts.ContextFunc(ctx)
	}
	// Hooks and logs after the end still see the identity, not the cancellation.
	finalCtx := context.WithoutCancel(ctx)

	handlerCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Every request learns when this session ends (identity.SessionDone).
	handlerCtx = identity.WithSessionDone(handlerCtx, handlerCtx.Done())
	s.mu.Lock()
	if s.cause != nil { // closed before it was served
		s.mu.Unlock()
		return s.cause
	}
	s.cancel = cancel
	s.mu.Unlock()

	// Cancelling the caller's ctx must unblock a Read or Write in progress,
	// and closing the stream is the only portable way to do that.
	stopWatch := context.AfterFunc(ctx, func() { s.kill(context.Cause(ctx)) })
	defer stopWatch()

	if err := s.srv.RegisterSession(ctx, s); err != nil {
		s.end(fmt.Errorf("server: register stream session: %w", err))
		return s.endCause()
	}
	defer s.srv.UnregisterSession(finalCtx, s.id)
	s.log.DebugContext(ctx, "stream session started", streamLogSession, s.id)

	if s.opts.IdleTimeout > 0 {
		// A timer, not a goroutine waiting on one (issue 16: one goroutine
		// fewer per connection).
		s.mu.Lock()
		s.idle = time.AfterFunc(s.opts.IdleTimeout, s.checkIdle)
		s.mu.Unlock()
		defer s.stopIdle()
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop()
	}()

	// The read loop may move to another goroutine while a lone request
	// runs on this one (see runInline); whichever goroutine reads last
	// runs finish.
	s.rd.lines = jsonrpc.NewLineReader(s.rw, s.opts.MaxMessageBytes)
	s.rd.ctx = handlerCtx
	s.rd.ended = make(chan struct{})
	s.rd.finish = func(peerClosed bool) {
		if peerClosed {
			s.drain(handlerCtx)
		}
		if ctx.Err() != nil { // the watcher may not have run yet
			s.end(context.Cause(ctx))
		}
		cancel(s.endCause())
	}
	s.runReader()
	<-s.rd.ended
	s.rd.movers.Wait()
	s.rd.lines.Release() // nothing reads any more: its buffer serves the next session
	if s.rd.watch != nil {
		s.rd.watch.Stop()
	}
	s.handlers.Wait()
	s.workers.stop()
	close(s.out) // no producer is left: the reader and every handler are done
	<-writerDone

	err := s.endCause()
	s.log.DebugContext(finalCtx, "stream session ended", streamLogSession, s.id, streamLogError, err)
	return err
}

// Close ends the session from outside, for example when the certificate that
// authenticated it is revoked. It closes the stream at once, so the peer sees
// the connection drop immediately, cancels in-flight requests, and returns
// without waiting; Done is closed when Serve has finished. Serve then returns
// ErrSessionClosed. Close is safe to call more than once and from any
// goroutine, even before Serve.
func (s *StreamSession) Close() error {
	s.kill(ErrSessionClosed)
	return nil
}

// Finish ends the session once its in-flight requests are answered: it
// stops reading at once, so nothing the peer sends from now on is served,
// lets the requests already running finish and their answers be written for
// at most grace, then closes the stream. Revocation uses it, so that a
// renewal which revokes the caller's previous certificate still delivers the
// new one (issue 13: the revocation poll used to cut that very connection
// before its answer, locking the agent out). A session with nothing in
// flight, or a stream that cannot stop reading without closing, ends at
// once, as with Close.
func (s *StreamSession) Finish(cause error, grace time.Duration) {
	s.end(cause)
	d, ok := s.rw.(interface{ SetReadDeadline(time.Time) error })
	if !ok || len(s.slots) == 0 {
		s.kill(cause)
		return
	}
	s.finishing.Store(true)
	// A deadline in the past is the one portable way to interrupt a Read.
	if d.SetReadDeadline(time.Unix(1, 0)) != nil {
		s.kill(cause)
		return
	}
	time.AfterFunc(grace, func() { s.kill(cause) })
}

// touch records activity: a message read, or a request answered.
func (s *StreamSession) touch() { s.lastActive.Store(int64(time.Since(s.born))) }

// checkIdle ends the session when it has been idle for IdleTimeout (see
// StreamOptions.IdleTimeout); otherwise it sets the idle timer to fire when
// it could be, unless Serve has stopped it (stopIdle).
func (s *StreamSession) checkIdle() {
	s.mu.Lock()
	if s.idleStopped {
		s.mu.Unlock()
		return
	}
	s.idleRun.Add(1) // under mu, so stopIdle's Wait cannot begin before it
	s.mu.Unlock()
	defer s.idleRun.Done()
	limit := s.opts.IdleTimeout
	next := limit // a request in flight is activity
	if len(s.slots) == 0 {
		idle := time.Since(s.born) - time.Duration(s.lastActive.Load())
		if idle >= limit {
			s.log.Info("stream session idle, closing it", streamLogSession, s.id, "idle", idle.Round(time.Millisecond))
			s.kill(ErrIdleTimeout)
			return
		}
		next = limit - idle
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.idleStopped {
		s.idle.Reset(next)
	}
}

// stopIdle stops the idle timer for good and waits for a checkIdle under
// way, so that none outlives Serve (it would log a wrong cause and kill
// an ended session: attack review 4). The wait is outside mu, which kill
// takes.
func (s *StreamSession) stopIdle() {
	s.mu.Lock()
	s.idleStopped = true
	s.idle.Stop()
	s.mu.Unlock()
	s.idleRun.Wait()
}

// Done returns a channel that is closed when Serve has returned.
func (s *StreamSession) Done() <-chan struct{} { return s.done }

// drain lets in-flight requests finish after the peer closed its side, for at
// most DrainTimeout, so their responses can still be written.
func (s *StreamSession) drain(ctx context.Context) {
	if len(s.slots) == 0 {
		// Nothing in flight: every answer was written or handed to the
		// writer, which cancelling the handlers does not stop. No goroutine
		// and timer to wait for nothing (issue 16: a ping then a close).
		// No request can start meanwhile: the reading has ended.
		return
	}
	idle := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(idle)
	}()
	timer := time.NewTimer(s.opts.DrainTimeout)
	defer timer.Stop()
	select {
	case <-idle:
	case <-ctx.Done():
	case <-timer.C:
		s.log.Debug("stream session drain timed out", streamLogSession, s.id)
	}
	// The goroutine above ends with the handlers, which Serve waits for next.
}

// end records why the session ended; the first reason wins. A nil reason
// (the peer closed the stream) is recorded as such.
func (s *StreamSession) end(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause == nil {
		if cause == nil {
			cause = errPeerClosed
		}
		s.cause = cause
	}
}

// endCause returns why the session ended, nil for a peer that closed cleanly.
func (s *StreamSession) endCause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause == errPeerClosed {
		return nil
	}
	return s.cause
}

// kill ends the session now: it records cause, cancels request handlers and
// closes the stream, which unblocks a Read or Write in progress.
func (s *StreamSession) kill(cause error) {
	s.end(cause)
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
	s.closeStream()
}

// closeStream closes the stream once.
func (s *StreamSession) closeStream() {
	s.closeRW.Do(func() {
		if err := s.rw.Close(); err != nil {
			s.log.Debug("closing stream", streamLogSession, s.id, streamLogError, err)
		}
	})
}

// errPeerClosed marks a session ended by the peer closing its side; Serve
// reports it as nil.
var errPeerClosed = errors.New("server: peer closed the stream")

// Structured-log keys used by the stream session.
const (
	streamLogSession = "session_id"
	streamLogError   = "error"
	streamLogMethod  = "method"
	streamLogLimit   = "limit_bytes"
)

// byteBudget is a counting semaphore over bytes. On a raw session only the
// read loop acquires from it; the HTTP transport's requests only try
// (tryAcquire) and never wait. So there is no queue of waiters to be fair to.
type byteBudget struct {
	mu      sync.Mutex
	free    int
	wake    chan struct{} // closed, and replaced, when bytes are released while waited for
	waiting bool          // someone waits on wake (a channel per release cost an allocation per request)
}

func newByteBudget(n int) byteBudget {
	return byteBudget{free: n, wake: make(chan struct{})}
}

// acquire takes n bytes (at most the whole budget), waiting until they are
// free or ctx ends.
func (b *byteBudget) acquire(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return nil
		}
		wake := b.wake
		b.waiting = true
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// tryAcquire takes n bytes if they are free now, and reports whether it
// did. The HTTP transport uses it: a request there must not wait while
// holding part of the budget (see HTTPOptions.MaxInFlightBytes).
func (b *byteBudget) tryAcquire(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free < n {
		return false
	}
	b.free -= n
	return true
}

// release returns n bytes to the budget.
func (b *byteBudget) release(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.free += n
	if b.waiting {
		close(b.wake)
		b.wake, b.waiting = make(chan struct{}), false
	}
}
