package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// connState is where one accepted connection is in its life. Every accepted
// connection is in the gateway's connection table (Gateway.conns) from
// accept to close, in exactly one of these states, and the table is the one
// place revocation (CloseSerial, the revocation poll), CA replacement and
// shutdown look for connections to end (issue 10: a connection that
// handshook and then said nothing used to be in no table, so revoking its
// certificate did not reach it).
//
//	state               what ends it from outside           limits that hold it        audit
//	------------------  ----------------------------------  -------------------------  ------------------------------
//	handshaking         VerifyConnection refuses a revoked  MaxHandshakes (when full,  connection_rejected
//	                    or foreign certificate; one that    the oldest of the address
//	                    passed just before a revocation is  holding the most if over
//	                    caught by the re-check on admission an eighth, else the
//	                                                        oldest, is cut),
//	                                                        HandshakeTimeout
//	awaiting first byte raw connection closed               a session slot (per client, connection_close "first byte
//	                                                        operator reserve),         timeout", or the revocation
//	                                                        FirstByteTimeout
//	raw                 StreamSession.Close; identity is    a session slot,            connection_open/_close
//	                    re-checked just before it starts    IdleTimeout, message and
//	                                                        in-flight caps, WriteTimeout
//	http                ServeConn's context cancelled, the  a session slot, the HTTP   connection_open/_close, and
//	                    serial's HTTP sessions ended;       transport's timeouts       per refused request
//	                    identity re-checked per request
//
// A connection closed for revocation that ended before a CloseSerial
// counted it leaves a trace in the table (trackedConn.ended: no conn, no
// slot) until one counts it, or for endedKept; nothing else sees traces.
//
// Revocation through the nefia.mtls.revoke tool closes the serial's
// connections at once (CloseSerial); one written to the store by the CLI is
// seen by the revocation poll within RevocationPoll; a CA replacement makes
// the poll re-verify every connection that has an identity. A connection
// becomes visible to them by serial when it is admitted, and is re-verified
// right after, so a revocation that lands between its handshake and its
// admission is not missed either.
type connState int

const (
	stateHandshaking connState = iota
	stateAwaitingFirstByte
	stateRaw
	stateHTTP
)

func (s connState) String() string {
	switch s {
	case stateHandshaking:
		return "handshaking"
	case stateAwaitingFirstByte:
		return "awaiting first byte"
	case stateRaw:
		return "raw"
	case stateHTTP:
		return "http"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// trackedConn is one accepted connection in the gateway's table.
type trackedConn struct {
	raw    net.Conn
	remote string

	mu     sync.Mutex
	state  connState
	agent  identity.Agent      // set on admission
	cs     tls.ConnectionState // set on admission, for re-verification
	slot   bool                // holds a session slot
	closer func(cause error)   // ends the connection in its current state
	cause  error               // why the gateway closed it; nil until then
	act    *connActivity       // set on admission; never changed after
	// counted is set once a CloseSerial counted this connection as closed
	// by its revocation (issue 16 item 3): the revocation watch may close
	// it first, even end it, before the tool's CloseSerial, which must
	// still count it, and count it once.
	counted bool
	// ended, when set, makes this entry the trace of a connection closed
	// for revocation that ended before any CloseSerial counted it: it has
	// no conn, no slot, no activity, only the agent and the mark, and
	// stays in the table until counted or for endedKept.
	ended time.Time
}

// endedKept is how long the trace of a connection closed for revocation
// waits for CloseSerial to count it: a revocation by the tool calls it
// within the tool call; one by the CLI never does.
const endedKept = time.Minute

// Causes the gateway closes a connection with; their text is the close
// reason in the log and the audit trail.
var (
	errRevoked     = fmt.Errorf("%w: certificate revoked", ErrSessionClosed)
	errCAReplaced  = fmt.Errorf("%w: the CA was replaced", ErrSessionClosed)
	errShutdown    = fmt.Errorf("%w: shutdown", ErrSessionClosed)
	errCertExpired = fmt.Errorf("%w: certificate expired", ErrSessionClosed)
)

// close ends the connection for cause, whatever its state, and reports
// whether this call did; the first cause wins and later calls do nothing.
func (tc *trackedConn) close(cause error) bool {
	tc.mu.Lock()
	if tc.cause != nil {
		tc.mu.Unlock()
		return false
	}
	tc.cause = cause
	closer := tc.closer
	tc.mu.Unlock()
	closer(cause)
	return true
}

// enter moves the connection to state, ended from now on by closer. It
// reports false, and changes nothing, when the connection was closed
// already: the caller must then stop.
func (tc *trackedConn) enter(state connState, closer func(error)) bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.cause != nil {
		return false
	}
	tc.state, tc.closer = state, closer
	return true
}

// closedBy returns why the gateway closed the connection, or nil.
func (tc *trackedConn) closedBy() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.cause
}

