package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// syncBuffer is a bytes.Buffer a logger and a test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns what was written since the last take.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// TestExpiryWarnings (issue 13 item 4): the gateway warns at start and at
// every (daily) tick about each client certificate in the expiry window
// that no renewal replaced, the server certificate within 30 days and the
// CA within a year, on an injected clock and ticker.
func TestExpiryWarnings(t *testing.T) {
	t.Parallel()
	start := time.Now()
	clock := pkitest.NewClock(start)
	store := pkitest.NewStore(t, pki.WithClock(clock))
	issue := func(name string, d time.Duration, renews string) *pki.Issued {
		t.Helper()
		iss, err := store.Issue(pki.IssueRequest{Name: name, Role: pki.RoleAgent, Duration: d, Renews: renews})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	soon := issue("soon", time.Hour, "")
	issue("later", 30*24*time.Hour, "")
	renewed := issue("renewed", time.Hour, "")
	issue("renewed", 30*24*time.Hour, renewed.Serial)
	revoked := issue("revoked", time.Hour, "")
	if _, err := store.Revoke(revoked.Serial, "test"); err != nil {
		t.Fatal(err)
	}

	var buf syncBuffer
	w := expiryWatch{store: store, caFile: store.Path(pki.CACertFile), certFile: store.Path(pki.ServerCertFile),
		clientWindow: 72 * time.Hour, log: slog.New(slog.NewTextHandler(&buf, nil))}
	tick := make(chan time.Time)
	warned := make(chan struct{})
	w.warned = warned
	stop := w.start(context.Background(), tick)
	defer stop()

	// round returns the warnings of one round, once the watch finished it.
	round := func() string {
		t.Helper()
		select {
		case <-warned:
		case <-time.After(10 * time.Second):
			t.Fatal("no round of warnings within 10s")
		}
		return buf.take()
	}
	// tickAt moves the clock and ticks.
	tickAt := func(at time.Time) string {
		t.Helper()
		clock.Set(at)
		tick <- at
		return round()
	}
	count := func(out, msg string) int { return strings.Count(out, msg) }
	const clientMsg, serverMsg, caMsg = "client certificate expires soon", "server certificate expires soon", "CA certificate expires soon"

	tests := []struct {
		name                 string
		out                  string
		client, server, ca   int
		mustName, mustNotAny []string
	}{
		{name: "at start: nothing is due", out: round(), mustNotAny: []string{"name="}},
		{name: "past two thirds of soon's hour", out: tickAt(start.Add(45 * time.Minute)), client: 1, mustName: []string{"name=soon", soon.Serial},
			mustNotAny: []string{"name=later", "name=renewed", "name=revoked"}},
		{name: "the next tick: the same warning again", out: tickAt(start.Add(50 * time.Minute)), client: 1, mustName: []string{"name=soon"}},
		{name: "28 days on: later and the renewal are due", out: tickAt(start.Add(28 * 24 * time.Hour)), client: 2, mustName: []string{"name=later", "name=renewed"}},
		{name: "29 days before the server certificate ends", out: tickAt(start.Add(336 * 24 * time.Hour)), server: 1},
		{name: "within a year of the CA's end", out: tickAt(start.Add(pki.CAValidity - 300*24*time.Hour)), server: 1, ca: 1},
	}
	for _, tt := range tests {
		if got := count(tt.out, clientMsg); got != tt.client {
			t.Errorf("%s: %d client warnings, want %d:\n%s", tt.name, got, tt.client, tt.out)
		}
		if got := count(tt.out, serverMsg); got != tt.server {
			t.Errorf("%s: %d server warnings, want %d:\n%s", tt.name, got, tt.server, tt.out)
		}
		if got := count(tt.out, caMsg); got != tt.ca {
			t.Errorf("%s: %d CA warnings, want %d:\n%s", tt.name, got, tt.ca, tt.out)
		}
		for _, s := range tt.mustName {
			if !strings.Contains(tt.out, s) {
				t.Errorf("%s: no %q in:\n%s", tt.name, s, tt.out)
			}
		}
		for _, s := range tt.mustNotAny {
			if strings.Contains(tt.out, s) {
				t.Errorf("%s: %q warned about:\n%s", tt.name, s, tt.out)
			}
		}
	}
	if !strings.Contains(tests[1].out, "level=WARN") {
		t.Errorf("the warning is not at warn:\n%s", tests[1].out)
	}
}
