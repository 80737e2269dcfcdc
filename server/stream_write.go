package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// writeLoop is the session's writer. It forwards encoded responses from
// s.out and notifications from the session's channel, one line each, until
// s.out is closed or a write fails. It holds s.wmu while it writes: a
// request's goroutine may write its own response when the writer is idle
// (tryWrite), and only then.
//
// Before each response it first writes the notifications already queued, so
// that a request's progress and log notifications reach the peer before its
// result.
func (s *StreamSession) writeLoop() {
	defer close(s.writerDead)
	for {
		select {
		case line, ok := <-s.out:
			if !ok {
				return
			}
			s.wmu.Lock()
			ok = s.flushNotifications() && s.write(line)
			s.wmu.Unlock()
			if !ok {
				return
			}
		case n := <-s.notifications:
			s.wmu.Lock()
			ok := s.writeNotification(n)
			s.wmu.Unlock()
			if !ok {
				return
			}
		}
	}
}

// flushNotifications writes the notifications queued right now.
func (s *StreamSession) flushNotifications() bool {
	for {
		select {
		case n := <-s.notifications:
			if !s.writeNotification(n) {
				return false
			}
		default:
			return true
		}
	}
}

// writeNotification encodes and writes one notification. On a
// subscriptions/listen stream (2026-07-28) the notifications it carries are
// tagged with the listen request's id, as the specification requires.
func (s *StreamSession) writeNotification(n mcp.JSONRPCNotification) bool {
	if id := s.openListenID(); id != nil && isSubscriptionNotification(n.Method) {
		n = tagSubscription(n, id)
	}
	line, err := jsonrpc.EncodeLine(n)
	if err != nil {
		s.log.Error("encoding MCP notification", streamLogSession, s.id, streamLogMethod, n.Method, streamLogError, err)
		return true
	}
	return s.write(line)
}

// write writes one line, ending the session if the peer does not take it
// within WriteTimeout or the write fails. A stream with write deadlines (a
// TLS connection) gets one per write, which costs no timer of its own
// (issue 16 item 3: a time.AfterFunc per write); others get a timer.
func (s *StreamSession) write(line []byte) bool {
	if d, ok := s.rw.(interface{ SetWriteDeadline(time.Time) error }); ok {
		if err := d.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err == nil {
			_, err := s.rw.Write(line)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w (%v)", ErrWriteTimeout, s.opts.WriteTimeout)
				s.kill(err)
				return false
			}
			return s.wrote(err)
		}
	}
	timer := time.AfterFunc(s.opts.WriteTimeout, func() {
		s.kill(fmt.Errorf("%w (%v)", ErrWriteTimeout, s.opts.WriteTimeout))
	})
	_, err := s.rw.Write(line)
	timer.Stop()
	return s.wrote(err)
}

// wrote ends the session after a failed write and reports whether the
// write succeeded.
func (s *StreamSession) wrote(err error) bool {
	if err != nil {
		s.kill(fmt.Errorf("server: write stream: %w", err)) // keeps an earlier cause, such as the timeout
		return false
	}
	return true
}

// send hands an encoded message to the writer. It blocks while the writer is
// busy, which is what bounds a session's memory when the peer reads slowly,
// and gives up once the writer has stopped.
func (s *StreamSession) send(line []byte) {
	select {
	case s.out <- line:
	case <-s.writerDead:
	}
}

// trySend hands line to the writer if it can take it now (or is dead), and
// reports whether it did.
func (s *StreamSession) trySend(line []byte) bool {
	select {
	case s.out <- line:
		return true
	case <-s.writerDead:
		return true
	default:
		return false
	}
}

// isSubscriptionNotification reports whether a notification is one that
// subscriptions/listen opts in to.
func isSubscriptionNotification(method string) bool {
	switch method {
	case mcp.MethodNotificationToolsListChanged,
		mcp.MethodNotificationPromptsListChanged,
		mcp.MethodNotificationResourcesListChanged,
		mcp.MethodNotificationResourceUpdated:
		return true
	}
	return false
}

// tagSubscription adds the subscription id to a notification's _meta. The map
// is copied because a broadcast shares it with every other session.
func tagSubscription(n mcp.JSONRPCNotification, id json.RawMessage) mcp.JSONRPCNotification {
	meta := make(map[string]any, len(n.Params.Meta)+1)
	maps.Copy(meta, n.Params.Meta)
	meta[mcp.MetaKeySubscriptionID] = id
	n.Params.Meta = meta
	return n
}