// snapshot returns the connection's state and, once admitted, identity.
func (tc *trackedConn) snapshot() (connState, identity.Agent, *tls.ConnectionState, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if !tc.slot {
		return tc.state, identity.Agent{}, nil, false
	}
	cs := tc.cs
	return tc.state, tc.agent, &cs, true
}

// setSession records the MCP session a raw connection serves, for the
// session table (nefia.gateway.sessions).
func (tc *trackedConn) setSession(id string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.agent.SessionID = id
}

// track adds a just-accepted connection to the table, ended by closing it.
func (g *Gateway) track(raw net.Conn) *trackedConn {
	tc := &trackedConn{raw: raw, remote: raw.RemoteAddr().String(), state: stateHandshaking}
	tc.closer = func(error) { raw.Close() }
	g.mu.Lock()
	g.conns[tc] = struct{}{}
	g.mu.Unlock()
	return tc
}

// untrack removes a connection that has ended from the table and gives back
// its slot.
func (g *Gateway) untrack(tc *trackedConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, tc)
	tc.mu.Lock()
	slot, serial := tc.slot, tc.agent.Serial
	tc.slot = false
	if slot && tc.cause == errRevoked && !tc.counted {
		// Closed by the revocation watch, not counted yet: its trace
		// waits for the revoking tool's CloseSerial. A fresh entry
		// (no remote address, no activity) so that nothing but
		// CloseSerial can take it for a live connection.
		g.conns[&trackedConn{agent: identity.Agent{Name: tc.agent.Name, Serial: serial}, cause: errRevoked,
			closer: func(error) {}, ended: time.Now()}] = struct{}{}
	}
	tc.mu.Unlock()
	if slot {
		g.release(serial)
	}
}

// countRevoked counts, and marks counted, the connections of serial in
// the table that were closed for revocation and not counted yet, live or
// ended (issue 16 item 3), and drops the traces of ended ones it counted
// and of any ended longer than endedKept ago. Under g.mu, as untrack, so
// a connection is counted either live or as its trace, once.
func (g *Gateway) countRevoked(serial string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for tc := range g.conns {
		tc.mu.Lock()
		if serial != "" && tc.agent.Serial == serial && tc.cause == errRevoked && !tc.counted {
			tc.counted = true
			n++
		}
		drop := !tc.ended.IsZero() && (tc.counted || time.Since(tc.ended) > endedKept)
		tc.mu.Unlock()
		if drop {
			delete(g.conns, tc)
		}
	}
	return n
}

// release gives back one session slot of serial; g.mu must be held.
func (g *Gateway) release(serial string) {
	g.held--
	g.established.Store(int64(g.held))
	if g.perSerial[serial]--; g.perSerial[serial] <= 0 {
		delete(g.perSerial, serial)
	}
	if g.slotFreed != nil { // connections wait for it (admitWithin)
		close(g.slotFreed)
		g.slotFreed = nil
	}
}

// limitError says which limit refused a connection, by its nefia.yaml key
// (the name an operator can act on).
type limitError struct {
	limit string
	value int
}

// Names of the limits, as limitError reports them.
const (
	limitMaxConnections  = "mcp.mtls.max_connections"
	limitPerClient       = "mcp.mtls.max_connections_per_client"
	limitOperatorReserve = "mcp.mtls.operator_reserve"
)

func (e *limitError) Error() string {
	return fmt.Sprintf("%s (%d) reached", e.limit, e.value)
}

// DefaultSlotWait bounds how long a handshaken connection waits for a session
// slot when a limit is reached (issue 16 item 4): a client that closes a
// connection and reconnects at once used to be refused now and then (13 to
// 20 per 1,000 at 50 clients against the cap of 50), because its previous
// connection's slot was released a moment after the new one asked. The
// wait is short, and the connection still counts against MaxHandshakes
// while it waits, so a flood cannot queue behind it.
const DefaultSlotWait = 250 * time.Millisecond

