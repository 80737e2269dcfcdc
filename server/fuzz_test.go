package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"go.uber.org/goleak"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

// fuzzSentinel follows every fuzz input on a line of its own: the session
// must answer it (or end), which proves the input did not wedge the reader.
const fuzzSentinel = `{"jsonrpc":"2.0","id":"fuzz-end","method":"ping"}`

// fuzzMaxMessage is small so that inputs the fuzzer can build reach the
// oversized-message path too.
const fuzzMaxMessage = 2048

// FuzzStreamSession feeds arbitrary bytes, as the client side of a net.Pipe,
// to a StreamSession serving nefia's real MCP server (its four tools, an
// operator identity, a state directory of its own). Whatever the bytes, the
// session must not panic, must either answer the ping that follows them or
// end, must write only JSON-RPC 2.0 objects, one per line, and never a
// private key, and must leave no goroutine behind once the peer hangs up.
func FuzzStreamSession(f *testing.F) {
	dir := f.TempDir()
	srv, err := NewMCPServer(tools.Deps{Store: pki.NewStore(filepath.Join(dir, "state")), ConfigPath: filepath.Join(dir, "nefia.yaml")}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	agent := identity.Agent{Name: "fuzz", Serial: "f022", Role: pki.RoleOperator, Transport: identity.TransportStream}
	opts := StreamOptions{
		MaxMessageBytes: fuzzMaxMessage,
		MaxInFlight:     8,
		WriteTimeout:    5 * time.Second,
		DrainTimeout:    100 * time.Millisecond,
		ContextFunc:     func(ctx context.Context) context.Context { return identity.WithAgent(ctx, agent) },
	}
	// A first session starts whatever mcp-go starts once per process, so
	// that the leak check below sees only what one session leaves.
	fuzzSession(f, srv, opts, []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"warm-up","version":"1"}}}`))

	f.Fuzz(func(t *testing.T, input []byte) {
		running := goleak.IgnoreCurrent()
		fuzzSession(t, srv, opts, input)
		if err := goleak.Find(running); err != nil {
			t.Fatalf("goroutines left behind: %v", err)
		}
	})
}

// fuzzSession serves one session: input and the sentinel go in, every line
// that comes out is checked, and the peer hangs up once the sentinel is
// answered or the session has ended.
func fuzzSession(t testing.TB, srv *mcpserver.MCPServer, opts StreamOptions, input []byte) {
	t.Helper()
	const wait = 10 * time.Second
	peer, conn := net.Pipe()
	sess, err := NewStreamSession(conn, srv, opts)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sess.Serve(context.Background()) }()

	answered := make(chan struct{})
	readerDone := make(chan struct{})
	var bad []string
	go func() {
		defer close(readerDone)
		r := bufio.NewReader(peer)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			if problem := checkOutputLine(line); problem != "" {
				bad = append(bad, problem+": "+string(line))
			}
			var msg struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(line, &msg) == nil && string(msg.ID) == `"fuzz-end"` {
				select {
				case <-answered:
				default:
					close(answered)
				}
			}
		}
	}()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		// Errors mean the session has ended and closed the pipe.
		if _, err := peer.Write(input); err != nil {
			return
		}
		_, _ = peer.Write([]byte("\n" + fuzzSentinel + "\n"))
	}()

	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	select {
	case <-answered:
	case <-sess.Done():
	case <-timeout.C:
		peer.Close()
		t.Fatalf("the session neither answered the ping after the input nor ended within %v", wait)
	}
	peer.Close()
	select {
	case <-served:
	case <-timeout.C:
		t.Fatalf("Serve did not return within %v of the peer hanging up", wait)
	}
	<-writerDone
	<-readerDone
	for _, b := range bad {
		t.Error(b)
	}
}

// checkOutputLine says what is wrong with one line the session wrote, or "".
func checkOutputLine(line []byte) string {
	if bytes.Contains(line, []byte("PRIVATE KEY")) {
		return "private key material in the output"
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return "not a JSON object"
	}
	if string(msg["jsonrpc"]) != `"2.0"` {
		return "not JSON-RPC 2.0"
	}
	_, isResult := msg["result"]
	_, isError := msg["error"]
	_, isCall := msg["method"]
	if !isResult && !isError && !isCall {
		return "neither a response nor a request or notification"
	}
	return ""
}
