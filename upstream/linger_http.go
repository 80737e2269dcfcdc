package upstream

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// An HTTP/1.1 connection goes back to the idle pool only once its
// response body has been read to the end; a body closed before, or a
// request whose context ends before, closes the connection instead. mcp-go
// does both as soon as it has the answer it waits for: it cancels the
// request and closes the body right after the JSON-RPC response event of
// an SSE answer (what the official Go, TypeScript and Python SDKs send by
// default), while the server's end of the stream, a few bytes, is still
// on its way. Without lingering, 2 to 7 forwarded calls in 100 to such a
// server paid a new TCP connection and TLS handshake
// (TestHTTPUpstreamKeepAlive), more on a busier machine.

// Lingering bounds: how long, and how many more bytes, a closed or
// cancelled body is read for to reach its end before its connection is
// closed after all. A server ends an answered stream at once, so the grace
// only delays, by at most lingerGrace, the close that tells an upstream a
// call in progress was cancelled.
const (
	lingerGrace    = 25 * time.Millisecond
	lingerMaxBytes = 16 << 10
)

// errLingerOver ends a request whose body did not reach its end within
// lingerGrace or lingerMaxBytes of being given up.
var errLingerOver = errors.New("response body given up before its end")

// errBodyClosed is what reading a body after Close returns, as net/http's
// own bodies do.
var errBodyClosed = errors.New("http: read on closed response body")

// lingerBody is a response body that, closed (or its caller's context
// ended) before its end, reads on to the end in the background, so that
// its connection is reused. cancel ends the request itself (its context
// is detached from the caller's); it runs once the body is done with, or
// lingerGrace after it was given up.
type lingerBody struct {
	r      io.Reader     // what callers read: the size-limited body
	raw    io.ReadCloser // the transport's body, read to its end by drain
	cancel context.CancelCauseFunc
	stop   func() bool // unregisters the watch of the caller's context

	started atomic.Bool // r and raw are set: the response's headers are in
	eof     atomic.Bool // the transport's body returned io.EOF
	closed  atomic.Bool
	once    sync.Once // Close's work
	arm     sync.Once // the grace timer
	timer   *time.Timer
}

// Read implements io.Reader; nothing read after Close is returned.
func (b *lingerBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return n, err
}

// Close implements io.Closer. At the body's end it closes at once;
// otherwise it returns at once and drain reads on.
func (b *lingerBody) Close() error {
	b.once.Do(func() {
		b.closed.Store(true)
		b.stop()
		if b.eof.Load() {
			_ = b.raw.Close()
			b.cancel(nil)
			return
		}
		b.giveUp()
		go b.drain()
	})
	return nil
}

// giveUp starts the grace after which the request is cancelled, and with
// it the connection closed, if the body has not reached its end.
func (b *lingerBody) giveUp() {
	b.arm.Do(func() {
		b.timer = time.AfterFunc(lingerGrace, func() { b.cancel(errLingerOver) })
	})
}

// drain reads the rest of the body, up to lingerMaxBytes; at its end the
// transport takes the connection back for the next request, otherwise
// (too much, or the grace's cancel) closing the body closes it.
func (b *lingerBody) drain() {
	_, _ = io.CopyN(io.Discard, b.raw, lingerMaxBytes)
	_ = b.raw.Close()
	b.arm.Do(func() {}) // b.timer is set, by this body's Close
	b.timer.Stop()
	b.cancel(nil)
}
