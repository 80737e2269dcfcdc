package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// ErrResponseTooLarge is the error of a response body, or of one SSE event,
// from an HTTP upstream larger than MaxMessageBytes: the bound stdio
// upstreams' messages have (lineLimit), applied to Streamable HTTP.
var ErrResponseTooLarge = fmt.Errorf("upstream sent a message larger than %d bytes", MaxMessageBytes)

// limitTransport bounds what an HTTP upstream's responses can make the
// gateway buffer: a JSON body as a whole, an SSE stream (a POST's answer
// or the GET stream of notifications, which may last for hours) one event
// at a time. mcp-go's client would otherwise read a body or an event of
// any length into memory.
type limitTransport struct {
	base http.RoundTripper
	max  int
}

// RoundTrip implements http.RoundTripper. The request goes out with a
// context of its own: the caller's cancellation ends it at once until the
// response's headers are in, and after that lets its body linger
// (lingerBody), so that an answer read to its last event keeps its
// connection.
func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	caller := req.Context()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(caller))
	b := &lingerBody{cancel: cancel}
	// One watch of the caller for both: before the headers it cancels the
	// request; after, it gives the body up (lingerBody.giveUp), so that a
	// caller that ended first (a cancelled call, or a closed transport's
	// GET stream) is done with within lingerGrace even if the body is
	// never closed.
	b.stop = context.AfterFunc(caller, func() {
		if b.started.Load() {
			b.giveUp()
		} else {
			cancel(context.Cause(caller))
		}
	})
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		// Nothing more to read: the connection, if any, is back already.
		b.stop()
		cancel(nil)
		return resp, err
	}
	b.raw = resp.Body
	b.r = &bodyLimit{rc: resp.Body, max: t.max, sse: isEventStream(resp.Header.Get("Content-Type")), hit: limitFlag(caller)}
	b.started.Store(true)
	resp.Body = b
	return resp, nil
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(contentType string) bool { return isMediaType(contentType, "text/event-stream") }

// isMediaType reports whether a Content-Type's media type is want, as
// mime.ParseMediaType reads it, without the map of parameters that builds
// per response.
func isMediaType(contentType, want string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), want)
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on.
func (t *limitTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// bodyLimit fails a body once it exceeds max bytes, or for an SSE stream
// once one event (the bytes since the last blank line) does. It marks hit,
// the flag of the forwarded request the body answers, so that the caller
// is told why even when mcp-go reports a broken stream without the cause.
type bodyLimit struct {
	rc   io.ReadCloser
	max  int
	sse  bool
	hit  *atomic.Bool
	n    int  // bytes of the body, or of the current SSE event
	line bool // an SSE line has begun (not counting '\r')
	err  error
}

func (b *bodyLimit) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	for _, c := range p[:n] {
		b.n++
		if b.n > b.max {
			b.err = ErrResponseTooLarge
			if b.hit != nil {
				b.hit.Store(true)
			}
			return 0, b.err
		}
		if !b.sse {
			continue
		}
		switch c {
		case '\n':
			if !b.line { // a blank line ends the event
				b.n = 0
			}
			b.line = false
		case '\r':
		default:
			b.line = true
		}
	}
	return n, err
}

func (b *bodyLimit) Close() error { return b.rc.Close() }

type limitKey struct{}

// withLimitFlag returns ctx with a flag that an oversized response to a
// request sent with it sets.
func withLimitFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	hit := new(atomic.Bool)
	return context.WithValue(ctx, limitKey{}, hit), hit
}

// withoutLimitFlag returns ctx without the flag of withLimitFlag: for a
// request sent on a call's behalf whose answer is not the call's.
func withoutLimitFlag(ctx context.Context) context.Context {
	return context.WithValue(ctx, limitKey{}, (*atomic.Bool)(nil))
}

// limitFlag is the flag withLimitFlag put in ctx; nil for none.
func limitFlag(ctx context.Context) *atomic.Bool {
	hit, _ := ctx.Value(limitKey{}).(*atomic.Bool)
	return hit
}

// tooLarge reports whether a forwarded request failed on the size limit
// (hit may be nil). mcp-go reports it as a broken transport, but the
// session is fine: only that answer is dropped.
func tooLarge(hit *atomic.Bool, err error) bool {
	return (hit != nil && hit.Load()) || errors.Is(err, ErrResponseTooLarge)
}

// tooLargeError is what the caller of a request whose answer was over the
// limit is told.
func (u *upstream) tooLargeError() error {
	u.log.Warn("upstream answer over the message size limit dropped", "limit_bytes", MaxMessageBytes)
	return fmt.Errorf("upstream %q answered with more than %d bytes (the message size limit); the answer was dropped", u.cfg.Name, MaxMessageBytes)
}