// admitWithin is tryAdmit, waiting at most GatewayOptions.SlotWait for a slot to be
// released when a limit refuses the connection; ctx ends the wait (the
// handshake's pending context: shutdown, or the connection cut to make
// room for another handshake).
func (g *Gateway) admitWithin(ctx context.Context, tc *trackedConn, agent identity.Agent, cs tls.ConnectionState) error {
	var leave func() // gives back the waiting place enterWait took
	err := g.untilFreed(ctx, func() (<-chan struct{}, error) { return g.tryAdmit(tc, agent, cs) }, func(err error) bool {
		var ok bool
		if leave, ok = g.enterWait(agent.Serial); ok {
			g.log.Debug("connection waiting for a session slot", "name", agent.Name, "serial", agent.Serial,
				"remote_addr", tc.remote, "error", err)
		}
		return ok
	})
	if leave != nil {
		leave()
	}
	return err
}

// maxSlotWaiters is how many connections may wait for a session slot at
// once: an eighth of GatewayOptions.MaxHandshakes (64 by default), at least
// one. A waiting connection keeps its pending-handshake place, so waiters
// alone can never take the places and cut handshakes in progress; the
// bound is still far above what reconnections need (a wait lasts at most
// SlotWait). Beyond it a connection is refused at once, as before the
// wait existed.
func (g *Gateway) maxSlotWaiters() int32 {
	return int32(max(g.opts.MaxHandshakes/8, 1))
}

