package server_test

// Shared helpers of the hardening tests (issue 7): a raw JSON-RPC client that
// needs no testing.T (so that many can run in goroutines), a captured
// ClientHello, and counters of what the test process holds (goroutines, file
// descriptors, heap) so each test can prove it all came back.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nefia/nefia/server/servertest"
)

// rpcClient speaks newline-delimited JSON-RPC over one TLS connection to the
// gateway. Its methods return errors instead of failing the test, so it can
// be used from any goroutine.
type rpcClient struct {
	conn *tls.Conn
	r    *bufio.Reader
	id   int
}

// dialRPC connects with cfg and performs the MCP initialize handshake.
func dialRPC(gw *servertest.Gateway, cfg *tls.Config) (*rpcClient, error) {
	conn, err := gw.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return startRPC(conn)
}

// dialRPCSlowReader is dialRPC with a receive buffer of rcvbuf bytes, so that
// answers the client does not read back up into the gateway quickly.
func dialRPCSlowReader(gw *servertest.Gateway, cfg *tls.Config, rcvbuf int) (*rpcClient, error) {
	d := &net.Dialer{Timeout: waitLimit, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setReceiveBuffer(fd, rcvbuf) }); err != nil {
			return err
		}
		return serr
	}}
	raw, err := d.Dial("tcp", gw.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	conn := tls.Client(raw, cfg)
	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return startRPC(conn)
}

// startRPC performs the MCP initialize handshake on conn.
func startRPC(conn *tls.Conn) (*rpcClient, error) {
	c := &rpcClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if _, err := c.call("initialize", map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "hardening", "version": "1"},
	}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if err := c.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("initialized: %w", err)
	}
	return c, nil
}

func (c *rpcClient) Close() error { return c.conn.Close() }

func (c *rpcClient) send(msg any) error {
	line, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitLimit))
	_, err = c.conn.Write(append(line, '\n'))
	return err
}

// rpcReply is a JSON-RPC response.
type rpcReply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// recv reads the next response, skipping notifications.
func (c *rpcClient) recv() (rpcReply, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(waitLimit))
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return rpcReply{}, err
		}
		var rep rpcReply
		if err := json.Unmarshal(line, &rep); err != nil {
			return rpcReply{}, fmt.Errorf("bad line %.200q: %w", line, err)
		}
		if len(rep.ID) > 0 {
			return rep, nil
		}
	}
}

// call sends one request and returns its result.
func (c *rpcClient) call(method string, params any) (json.RawMessage, error) {
	c.id++
	msg := map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if err := c.send(msg); err != nil {
		return nil, err
	}
	rep, err := c.recv()
	if err != nil {
		return nil, err
	}
	if string(rep.ID) != strconv.Itoa(c.id) {
		return nil, fmt.Errorf("answer to id %s, want %d", rep.ID, c.id)
	}
	if rep.Error != nil {
		return nil, fmt.Errorf("%s: JSON-RPC error %d: %s", method, rep.Error.Code, rep.Error.Message)
	}
	return rep.Result, nil
}

// toolResult is the part of a tools/call result the tests look at.
type toolResult struct {
	IsError bool `json:"isError"`
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
	StructuredContent map[string]any `json:"structuredContent"`
}

// status calls nefia.mtls.status and fails on a tool error.
func (c *rpcClient) status() (toolResult, error) {
	raw, err := c.call("tools/call", map[string]any{"name": "nefia.mtls.status", "arguments": map[string]any{}})
	if err != nil {
		return toolResult{}, err
	}
	var res toolResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, err
	}
	if res.IsError {
		return res, fmt.Errorf("status is a tool error: %+v", res.Content)
	}
	return res, nil
}

// clientHello returns the first TLS record a client with cfg sends: a real
// ClientHello, for clients that say hello and then stall.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(client, cfg).Handshake() // fails once server is closed
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(server, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		t.Fatal(err)
	}
	server.Close()
	client.Close()
	<-done
	if hdr[0] != 22 || body[0] != 1 { // handshake record, ClientHello
		t.Fatalf("captured record %x is not a ClientHello", hdr)
	}
	return append(hdr[:], body...)
}

// fdCount returns the number of open file descriptors of the test process,
// or -1 where /proc/self/fd does not exist.
func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}

// footprint is what the test process holds: the gateway runs in it, so
// these are the gateway's resources plus the test's own clients.
type footprint struct {
	goroutines, fds, conns int
}

func (f footprint) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d gateway connections", f.goroutines, f.fds, f.conns)
}

func measure(gw *servertest.Gateway) footprint {
	return footprint{goroutines: runtime.NumGoroutine(), fds: fdCount(), conns: gw.Count()}
}

// backToBaseline waits until goroutines, file descriptors and the gateway's
// connection count are no higher than in base, and reports the figures.
func backToBaseline(t *testing.T, gw *servertest.Gateway, base footprint) footprint {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		now := measure(gw)
		if now.goroutines <= base.goroutines && now.fds <= base.fds && now.conns <= base.conns {
			return now
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("not back to baseline after %v: %v, baseline %v\n%s", waitLimit, now, base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memSampler records the peak Go memory in use (heap in use plus goroutine
// stacks) and the peak RSS while a load runs.
type memSampler struct {
	baseHeap, baseRSS uint64
	stop              chan struct{}
	done              chan struct{}

	mu                sync.Mutex
	peakHeap, peakRSS uint64
}

// startMemSampler collects garbage, takes the baseline and samples every
// 20 ms until stopped. ReadMemStats stops the world: sampling every 5 ms made
// a flooded gateway miss its deadlines on a busy machine.
func startMemSampler() *memSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := &memSampler{baseHeap: inUse(&ms), baseRSS: vmRSS(), stop: make(chan struct{}), done: make(chan struct{})}
	s.peakHeap, s.peakRSS = s.baseHeap, s.baseRSS
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *memSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss := vmRSS()
	s.mu.Lock()
	s.peakHeap = max(s.peakHeap, inUse(&ms))
	s.peakRSS = max(s.peakRSS, rss)
	s.mu.Unlock()
}

// inUse is the Go memory that live objects and goroutines hold.
func inUse(ms *runtime.MemStats) uint64 { return ms.HeapInuse + ms.StackInuse }

// peak returns how far Go memory in use and RSS rose above the baseline so far.
func (s *memSampler) peak() (heap, rss uint64) {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakHeap - s.baseHeap, s.peakRSS - min(s.baseRSS, s.peakRSS)
}

func (s *memSampler) Stop() {
	close(s.stop)
	<-s.done
}

// vmRSS returns the process's resident set size from /proc/self/status, or 0.
func vmRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// isClosed reports whether err means the peer closed or reset the connection
// (as opposed to our own deadline passing).
func isClosed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// testSeed returns the seed of a randomized test: $HARDENING_SEED to replay a
// failure, else a fresh one. The caller logs it with every failure.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("HARDENING_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HARDENING_SEED=%q: %v", s, err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// waitWithin is waitFor with its own limit, for waits that take seconds
// under -race on a busy machine.
func waitWithin(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
