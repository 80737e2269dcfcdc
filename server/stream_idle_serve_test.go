package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// idleLogGate is a slog handler that holds the idle check inside its log
// call ("stream session idle, closing it", logged before it kills the
// session) until release is closed.
type idleLogGate struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h *idleLogGate) Enabled(context.Context, slog.Level) bool { return true }
func (h *idleLogGate) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *idleLogGate) WithGroup(string) slog.Handler            { return h }
func (h *idleLogGate) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "stream session idle, closing it" {
		h.once.Do(func() { close(h.entered) })
		<-h.release
	}
	return nil
}

// TestIdleCheckEndsBeforeServe (attack review 4): Serve promises never to
// return before every goroutine it started has finished. The idle watch
// used to be a goroutine Serve stopped and waited for; since a92be7f it is
// a time.AfterFunc whose checkIdle Serve only stops (stopIdle), not waits
// for. A checkIdle that has decided the session is idle, and is on its way
// to kill it, outlives Serve when the session ends meanwhile (Close on a
// revocation, the peer closing): it then logs "idle, closing it" and kills
// a session that has already ended for another reason.
func TestIdleCheckEndsBeforeServe(t *testing.T) {
	gate := &idleLogGate{entered: make(chan struct{}), release: make(chan struct{})}
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{IdleTimeout: 20 * time.Millisecond, Logger: slog.New(gate)})
	select {
	case <-gate.entered:
	case <-time.After(testTimeout):
		close(gate.release)
		t.Fatal("the idle check never ran")
	}
	// The idle check is running (held in its log call, before its kill).
	// The session now ends for another reason.
	_ = ps.sess.Close()
	returned := false
	select {
	case <-ps.sess.Done():
		returned = true
	case <-time.After(300 * time.Millisecond): // Serve waits for the check: the expected outcome
	}
	close(gate.release)
	if returned {
		t.Error("Serve returned while the idle check it started was still running: " +
			"the idle timer's callback outlives Serve and kills an already ended session")
	}
	if err := ps.wait(t); err == nil {
		t.Errorf("Serve = nil after Close")
	}
}
