package jsonrpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// ErrLineTooLong is returned by LineReader.Next for a line over the cap.
// Callers map it to their own error (server.ErrMessageTooLarge,
// bridge.ErrMessageTooLarge) with errors.Is.
var ErrLineTooLong = errors.New("jsonrpc: line too long")

// ReadBuffer is the bufio buffer size; lines longer than this are assembled
// in a buffer of their own, which never grows past the message cap. A reader
// refusing an oversized line has read at most the cap, a terminator and one
// ReadBuffer.
const ReadBuffer = 4 << 10

// LineReader splits a stream into newline-delimited messages of bounded
// size. Unlike bufio.Scanner it reports an oversized line as soon as the cap
// is passed, having buffered no more than the cap, so a peer cannot make it
// hold more memory than one message; and it accepts "\n" and "\r\n"
// terminators and a last line without one.
type LineReader struct {
	br     *bufio.Reader
	max    int    // cap on one line, terminator excluded
	buf    []byte // assembles a line longer than the bufio buffer
	pooled bool   // br came from readerPool: Release gives it back
}

// readerPool holds bufio readers of ReadBuffer bytes that Release gave
// back, for the next connection (issue 16: one 4 KB buffer per
// connection, most of which read one ping). Lines never alias them: Next
// copies every line out.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ReadBuffer) }}

// NewLineReader returns a LineReader of r whose lines may be at most
// maxBytes long, terminator excluded. Call Release when done with it.
func NewLineReader(r io.Reader, maxBytes int) *LineReader {
	size := min(ReadBuffer, maxBytes+2)
	if br, ok := r.(*bufio.Reader); size < ReadBuffer || (ok && br.Size() >= size) {
		return &LineReader{br: bufio.NewReaderSize(r, size), max: maxBytes}
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &LineReader{br: br, max: maxBytes, pooled: true}
}

// Release gives the reader's buffer back for another LineReader. The
// caller must not use l afterwards, nor have any Next call running; the
// lines already returned stay valid (they are the caller's). Releasing a
// reader more than once, or one of a small cap, does nothing.
func (l *LineReader) Release() {
	if !l.pooled {
		return
	}
	l.pooled = false
	l.br.Reset(nil) // no reference to the stream, nothing left buffered
	readerPool.Put(l.br)
	l.br = nil
}

// Next returns the next line that is not blank, trimmed of JSON whitespace,
// in a slice of its own that the caller may keep and append to. It returns
// io.EOF at the end of the stream and ErrLineTooLong for a line longer than
// the cap; after ErrLineTooLong the stream is out of step and must not be
// read further.
func (l *LineReader) Next() ([]byte, error) {
	for {
		line, err := l.readLine()
		if err != nil {
			return nil, err
		}
		line = bytes.Trim(line, " \t\r\n")
		if cap(l.buf) > ReadBuffer {
			// A long line was assembled in a buffer of its own, which is
			// not reused (see readLine): hand it over rather than copy up
			// to the cap again.
			l.buf = nil
			if len(line) > 0 {
				return line, nil
			}
			continue
		}
		if len(line) > 0 {
			return bytes.Clone(line), nil
		}
	}
}

// readLine returns one line without its terminator, aliasing internal buffers.
func (l *LineReader) readLine() ([]byte, error) {
	// Don't keep a large buffer alive for the rest of the session: a long
	// line gets a buffer of its own (Next hands it over).
	if cap(l.buf) > ReadBuffer {
		l.buf = nil
	}
	l.buf = l.buf[:0]
	for {
		frag, err := l.br.ReadSlice('\n')
		if err == nil && len(l.buf) == 0 {
			// The whole line is in the bufio buffer: Next copies it out, so
			// there is no need to assemble it first (issue 16: a buffer of
			// ReadBuffer bytes per connection, for a ping).
			return l.checked(bytes.TrimSuffix(bytes.TrimSuffix(frag, []byte("\n")), []byte("\r")))
		}
		// The line may carry "\r\n" on top of the cap; anything more is too long.
		if len(l.buf)+len(frag) > l.max+2 {
			return nil, ErrLineTooLong
		}
		l.grow(len(frag))
		l.buf = append(l.buf, frag...)
		switch {
		case err == nil:
			return l.checked(bytes.TrimSuffix(bytes.TrimSuffix(l.buf, []byte("\n")), []byte("\r")))
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(l.buf) > 0:
			return l.checked(l.buf) // a last line without terminator
		default:
			return nil, err
		}
	}
}

// checked returns line, or ErrLineTooLong if it is over the cap.
func (l *LineReader) checked(line []byte) ([]byte, error) {
	if len(line) > l.max {
		return nil, ErrLineTooLong
	}
	return line, nil
}

// grow makes room for n more bytes in l.buf without ever allocating more than
// the cap plus a terminator, which append's growth policy could overshoot.
func (l *LineReader) grow(n int) {
	need := len(l.buf) + n
	if need <= cap(l.buf) {
		return
	}
	newCap := min(max(2*cap(l.buf), need, ReadBuffer), l.max+2)
	buf := make([]byte, len(l.buf), newCap)
	copy(buf, l.buf)
	l.buf = buf
}