// takeWaiter takes one of the maxSlotWaiters places, if one is free;
// dropWaiter gives it back.
func (g *Gateway) takeWaiter() bool {
	for {
		n := g.slotWaiters.Load()
		if n >= g.maxSlotWaiters() {
			return false
		}
		if g.slotWaiters.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *Gateway) dropWaiter() { g.slotWaiters.Add(-1) }

// maxSerialWaiters is how many of the waiting places one certificate may
// hold: a quarter of maxSlotWaiters (16 by default), at least one, so that
// one certificate cannot take every place and leave other clients'
// reconnections to be refused at once. Not fewer: clients that share one
// certificate reconnect together (with 2, bench/refusals.sh's 50 clients
// of one certificate at 50 slots saw up to 2.3 refusals per 1,000).
func (g *Gateway) maxSerialWaiters() int {
	return max(int(g.maxSlotWaiters())/4, 1)
}

// enterWait takes a waiting place for a connection of serial, one of
// maxSlotWaiters and of its certificate's maxSerialWaiters; the returned
// func gives both back.
func (g *Gateway) enterWait(serial string) (leave func(), ok bool) {
	if !g.takeWaiter() {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.serialWaits[serial] >= g.maxSerialWaiters() {
		g.dropWaiter()
		return nil, false
	}
	g.serialWaits[serial]++
	return func() {
		g.mu.Lock()
		if g.serialWaits[serial]--; g.serialWaits[serial] <= 0 {
			delete(g.serialWaits, serial)
		}
		g.mu.Unlock()
		g.dropWaiter()
	}, true
}

// untilFreed calls try until it succeeds, waiting between tries for the
// channel try returns (closed when a slot is next released), at most
// GatewayOptions.SlotWait in all; ctx ends the wait. begin is called
// once, with try's first error, when a wait would begin: it says whether
// to wait (the caller's waiting place), else that error is returned at
// once. It returns try's last error.
func (g *Gateway) untilFreed(ctx context.Context, try func() (<-chan struct{}, error), begin func(error) bool) error {
	var timer *time.Timer
	for {
		freed, err := try()
		if err == nil {
			return nil
		}
		if timer == nil {
			if !begin(err) {
				return err
			}
			timer = time.NewTimer(g.opts.SlotWait)
			defer timer.Stop()
		}
		select {
		case <-freed:
		case <-timer.C:
			return err
		case <-ctx.Done():
			return err
		}
	}
}

// slotFreedLocked returns the channel closed at the next slot release;
// g.mu must be held.
func (g *Gateway) slotFreedLocked() <-chan struct{} {
	if g.slotFreed == nil {
		g.slotFreed = make(chan struct{})
	}
	return g.slotFreed
}

// waitForSlot waits at most GatewayOptions.SlotWait for a session slot to be free, before
// the handshake, when every slot was taken at accept: the client that just
// closed its previous connection must not be refused because its slot is
// released a moment later (issue 16 item 4). Until then a connection was
// refused at once; a short bounded wait is not a queue a flood can build:
// at most maxSlotWaiters connections wait (the accept loop refuses the
// others at once, before they take a pending-handshake place), each
// counts against MaxHandshakes while it waits, and no handshake is spent
// on it before a slot is free.
// ctx ends the wait. The caller holds a waiting place (takeWaiter), which
// this gives back. It reports whether a slot is free.
func (g *Gateway) waitForSlot(ctx context.Context) bool {
	defer g.dropWaiter()
	return g.untilFreed(ctx, func() (<-chan struct{}, error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.held < g.opts.MaxConnections {
			return nil, nil
		}
		return g.slotFreedLocked(), errSlotsTaken
	}, func(error) bool {
		g.log.Debug("connection waiting for a session slot before its handshake")
		return true // in the accept loop's waiting place
	}) == nil
}

// errSlotsTaken is waitForSlot's reason to wait: every session slot is held.
var errSlotsTaken = errors.New("every session slot is taken")

// tryAdmit takes a session slot for a connection whose handshake succeeded
// and records its identity, which makes it reachable by serial. When a
// limit refuses it, it returns a *limitError and a channel that is closed
// when a slot is next released.
func (g *Gateway) tryAdmit(tc *trackedConn, agent identity.Agent, cs tls.ConnectionState) (<-chan struct{}, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var err error
	switch {
	case g.held >= g.opts.MaxConnections:
		err = &limitError{limit: limitMaxConnections, value: g.opts.MaxConnections}
	case g.perSerial[agent.Serial] >= g.opts.MaxConnectionsPerClient:
		err = &limitError{limit: limitPerClient, value: g.opts.MaxConnectionsPerClient}
	case agent.Role != pki.RoleOperator && g.held >= g.opts.MaxConnections-g.opts.OperatorReserve:
		// The last OperatorReserve slots are for operators, so one can
		// always get in to revoke whoever holds the others.
		err = &limitError{limit: limitOperatorReserve, value: g.opts.OperatorReserve}
	}
	if err != nil {
		return g.slotFreedLocked(), err
	}
	g.held++
	g.established.Store(int64(g.held))
	g.perSerial[agent.Serial]++
	tc.mu.Lock()
	tc.slot, tc.agent, tc.cs = true, agent, cs
	tc.state = stateAwaitingFirstByte
	tc.act = newActivity()
	tc.mu.Unlock()
	return nil, nil
}

// full reports whether every session slot is taken.
func (g *Gateway) full() bool {
	return g.established.Load() >= int64(g.opts.MaxConnections)
}

// admitted returns the admitted connections (those with an identity) that
// match, if match is not nil.
func (g *Gateway) admitted(match func(identity.Agent) bool) []*trackedConn {
	g.mu.Lock()
	all := make([]*trackedConn, 0, len(g.conns))
	for tc := range g.conns {
		all = append(all, tc)
	}
	g.mu.Unlock()
	var out []*trackedConn
	for _, tc := range all {
		if _, agent, _, ok := tc.snapshot(); ok && (match == nil || match(agent)) {
			out = append(out, tc)
		}
	}
	return out
}

// closeConn closes one connection for cause and logs it, once: the poll
// finds a closed connection again until its goroutine has finished.
func (g *Gateway) closeConn(tc *trackedConn, cause error) {
	state, agent, _, _ := tc.snapshot()
	if tc.close(cause) {
		g.log.Info("connection closed by the gateway", "name", agent.Name, "serial", agent.Serial, "remote_addr", tc.remote,
			"state", state.String(), "reason", closeReason(cause))
	}
}

// closeAll closes every tracked connection, admitted or not (shutdown).
func (g *Gateway) closeAll(cause error) {
	g.mu.Lock()
	all := make([]*trackedConn, 0, len(g.conns))
	for tc := range g.conns {
		all = append(all, tc)
	}
	g.mu.Unlock()
	for _, tc := range all {
		tc.close(cause)
	}
}

// errFirstByteTimeout is why a connection that sent nothing after its
// handshake was closed.
var errFirstByteTimeout = errors.New("server: no first message within the first-byte deadline")
