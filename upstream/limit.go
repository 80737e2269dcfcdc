package upstream

import (
	"bytes"
	"fmt"
	"io"
)

// MaxMessageBytes caps one JSON-RPC message from a stdio upstream, the
// same bound the gateway puts on its clients' messages: mcp-go's reader
// would otherwise buffer a line of any length, and a broken or hostile
// upstream could exhaust the gateway's memory.
const MaxMessageBytes = 4 << 20

// lineLimit passes a newline-delimited stream through and fails once a
// line exceeds max bytes; over calls onLimit once with the error.
type lineLimit struct {
	r       io.Reader
	max     int
	cur     int // bytes of the current line so far
	err     error
	onLimit func(error)
}

func (l *lineLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	chunk := p[:n]
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			l.cur += len(chunk)
			break
		}
		if l.cur+i > l.max {
			l.cur += i
			break
		}
		l.cur = 0
		chunk = chunk[i+1:]
	}
	if l.cur > l.max {
		l.err = fmt.Errorf("upstream sent a message larger than %d bytes", l.max)
		if l.onLimit != nil {
			l.onLimit(l.err)
		}
		return 0, l.err
	}
	return n, err
}
