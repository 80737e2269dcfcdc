package jsonrpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// readAll reads lines until the first error.
func readAll(lr *LineReader) ([]string, error) {
	var got []string
	for {
		line, err := lr.Next()
		if err != nil {
			return got, err
		}
		got = append(got, string(line))
	}
}

// TestLineReader holds the cases of server's TestLineReader (limit 8),
// unchanged.
func TestLineReader(t *testing.T) {
	t.Parallel()
	const limit = 8
	tests := []struct {
		name  string
		input string
		want  []string // lines returned before the final error
		err   error
	}{
		{name: "lines", input: "{\"a\":1}\n{}\n", want: []string{`{"a":1}`, `{}`}, err: io.EOF},
		{name: "crlf", input: "{}\r\n[]\r\n", want: []string{`{}`, `[]`}, err: io.EOF},
		{name: "last line unterminated", input: "{}\n12", want: []string{`{}`, `12`}, err: io.EOF},
		{name: "blank lines skipped", input: "\n \r\n\t\n{}\n", want: []string{`{}`}, err: io.EOF},
		{name: "exactly the limit", input: "12345678\n", want: []string{"12345678"}, err: io.EOF},
		{name: "limit with crlf", input: "12345678\r\n", want: []string{"12345678"}, err: io.EOF},
		{name: "one over the limit", input: "{}\n123456789\n{}\n", want: []string{`{}`}, err: ErrLineTooLong},
		{name: "unterminated over the limit", input: "123456789", err: ErrLineTooLong},
		{name: "far over the limit", input: strings.Repeat("x", 1000), err: ErrLineTooLong},
		{name: "empty", input: "", err: io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lr := NewLineReader(strings.NewReader(tc.input), limit)
			got, err := readAll(lr)
			if !errors.Is(err, tc.err) {
				t.Errorf("error = %v, want %v", err, tc.err)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("lines = %q, want %q", got, tc.want)
			}
			if cap(lr.buf) > limit+2 {
				t.Errorf("buffer grew to %d bytes, over the %d-byte cap", cap(lr.buf), limit+2)
			}
		})
	}
}

// TestLineReaderBridgeCases holds the cases of bridge's TestLineReader,
// which read with the caps the bridge uses (lines far longer than the bufio
// buffer among them). The bridge maps ErrLineTooLong to its
// ErrMessageTooLarge.
func TestLineReaderBridgeCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		input   string
		max     int
		want    []string
		wantErr error
	}{
		{"lines", "a\nb\n", 10, []string{"a", "b"}, io.EOF},
		{"CRLF and blank lines", "a\r\n\r\n  \nb\r\n", 10, []string{"a", "b"}, io.EOF},
		{"last line without newline", "a\nb", 10, []string{"a", "b"}, io.EOF},
		{"at the limit", strings.Repeat("x", 10) + "\n", 10, []string{strings.Repeat("x", 10)}, io.EOF},
		{"over the limit", strings.Repeat("x", 11) + "\n", 10, nil, ErrLineTooLong},
		{"over the limit beyond the buffer", strings.Repeat("x", 200<<10) + "\n", 100 << 10, nil, ErrLineTooLong},
		{"long line within the limit", strings.Repeat("x", 200<<10) + "\n", 300 << 10, []string{strings.Repeat("x", 200<<10)}, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readAll(NewLineReader(strings.NewReader(tt.input), tt.max))
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || !errors.Is(err, tt.wantErr) {
				t.Errorf("lines %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestLineReaderLongLines checks lines longer than the bufio buffer, which
// are assembled piecewise (from server).
func TestLineReaderLongLines(t *testing.T) {
	t.Parallel()
	const limit = 3*ReadBuffer + 10
	long := strings.Repeat("y", limit)
	lr := NewLineReader(bufio.NewReaderSize(strings.NewReader(long+"\n"+long+"z\n"), 16), limit)
	line, err := lr.Next()
	if err != nil || string(line) != long {
		t.Fatalf("first line: %d bytes, %v; want %d bytes", len(line), err, limit)
	}
	if _, err := lr.Next(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("second line: error %v, want ErrLineTooLong", err)
	}
}

// TestLineReaderLinesAreTheCallers checks that a returned line is the
// caller's: reading on, and appending to it (the bridge appends the
// newline before writing), change no other line.
func TestLineReaderLinesAreTheCallers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("L", 3*ReadBuffer)
	lr := NewLineReader(strings.NewReader("a\r\n"+long+"\r\nb\n"+long+"\n"), 4*ReadBuffer)
	var lines [][]byte
	for {
		line, err := lr.Next()
		if err != nil {
			break
		}
		lines = append(lines, line)
		_ = append(line, '\n', 'X', 'X', 'X')
	}
	want := []string{"a", long, "b", long}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(lines), len(want))
	}
	for i, w := range want {
		if !bytes.Equal(lines[i], []byte(w)) {
			t.Errorf("line %d changed after reading on: %.20q..., want %.20q...", i, lines[i], w)
		}
	}
}

// FuzzLineReader compares LineReader with the plain definition of its
// framing: split on "\n" or "\r\n", trim JSON whitespace, skip blank
// lines, and stop at the first line whose content (all but its terminator)
// is over the cap.
func FuzzLineReader(f *testing.F) {
	for _, seed := range []string{"", "a\nb", "{}\r\n\r\n  \n[]", "123456789\n", "12345678\r\n", "\r\r\n", "x\n\n\n" + strings.Repeat("y", 40)} {
		f.Add([]byte(seed), uint8(8))
	}
	f.Fuzz(func(t *testing.T, input []byte, limit uint8) {
		maxBytes := int(limit%64) + 1
		var want []string
		wantErr := io.EOF
		pieces := bytes.Split(input, []byte("\n"))
		for i, raw := range pieces {
			content := bytes.TrimSuffix(raw, []byte("\r")) // "\r\n" is a terminator
			if i == len(pieces)-1 {
				if len(raw) == 0 {
					break // input ended with a terminator
				}
				content = raw // no terminator: a trailing "\r" is content
			}
			if len(content) > maxBytes {
				wantErr = ErrLineTooLong
				break
			}
			if line := bytes.Trim(raw, " \t\r\n"); len(line) > 0 {
				want = append(want, string(line))
			}
		}
		lr := NewLineReader(bufio.NewReaderSize(bytes.NewReader(input), 16), maxBytes)
		got, err := readAll(lr)
		if !errors.Is(err, wantErr) || strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Fatalf("max %d: got %q, %v; want %q, %v", maxBytes, got, err, want, wantErr)
		}
		if cap(lr.buf) > maxBytes+2 {
			t.Errorf("buffer grew to %d bytes, over the %d-byte cap", cap(lr.buf), maxBytes+2)
		}
	})
}

