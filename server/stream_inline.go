package server

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// A request on a stream session goes through these states (issue 16
// item 2). Each names the goroutine that holds it and how the session's
// limits and its end (Close on revocation, Finish, the idle watch, the
// peer closing) reach it.
//
//   - read: the read loop has the line and decides what it is. Nothing is
//     held yet; Close closes the stream under the loop, whose next read
//     fails.
//   - queued: the read loop waits for a slot (MaxInFlight) and for the
//     line's bytes (MaxInFlightBytes). It reads nothing meanwhile: that is
//     the backpressure. The wait ends with the handlers' context, which
//     Close cancels.
//   - running inline: a lone request (no other in flight, not
//     subscriptions/listen) runs on the read loop's goroutine itself,
//     holding its slot and bytes like any other: no goroutine is woken for
//     it. It must not stop the session's reading for long (a
//     notifications/cancelled for it, a ping, the next request), so if it
//     is still running after inlineBudget the read loop moves to another
//     goroutine (moveReader) and the request finishes where it is, now
//     just running. Close cancels its context (and closes the stream),
//     Finish lets it finish within its grace, the idle watch sees its
//     slot, and Serve waits for it (s.handlers) before returning.
//   - running: the request runs on a worker goroutine (sessionWorkers)
//     while the read loop goes on; the same holds as inline.
//   - answering: the response is written. Whoever holds it writes it
//     directly (answer) when the stream allows it (DirectWrites), the
//     writer is idle and no notification was sent while the request ran
//     (they must go first; the writer orders them); otherwise it is handed
//     to the writer goroutine. The slot and bytes are held until the
//     response is written or handed over, so a peer that does not read
//     stops the reading (backpressure) and WriteTimeout ends the session;
//     Close unblocks the write by closing the stream. An inline request's
//     response that can be neither written directly nor taken by the
//     writer at once waits on a worker, not on the read loop. A direct
//     write on the read loop may block (a peer that does not read): the
//     loop then reads nothing more, which is the backpressure, until the
//     write goes through or WriteTimeout ends the session.
//
// On a lone status call this means no goroutine hand-off at all: the read
// loop reads, runs and writes, and reads on.

// inlineBudget is how long a lone request may run on the read loop's
// goroutine before the read loop moves to another one. Long enough that a
// tool call of the gateway's own (a status call takes tens of µs) rarely
// moves even on a saturated machine, where waiting for a CPU counts too
// (50 sessions of status calls on 2 busy cores: 2% of calls moved at 5 ms,
// 7% at 2 ms; a move costs a goroutine and its stack growth), short
// enough that a message sent behind a slow call (its cancellation, say)
// waits no longer than a network would make it.
const inlineBudget = 5 * time.Millisecond

// States of the read loop's inline request (streamReader.inline).
const (
	inlineIdle    int32 = iota // none is running
	inlineRunning              // one runs on the read loop's goroutine
	inlineMoved                // it outlasted inlineBudget: another goroutine reads now
)

// streamReader is the read loop's state, which moves from one goroutine to
// another when an inline request is slow: only one goroutine at a time
// reads (the one that holds the role), and the last one ends the reading
// for Serve (finish, then ended is closed).
type streamReader struct {
	lines  *jsonrpc.LineReader
	ctx    context.Context       // the request handlers' context
	finish func(peerClosed bool) // run once by the last reader
	ended  chan struct{}         // closed after finish
	inline atomic.Int32          // inlineIdle, inlineRunning or inlineMoved
	watch  *time.Timer           // fires moveReader; made on the first inline request
	movers sync.WaitGroup        // goroutines the read loop moved to
}

// readNext is what the read loop does after a message.
type readNext int

const (
	readOn    readNext = iota // go on reading
	readStop                  // the session is ending
	readMoved                 // another goroutine reads now: this one leaves the loop
)

// runReader runs the read loop on the calling goroutine until the session
// stops reading, or until the loop moves to another goroutine; the one
// that ends it runs finish.
func (s *StreamSession) runReader() {
	peerClosed, moved := s.readLoop(s.rd.ctx)
	if moved {
		return
	}
	s.rd.finish(peerClosed)
	close(s.rd.ended)
}

