package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/bench/baseline"
	"github.com/nefia/nefia/server"
)

// The echo server of the upstream phase, run as 'nefia-bench serve-echo'.

// Ways to serve the echo server on stdio (serve-echo --stdio-server).
const (
	// stdioStream is nefia's own stream code (server.ServeStream), the
	// code the direct echo server serves its mutual-TLS connections with:
	// the default, so that direct and via-nefia differ by nefia alone.
	stdioStream = "stream"
	// stdioMCPGo is mcp-go's StdioServer, what the upstream phase ran
	// before round 3 (issue 12 item 1): it costs the upstream process
	// about three times the CPU per call of stdioStream at 50 sessions.
	stdioMCPGo = "mcp-go"
)

// newEchoServer is the Go upstream: one tool, echo, returning its text as
// structured content and as text.
func newEchoServer() *mcpserver.MCPServer {
	srv := mcpserver.NewMCPServer("bench-echo", "1")
	srv.AddTool(mcp.NewTool("echo", mcp.WithDescription("Echo the text."), mcp.WithString("text", mcp.Required())),
		func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			text := req.GetString("text", "")
			return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
		})
	return srv
}

// serveEcho runs the echo server over stdio (--stdio: as nefia's upstream)
// or on a mutual-TLS listener (newline-delimited JSON-RPC per connection,
// the transport the load clients speak), to be called directly.
func serveEcho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve-echo", flag.ContinueOnError)
	stdio := fs.Bool("stdio", false, "serve one session on stdin/stdout")
	stdioServer := fs.String("stdio-server", stdioStream, "with --stdio: "+stdioStream+" (nefia's server.ServeStream, as the direct server) or "+stdioMCPGo+" (mcp-go's StdioServer)")
	httpMode := fs.Bool("http", false, "serve Streamable HTTP at /mcp instead of the raw stream (client certificates required only with --ca)")
	tf := addServerFlags(fs)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stdioServer != stdioStream && *stdioServer != stdioMCPGo {
		return fmt.Errorf("--stdio-server: want %s or %s, not %q", stdioStream, stdioMCPGo, *stdioServer)
	}
	stop, err := startProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	srv := newEchoServer()
	if *stdio {
		return serveEchoStdio(ctx, srv, *stdioServer, os.Stdin, os.Stdout)
	}
	cfg, err := echoTLS(*tf.cert, *tf.key, *tf.ca)
	if err != nil {
		return err
	}
	ln, err := listen(*tf.addr, stdout)
	if err != nil {
		return err
	}
	if *httpMode {
		return serveEchoHTTP(ctx, ln, cfg, srv)
	}
	ln = tls.NewListener(ln, cfg)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = server.ServeStream(ctx, conn, srv, server.StreamOptions{})
		}()
	}
}

// serveEchoStdio serves one session of srv on in and out (the process's
// stdin and stdout) until in ends, with the code named by how
// (stdioStream or stdioMCPGo).
func serveEchoStdio(ctx context.Context, srv *mcpserver.MCPServer, how string, in io.Reader, out io.Writer) error {
	var err error
	if how == stdioMCPGo {
		err = mcpserver.NewStdioServer(srv).Listen(ctx, in, out)
	} else {
		err = server.ServeStream(ctx, stdioStreams{in, out}, srv, server.StreamOptions{})
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// stdioStreams joins stdin and stdout into the stream a session serves
// (as cmd/nefia's stdio mode does). Close is a no-op: the process owns its
// standard streams and exits right after.
type stdioStreams struct {
	io.Reader
	io.Writer
}

func (stdioStreams) Close() error { return nil }

// echoTLS is the echo server's TLS: nefia's client-certificate check
// (baseline.Config) with a CA, server authentication only without (the
// HTTP upstream nefia reaches with ca_file).
func echoTLS(cert, key, ca string) (*tls.Config, error) {
	if ca != "" {
		return baseline.Config(cert, key, ca)
	}
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{kp}}, nil
}

// serveEchoHTTP serves srv over Streamable HTTP (mcp-go's server, HTTP/2
// or HTTP/1.1 over TLS) at /mcp on ln until ctx ends.
func serveEchoHTTP(ctx context.Context, ln net.Listener, cfg *tls.Config, srv *mcpserver.MCPServer) error {
	return serveMCPPath(ctx, ln, cfg, mcpserver.NewStreamableHTTPServer(srv))
}

// serveMCPPath serves h at /mcp over TLS on ln until ctx ends.
func serveMCPPath(ctx context.Context, ln net.Listener, cfg *tls.Config, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle(server.MCPPath, h)
	hs := &http.Server{Handler: mux, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
