package upstream

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// stubTransport answers every request with a fresh JSON body.
type stubTransport struct{ header http.Header }

func (s stubTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: s.header, Body: io.NopCloser(strings.NewReader(`{"ok":true}`))}, nil
}

// TestLimitTransportAllocations (issue 12 item 2): what limitTransport
// adds to each request to an HTTP upstream is its own context, one watch
// of the caller's, and the body's wrappers. It read the Content-Type with
// mime.ParseMediaType (a map of parameters per response, and a string per
// parameter) and watched the caller twice, before and after the headers:
// 17 allocations for this response, now 12.
func TestLimitTransportAllocations(t *testing.T) {
	lt := &limitTransport{base: stubTransport{header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}}, max: MaxMessageBytes}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://up.example/mcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func() {
		resp, err := lt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	call()
	const want = 12 // the stub's response and body included
	if n := testing.AllocsPerRun(200, call); n > want {
		t.Errorf("a request through limitTransport allocates %.0f times, want at most %d", n, want)
	}
}

func TestIsEventStream(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, ct string
		want     bool
	}{
		{name: "plain", ct: "text/event-stream", want: true},
		{name: "with a parameter", ct: "text/event-stream; charset=utf-8", want: true},
		{name: "upper case, spaces", ct: " Text/Event-Stream ;x=y", want: true},
		{name: "json", ct: "application/json"},
		{name: "none", ct: ""},
		{name: "a longer type", ct: "text/event-streams"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := isEventStream(tt.ct); got != tt.want {
				t.Errorf("isEventStream(%q) = %v, want %v", tt.ct, got, tt.want)
			}
		})
	}
}
