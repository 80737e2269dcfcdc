package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestServeRefusesAddressWithoutHost(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":0", "nohostport"} {
		err := Serve(t.Context(), addr, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
		if err == nil {
			t.Errorf("Serve(%q) = nil, want an error", addr)
		}
		if addr == ":0" && !errors.Is(err, ErrNoHost) {
			t.Errorf("Serve(%q) = %v, want ErrNoHost", addr, err)
		}
	}
}

func TestServeScrapeAndStop(t *testing.T) {
	t.Parallel()
	m := New(Options{Revoked: func() int { return 1 }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, m.Handler(), slog.New(slog.DiscardHandler)) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "nefia_revoked_certificates 1") {
		t.Errorf("scrape lacks nefia_revoked_certificates 1:\n%.500s", body)
	}
	if resp, err := http.Post("http://"+ln.Addr().String()+"/metrics", "text/plain", nil); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /metrics: %d, want 405", resp.StatusCode)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after cancel: %v", err)
	}
}