// TestLineReaderShortLineNotAssembled: a line that fits in the read buffer
// is copied out of it once, not first assembled in a second buffer of
// ReadBuffer bytes (issue 16: one per connection, for a ping). On the base
// commit a reader that read one ping allocated 8,336 bytes; now 4,240: the read buffer
// and the line. Not parallel: it reads the process's allocation counter.
func TestLineReaderShortLineNotAssembled(t *testing.T) {
	const ping = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	src := strings.NewReader("")
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		src.Reset(ping + "\r\n")
		lr := NewLineReader(src, 4<<20)
		if line, err := lr.Next(); err != nil || string(line) != ping {
			t.Fatalf("Next = %q, %v", line, err)
		}
	}
	runtime.ReadMemStats(&after)
	perReader := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per reader of one ping", perReader)
	if limit := uint64(ReadBuffer + 512); perReader > limit {
		t.Errorf("a reader of one ping allocated %d bytes, want at most %d (its read buffer and the line)", perReader, limit)
	}
}

// TestLineReaderReleaseReusesBuffer: a reader released when its stream is
// done gives its read buffer to the next one (issue 16: a 4 KB buffer per
// connection). Without it (Release made a no-op) each reader of two pings
// allocated 4,336 bytes; with it 144, the lines and the reader (a pool
// dropping some buffers, as under the race detector, averages ≈1 KB). Not
// parallel: it reads the process's allocation counter.
func TestLineReaderReleaseReusesBuffer(t *testing.T) {
	const ping = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	src := strings.NewReader("")
	read := func() {
		src.Reset(ping + "\n" + ping + "\n")
		lr := NewLineReader(src, 4<<20)
		for range 2 {
			if line, err := lr.Next(); err != nil || string(line) != ping {
				t.Fatalf("Next = %q, %v", line, err)
			}
		}
		lr.Release()
		lr.Release() // a second Release does nothing
	}
	read() // the pool's first buffer
	const runs = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		read()
	}
	runtime.ReadMemStats(&after)
	perReader := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per released reader of two pings", perReader)
	if limit := uint64(ReadBuffer / 2); perReader > limit {
		t.Errorf("a released reader of two pings allocated %d bytes on average, want at most %d", perReader, limit)
	}
}

// TestLineReaderReleasedBufferHoldsNothing: a buffer handed to another
// reader carries nothing of the stream it served, not even bytes read
// ahead and never returned.
func TestLineReaderReleasedBufferHoldsNothing(t *testing.T) {
	t.Parallel()
	for range 20 {
		lr := NewLineReader(strings.NewReader("first\nsecret-not-read\n"), 1<<20)
		if line, err := lr.Next(); err != nil || string(line) != "first" {
			t.Fatalf("Next = %q, %v", line, err)
		}
		lr.Release()
		next := NewLineReader(strings.NewReader("other\n"), 1<<20)
		got, err := readAll(next)
		if !errors.Is(err, io.EOF) || len(got) != 1 || got[0] != "other" {
			t.Fatalf("a reader after a release read %q, %v; want [other], EOF", got, err)
		}
		next.Release()
	}
}
