package server

import (
	"testing"
	"unsafe"
)

// TestPresizedStackIsNotCopied: after presizeStack, a goroutine goes 20
// KiB deeper (a forwarded HTTP call's chain below serveHTTP: mcp-go's
// server, the middleware, the handler, mcp-go's client, net/http, TLS)
// without the runtime copying its stack; without it, the same goroutine's
// stack is copied (what every HTTP/2 request paid, 8–10% of a forwarded
// call's CPU; issue 12 item 2). A copy moves the goroutine's locals, so
// the address of one of them tells.
func TestPresizedStackIsNotCopied(t *testing.T) {
	for _, tt := range []struct {
		name    string
		presize bool
		moved   bool
	}{
		{name: "presized", presize: true, moved: false},
		{name: "not presized (the hole)", presize: false, moved: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			moved := make(chan bool)
			go func() {
				var local byte
				if tt.presize {
					presizeStack()
				}
				before := uintptr(unsafe.Pointer(&local))
				deepen(20)
				moved <- uintptr(unsafe.Pointer(&local)) != before
			}()
			if got := <-moved; got != tt.moved {
				t.Errorf("stack copied while going 20 KiB deeper: %v, want %v", got, tt.moved)
			}
		})
	}
}

// stackIndex is 0, an index the compiler cannot know, so that deepen's
// frames are kept.
var stackIndex int

// deepen uses n frames of 1 KiB each.
//
//go:noinline
func deepen(n int) byte {
	var pad [1 << 10]byte
	pad[stackIndex] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return deepen(n-1) + pad[stackIndex]
}
