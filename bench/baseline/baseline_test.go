package baseline_test

import (
	"bufio"
	"context"
	"net"
	"testing"

	"github.com/nefia/nefia/bench/baseline"
)

func TestServePlainAnswersEveryLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- baseline.ServePlain(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for range 3 {
		if _, err := c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != baseline.Pong {
			t.Fatalf("answer %q, %v; want %q", line, err, baseline.Pong)
		}
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServePlain: %v", err)
	}
}
