package upstream

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// TestReadSSE: the event stream syntax as readSSE reads it: which data
// reaches the handler, what the cursor keeps for resuming, and how the
// stream's end is told.
func TestReadSSE(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		stopAt    string // the handler returns true for this data
		want      []string
		wantID    string
		wantRetry time.Duration
		wantEnded bool
	}{
		{name: "two events", in: "data: a\n\ndata: b\n\n", want: []string{"a", "b"}, wantEnded: true},
		{name: "CRLF, comments, one space stripped", in: ": hi\r\ndata:  a\r\n\r\ndata:b\r\n\r\n", want: []string{" a", "b"}, wantEnded: true},
		{name: "data lines joined", in: "data: a\ndata: b\ndata:\n\n", want: []string{"a\nb\n"}, wantEnded: true},
		{name: "other event types skipped", in: "event: ping\ndata: x\n\nevent: message\ndata: y\n\n", want: []string{"y"}, wantEnded: true},
		{name: "an id counts once dispatched, without data too", in: "id: 1\nretry: 250\n\nid: 2\ndata: a\n\n", want: []string{"a"}, wantID: "2", wantRetry: 250 * time.Millisecond, wantEnded: true},
		{name: "an unfinished event is handled, its id not kept", in: "id: 1\n\nid: 2\ndata: a", want: []string{"a"}, wantID: "1", wantEnded: true},
		{name: "an id with NUL and a bad retry are ignored", in: "id: 3\n\nid: a\x00b\nretry: soon\ndata: a\n\n", want: []string{"a"}, wantID: "3", wantEnded: true},
		{name: "stops at the handler's answer", in: "data: a\n\ndata: stop\n\ndata: c\n\n", stopAt: "stop", want: []string{"a", "stop"}},
		{name: "stops at an answer in an unfinished event", in: "data: stop", stopAt: "stop", want: []string{"stop"}},
		{name: "an empty stream", in: "", wantEnded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			var cur sseCursor
			// One byte per read: no event may depend on where reads split.
			ended, err := readSSE(iotest.OneByteReader(strings.NewReader(tt.in)), &cur, func(data []byte) bool {
				got = append(got, string(data))
				return tt.stopAt != "" && string(data) == tt.stopAt
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || ended != tt.wantEnded {
				t.Errorf("events %q, ended %v; want %q, %v", got, ended, tt.want, tt.wantEnded)
			}
			if cur.lastID != tt.wantID || cur.retry != tt.wantRetry {
				t.Errorf("cursor %+v, want id %q retry %v", cur, tt.wantID, tt.wantRetry)
			}
		})
	}
}

// TestReadSSEBroken: a stream that breaks off is an error, not an end.
func TestReadSSEBroken(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(boom))
	ended, err := readSSE(r, &sseCursor{}, func([]byte) bool { return false })
	if ended || !errors.Is(err, boom) {
		t.Errorf("ended %v, err %v; want the read's error", ended, err)
	}
}
