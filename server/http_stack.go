package server

// presizeStack grows the calling goroutine's stack in one step, while it
// is still shallow, to what a request handled through mcp-go needs.
//
// HTTP/2 runs every request on a new goroutine, which starts with a small
// stack; a request's call chain (net/http, mcp-go's Streamable HTTP server
// and HandleMessage, the policy and audit middleware, a tool handler and,
// for a forwarded call, mcp-go's client and net/http's again) then
// outgrows it two or three times, and each time the runtime copies the
// deep stack and adjusts every frame. Growing once at the top copies a few
// frames instead: issue 12 item 2 measured the copies at 8–10% of the
// gateway's CPU per forwarded HTTP call.
//
//go:noinline
func presizeStack() {
	var frame [presizeFrame]byte
	keepFrame(&frame) // keeps frame (and the frame size) alive
}

// keepFrame does nothing with its argument, which makes the compiler keep
// presizeStack's frame. (A write of one of its bytes to a package variable
// did too, but was a data race between concurrent requests.)
//
//go:noinline
func keepFrame(*[presizeFrame]byte) {}

// presizeFrame is the frame presizeStack needs: the runtime grows the
// stack to at least twice its size plus the frames already on it.
const presizeFrame = 16 << 10
