// Package baseline holds the two trivial servers nefia is compared with:
//
//   - ServeTLS, the ceiling: a minimal crypto/tls server with nefia's own
//     certificates and the same client-certificate policy crypto/tls can
//     express (TLS 1.3 only, RequireAndVerifyClientCert against nefia's CA),
//     that answers each request line with an MCP ping result. Whatever nefia
//     spends beyond it is nefia's own (policy, sessions, MCP, audit, logs).
//   - ServePlain, the backend stunnel and nginx front: the same answer over
//     plain TCP, so the proxies' figures are TLS termination plus a hop.
//
// Neither parses JSON: the answer is canned, which is what makes them a
// ceiling rather than a competitor.
package baseline

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nefia/nefia/pki"
)

// Pong is the answer to every line: the result of the MCP ping the load
// generator sends (id 1).
const Pong = `{"jsonrpc":"2.0","id":1,"result":{}}` + "\n"

// maxLine bounds a request line, as nefia bounds a message.
const maxLine = 64 << 10

// Config returns the TLS policy of the ceiling server: TLS 1.3 only, a
// client certificate required and verified against the CA in caFile.
// Session tickets stay on (crypto/tls's default), as in nefia.
func Config(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("baseline: load server certificate: %w", err)
	}
	pool, err := pki.LoadCertPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ServeTLS answers ping lines over TLS on ln until ctx ends.
func ServeTLS(ctx context.Context, ln net.Listener, cfg *tls.Config) error {
	return serve(ctx, ln, func(c net.Conn) net.Conn {
		tc := tls.Server(c, cfg)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return nil
		}
		_ = c.SetDeadline(time.Time{})
		return tc
	})
}

// ServePlain answers ping lines over plain TCP on ln until ctx ends: the
// backend behind stunnel and nginx.
func ServePlain(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, func(c net.Conn) net.Conn { return c })
}

func serve(ctx context.Context, ln net.Listener, wrap func(net.Conn) net.Conn) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		raw, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("baseline: accept: %w", err)
		}
		mu.Lock()
		open[raw] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(open, raw)
				mu.Unlock()
				raw.Close()
			}()
			c := wrap(raw)
			if c == nil {
				return
			}
			answer(c)
			c.Close()
		}()
	}
}

// answer writes Pong for every line read from c until it ends.
func answer(c net.Conn) {
	br := bufio.NewReaderSize(c, 4096)
	pong := []byte(Pong)
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			n = 0
		case errors.Is(err, bufio.ErrBufferFull):
			if n += len(line); n > maxLine {
				return
			}
			continue
		default:
			return
		}
		if _, err := c.Write(pong); err != nil {
			return
		}
	}
}