// moveReader hands the read loop to this goroutine (the inline watch's)
// when the inline request it watches is still running. The request's
// goroutine learns it from the state and leaves the loop when it is done.
func (s *StreamSession) moveReader() {
	if !s.rd.inline.CompareAndSwap(inlineRunning, inlineMoved) {
		return // it finished first (or this is a stale firing)
	}
	s.rd.movers.Add(1) // before this reader can end the reading, which Serve waits for
	defer s.rd.movers.Done()
	s.runReader()
}

// runInline runs a lone request on the read loop's goroutine; the caller
// holds its slot and size bytes and has added it to s.handlers.
func (s *StreamSession) runInline(ctx context.Context, id json.RawMessage, line []byte, size int) readNext {
	if s.rd.watch == nil {
		s.rd.watch = time.AfterFunc(time.Hour, s.moveReader)
	}
	notes := s.notes.Load()
	// A stale firing of the watch (Stop below lost the race) may move the
	// loop off this request instead: harmless, it only costs a goroutine.
	s.rd.inline.Store(inlineRunning)
	s.rd.watch.Reset(inlineBudget)
	buf := respPool.Get().(*[]byte)
	resp := s.handle(ctx, id, line, (*buf)[:0])
	s.rd.watch.Stop()
	// Before the slot is released: the next reader runs nothing inline
	// until then, so it cannot set the state this reads.
	if !s.rd.inline.CompareAndSwap(inlineRunning, inlineIdle) {
		s.answer(resp, notes, size) // this goroutine reads no more: it may wait
		return readMoved
	}
	if resp == nil || s.tryWrite(resp, notes) {
		// Written (the TLS record holds a copy) or nothing to write:
		// resp, and the pooled buffer it may have grown from, are free.
		putResp(buf, resp)
		s.release(size)
		return readOn
	}
	if s.trySend(resp) {
		s.release(size)
		return readOn
	}
	// The writer is busy (a peer slow to read, or a notification going
	// out): the answer waits on a worker, not on the read loop.
	s.workers.Go(func() {
		s.send(resp)
		s.release(size)
	})
	return readOn
}

// respPool holds the buffers lone requests' responses are encoded into
// (runInline): an answer written directly is out of the buffer when the
// write returns, so the buffer serves the next one, instead of a new one
// per call (≈1.7 KB for a status call, a quarter of what the gateway
// allocated per call). An answer handed to the writer keeps its buffer.
var respPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledResp bounds the buffers respPool keeps, so that one large
// answer does not stay allocated for good.
const maxPooledResp = 16 << 10

// putResp returns buf to respPool holding the array resp was encoded in
// (grown from buf's, or allocated anew), when it is not too large.
func putResp(buf *[]byte, resp []byte) {
	if resp != nil {
		*buf = resp[:0]
	}
	if cap(*buf) > maxPooledResp {
		*buf = nil
	}
	respPool.Put(buf)
}

// answer delivers a request's response (nil: none) and releases what the
// request held: written directly if it can be (tryWrite), else handed to
// the writer, waiting for it; see the states above.
func (s *StreamSession) answer(resp []byte, notes uint64, size int) {
	if resp != nil && !s.tryWrite(resp, notes) {
		s.send(resp)
	}
	s.release(size)
}

// release releases what a request held once its response is out of its hands.
func (s *StreamSession) release(size int) {
	s.inflight.release(size)
	s.touch() // the idle time counts from the answer, not the request
	<-s.slots
	s.handlers.Done()
}

// tryWrite writes resp on the calling goroutine if the stream allows it
// (DirectWrites), no notification was sent since notes was read (a
// request's notifications must reach the peer before its result, and the
// writer may hold one already taken from the channel) and nothing else is
// being written. It reports whether it did (or tried: a failed write ends
// the session).
func (s *StreamSession) tryWrite(resp []byte, notes uint64) bool {
	if !s.opts.DirectWrites || s.notes.Load() != notes || !s.wmu.TryLock() {
		return false
	}
	defer s.wmu.Unlock()
	s.write(resp)
	return true
}
