package server

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadBodyBudget checks readBody's accounting (issue 10, item 9): the
// body comes back byte for byte whatever its size and whether its length
// was declared, what it holds of the connection's budget covers every
// buffer it allocated, a refused body holds nothing, and one that finds the
// budget short is refused without being read.
func TestReadBodyBudget(t *testing.T) {
	t.Parallel()
	const limit = 300 << 10
	h := &HTTPTransport{opts: HTTPOptions{MaxMessageBytes: limit, BodyTimeout: DefaultHTTPBodyTimeout}}
	data := make([]byte, limit+1)
	_, _ = rand.Read(data)
	tests := []struct {
		name     string
		size     int
		declared bool
		taken    int // of the budget, by the connection's other requests
		status   int
	}{
		{name: "empty", size: 0},
		{name: "empty, declared", size: 0, declared: true},
		{name: "one byte", size: 1},
		{name: "first buffer exactly", size: httpFirstBodyBuffer},
		{name: "first buffer and one", size: httpFirstBodyBuffer + 1},
		{name: "several buffers", size: 3*httpBodyChunk + 17},
		{name: "at the cap", size: limit},
		{name: "at the cap, declared", size: limit, declared: true},
		{name: "over the cap", size: limit + 1, status: http.StatusRequestEntityTooLarge},
		{name: "over the cap, declared", size: limit + 1, declared: true, status: http.StatusRequestEntityTooLarge},
		{name: "declared, budget short", size: 1000, declared: true, taken: limit - 999, status: http.StatusServiceUnavailable},
		{name: "declared, budget just enough", size: 1000, declared: true, taken: limit - 1000},
		{name: "undeclared, budget short of the cap", size: 10, taken: 1, status: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			budget := newByteBudget(limit)
			if !budget.tryAcquire(tt.taken) {
				t.Fatal("setup")
			}
			src := &countingReader{r: bytes.NewReader(data[:tt.size])}
			r := httptest.NewRequest(http.MethodPost, MCPPath, src)
			r.ContentLength = -1
			if tt.declared {
				r.ContentLength = int64(tt.size)
			}
			body, n, held, status := h.readBody(httptest.NewRecorder(), r, &budget)
			free := func() int { budget.mu.Lock(); defer budget.mu.Unlock(); return budget.free }
			if status != tt.status {
				t.Fatalf("status %d, want %d", status, tt.status)
			}
			if status != 0 {
				if held != 0 || free() != limit-tt.taken {
					t.Errorf("refused body holds %d, budget free %d; want 0 and %d", held, free(), limit-tt.taken)
				}
				if status == http.StatusServiceUnavailable && src.n > 0 {
					t.Errorf("%d bytes read of a body refused for want of room", src.n)
				}
				return
			}
			got, _ := io.ReadAll(body)
			if n != tt.size || !bytes.Equal(got, data[:tt.size]) {
				t.Errorf("body of %d bytes came back as %d (length said %d), equal %v", tt.size, len(got), n, bytes.Equal(got, data[:tt.size]))
			}
			if held < tt.size || held > limit || free() != limit-tt.taken-held {
				t.Errorf("holds %d for %d bytes, budget free %d", held, tt.size, free())
			}
			budget.release(held)
			if free() != limit-tt.taken {
				t.Errorf("budget free %d after release, want %d", free(), limit-tt.taken)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
