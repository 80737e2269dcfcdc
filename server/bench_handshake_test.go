package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/nefia/nefia/bench/baseline"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// BenchmarkHandshakePing measures one connection of the bench's
// handshake_full workload (full TLS 1.3 mutual-auth handshake, an MCP
// ping, close) against the gateway and against the crypto/tls ceiling
// (bench/baseline) with the same certificates, one client at a time. The
// client's share is the same in both, so the difference in B/op and
// allocs/op is what the gateway allocates per connection beyond
// crypto/tls (issue 16):
//
//	go test -run '^$' -bench HandshakePing -benchtime 400x ./server/
func BenchmarkHandshakePing(b *testing.B) {
	gw := servertest.Start(b)
	cert := gw.Cert("bench", pki.RoleAgent)
	cfg := gw.ClientConfig(&cert)
	b.Run("server=nefia", func(b *testing.B) { benchProbe(b, gw, gw.Addr, cfg) })
	b.Run("server=crypto-tls", func(b *testing.B) {
		srvCfg, err := baseline.Config(gw.Store.Path(pki.ServerCertFile), gw.Store.Path(pki.ServerKeyFile), gw.Store.Path(pki.CACertFile))
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- baseline.ServeTLS(ctx, ln, srvCfg) }()
		b.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("baseline server: %v", err)
			}
		})
		benchProbe(b, gw, ln.Addr().String(), cfg)
	})
}

// benchProbe connects to addr, pings and closes, b.N times.
func benchProbe(b *testing.B, gw *servertest.Gateway, addr string, cfg *tls.Config) {
	target := *gw
	target.Addr = addr
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := target.Probe(cfg); err != nil {
			b.Fatal(err)
		}
	}
}
