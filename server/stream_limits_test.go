package server

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// countingConn counts the bytes the server side has read.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func TestStreamOversizedMessage(t *testing.T) {
	verifyNoLeaks(t)
	const (
		limit = 1 << 20  // 1 MiB cap on one message
		total = 64 << 20 // what the peer tries to send as one line
		chunk = 64 << 10
	)
	ts := newTestServer(t)
	client, conn := net.Pipe()
	counted := &countingConn{Conn: conn}
	ps := serveConn(t, client, counted, ts.srv, StreamOptions{MaxMessageBytes: limit})

	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// One 64 MiB line, written in chunks until the server hangs up.
	written := make(chan int64, 1)
	go func() {
		buf := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`)
		var n int64
		defer func() { written <- n }()
		for n < total {
			m, err := client.Write(buf)
			n += int64(m)
			if err != nil {
				return
			}
			buf = []byte(strings.Repeat("a", chunk))
		}
	}()

	peer := newRawPeer(client)
	resp := peer.recv(t)
	if errorCode(resp) != mcp.INVALID_REQUEST || resp["id"] != nil {
		t.Errorf("oversized message: got %v, want invalid request with id null", resp)
	}
	if msg, _ := resp["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "1048576 bytes") {
		t.Errorf("error message %q does not name the 1048576-byte limit", msg)
	}
	peer.expectEOF(t)

	if err := ps.wait(t); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("Serve = %v, want ErrMessageTooLarge", err)
	}
	if n := <-written; n >= total {
		t.Errorf("peer wrote all %d bytes; the server should have hung up first", n)
	}
	// The server stops at the cap: it reads at most the cap, a terminator and
	// one bufio buffer.
	if got, most := counted.read.Load(), int64(limit+2+jsonrpc.ReadBuffer); got > most {
		t.Errorf("server read %d bytes of the oversized line, want at most %d", got, most)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 16<<20 {
		t.Errorf("allocated %d bytes while refusing a 64 MiB line with a 1 MiB cap", grown)
	}
}

func TestStreamMalformedInput(t *testing.T) {
	tests := []struct {
		name string
		line string
		code int // 0: no response at all
		id   any // the error's id: nil (null) unless the request's was readable
	}{
		{name: "truncated JSON", line: `{"jsonrpc":"2.0","id":1,"method":`, code: mcp.PARSE_ERROR},
		{name: "not JSON", line: `hello`, code: mcp.PARSE_ERROR},
		{name: "batch", line: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, code: mcp.INVALID_REQUEST},
		{name: "bare string", line: `"ping"`, code: mcp.INVALID_REQUEST},
		{name: "object id", line: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, code: mcp.INVALID_REQUEST},
		{name: "numeric method", line: `{"jsonrpc":"2.0","id":1,"method":7}`, code: mcp.INVALID_REQUEST, id: float64(1)},
		{name: "params not an object", line: `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":[1]}`, code: mcp.INVALID_REQUEST, id: float64(2)},
		{name: "no method, no id", line: `{"jsonrpc":"2.0"}`, code: mcp.INVALID_REQUEST},
		{name: "id but no method or result", line: `{"jsonrpc":"2.0","id":"x"}`, code: mcp.INVALID_REQUEST, id: "x"},
		{name: "unsolicited error response", line: `{"jsonrpc":"2.0","id":6,"error":{"code":1,"message":"m"}}`},
		{name: "unsolicited response", line: `{"jsonrpc":"2.0","id":5,"result":{}}`},
		{name: "blank line", line: "  \t"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			ts := newTestServer(t)
			ps := servePipe(t, ts.srv, StreamOptions{})
			peer := newRawPeer(ps.client)

			peer.sendLine(t, tc.line)
			if tc.code != 0 {
				resp := peer.recv(t)
				if errorCode(resp) != tc.code {
					t.Errorf("got %v, want error %d", resp, tc.code)
				}
				if id, ok := resp["id"]; !ok || id != tc.id {
					t.Errorf("error id = %v (present %v), want %v", id, ok, tc.id)
				}
			}

			// The session goes on, and the ping's answer is the next line: a
			// message that deserves no response got none.
			peer.send(t, request("after", "ping", nil))
			if resp := peer.recv(t); resp["id"] != "after" || resp["result"] == nil {
				t.Errorf("after the bad line: got %v, want the ping result", resp)
			}
		})
	}
}

// TestStreamBackpressure checks that a session with MaxInFlight requests
// running stops reading, and that a peer that never reads its responses
// ends the session after WriteTimeout instead of pinning memory.
func TestStreamBackpressure(t *testing.T) {
	verifyNoLeaks(t)
	const inFlight = 2
	ts := newTestServer(t)
	ps := servePipe(t, ts.srv, StreamOptions{MaxInFlight: inFlight, WriteTimeout: 100 * time.Millisecond})
	peer := newRawPeer(ps.client)

	call := func(id int) map[string]any {
		return request(id, "tools/call", map[string]any{"name": "slow", "_meta": modernMeta()})
	}
	for id := range inFlight {
		peer.send(t, call(id))
	}
	ts.waitSlowStarted(t, inFlight)
	// The reader takes one more message and waits for a free slot with it...
	peer.send(t, call(inFlight))
	// ...and then reads nothing more: net.Pipe has no buffer, so this write
	// can only complete if the server reads.
	_ = ps.client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := ps.client.Write([]byte("{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"ping\"}\n")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write while the session is saturated = %v, want a deadline error (server stopped reading)", err)
	}

	// The peer never reads: once the calls finish, their responses cannot be
	// written and the write timeout ends the session.
	close(ts.release)
	if err := ps.wait(t); !errors.Is(err, ErrWriteTimeout) {
		t.Errorf("Serve = %v, want ErrWriteTimeout", err)
	}
}
