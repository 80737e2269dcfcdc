package server_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// BenchmarkHTTPStatusCall measures one caller's nefia.mtls.status calls
// over Streamable HTTP (HTTP/2): the gateway's per-request work in front
// of mcp-go (identify, body, stack) that every forwarded HTTP call pays
// too, in CPU of the process per call.
//
//	go test -run '^$' -bench HTTPStatusCall -benchtime 3s -count 5 ./server/
func BenchmarkHTTPStatusCall(b *testing.B) {
	gw := servertest.Start(b)
	cert := gw.Cert("bench", pki.RoleAgent)
	ht := &http.Transport{TLSClientConfig: gw.ClientConfig(&cert), ForceAttemptHTTP2: true}
	b.Cleanup(ht.CloseIdleConnections)
	tr, err := transport.NewStreamableHTTP("https://"+gw.Addr+server.MCPPath, transport.WithHTTPBasicClient(&http.Client{Transport: ht}))
	if err != nil {
		b.Fatal(err)
	}
	c := client.NewClient(tr)
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		b.Fatal(err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "nefia.mtls.status"
	cpu0 := processCPU(b)
	b.ResetTimer()
	for b.Loop() {
		res, err := c.CallTool(ctx, req)
		if err != nil || res.IsError {
			b.Fatalf("status: %v %v", err, res)
		}
	}
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}
