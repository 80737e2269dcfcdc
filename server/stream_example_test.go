package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/server"
)

// Serve one connection as its own MCP session. In the gateway the connection
// is a *tls.Conn after the mutual-TLS handshake; here it is an in-memory pipe.
func ExampleServeStream() {
	srv := mcpserver.NewMCPServer("nefia", "1.0.0")
	client, conn := net.Pipe()

	done := make(chan error, 1)
	go func() { done <- server.ServeStream(context.Background(), conn, srv, server.StreamOptions{}) }()

	fmt.Fprintln(client, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	reply, _ := bufio.NewReader(client).ReadString('\n')
	fmt.Print(reply)

	_ = client.Close() // the peer hangs up: Serve returns nil
	fmt.Println(<-done)
	// Output:
	// {"jsonrpc":"2.0","id":1,"result":{}}
	// <nil>
}

// Keep each live session reachable by the certificate serial that opened it,
// so that revoking the certificate closes its sessions at once.
func ExampleStreamSession_Close() {
	srv := mcpserver.NewMCPServer("nefia", "1.0.0")
	var (
		mu   sync.Mutex
		live = map[string][]*server.StreamSession{} // by certificate serial
	)

	client, conn := net.Pipe()
	defer client.Close()
	sess, err := server.NewStreamSession(conn, srv, server.StreamOptions{
		ContextFunc: func(ctx context.Context) context.Context {
			// The gateway attaches the authenticated identity here.
			return ctx
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mu.Lock()
	live["6f1c"] = append(live["6f1c"], sess)
	mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- sess.Serve(context.Background()) }()

	// Later, the certificate with serial 6f1c is revoked.
	mu.Lock()
	for _, s := range live["6f1c"] {
		_ = s.Close()
	}
	delete(live, "6f1c")
	mu.Unlock()

	err = <-done
	fmt.Println(errors.Is(err, server.ErrSessionClosed))
	// Output:
	// true
}
