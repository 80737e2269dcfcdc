package server_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// BenchmarkStatusCall measures nefia.mtls.status calls over established mTLS
// sessions, with the audit trail on and off in the same run, so the ratio of
// the two is what the audit trail costs a read-only call.
//
//	go test -run '^$' -bench StatusCall -benchtime 3s ./server/
func BenchmarkStatusCall(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []servertest.Option
	}{
		{"audit=on", nil},
		{"audit=off", []servertest.Option{func(o *server.GatewayOptions) { o.Audit = nil }}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			gw := servertest.Start(b, tc.opts...)
			const sessions = 8
			clients := make([]*client.Client, sessions)
			for i := range clients {
				clients[i] = gw.Client(gw.Cert("bench", pki.RoleAgent))
			}
			var next atomic.Int64
			req := mcp.CallToolRequest{}
			req.Params.Name = "nefia.mtls.status"
			b.SetParallelism(sessions / 2) // 2 cores × 4 = 8 callers
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := clients[int(next.Add(1)-1)%sessions]
				for pb.Next() {
					res, err := c.CallTool(context.Background(), req)
					if err != nil || res.IsError {
						b.Errorf("status: %v %v", err, res)
						return
					}
				}
			})
			// CPU time of the process (gateway and clients) per call: less
			// sensitive than wall time to other load on a shared machine.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
