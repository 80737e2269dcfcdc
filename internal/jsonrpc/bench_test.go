package jsonrpc

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// BenchmarkLineReader reads 64 requests of each size with the stream
// transport's default cap: short lines come out of the bufio buffer, lines
// over ReadBuffer are assembled in a buffer of their own.
//
//	go test -run '^$' -bench LineReader ./internal/jsonrpc/
func BenchmarkLineReader(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"line=100B", 100}, {"line=2KiB", 2 << 10}, {"line=64KiB", 64 << 10}} {
		line := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"t":"` + strings.Repeat("a", size.bytes) + `"}}}` + "\n"
		input := []byte(strings.Repeat(line, 64))
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			b.ReportAllocs()
			for b.Loop() {
				lr := NewLineReader(bytes.NewReader(input), 4<<20)
				for {
					if _, err := lr.Next(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
