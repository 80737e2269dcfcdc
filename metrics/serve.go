package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ErrNoHost is returned for a listen address without a host (":9090"): the
// metrics must not be exposed on every interface by accident, so that takes
// an explicit "0.0.0.0:9090" or "[::]:9090".
var ErrNoHost = errors.New("metrics: listen address needs a host (127.0.0.1:9090 for this machine only, 0.0.0.0:9090 to expose it)")

// Serve exposes h at /metrics on addr until ctx ends. The listener is plain
// HTTP on its own port, apart from the mTLS listener: scrapers do not hold
// nefia client certificates, and the figures hold no secrets (no names, no
// serials, no paths).
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics: listen address %q: %w", addr, err)
	}
	if host == "" {
		return ErrNoHost
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, h, log)
}

func serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	})
	defer stop()
	log.Info("metrics listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}
