package server

import (
	"sync/atomic"
	"time"
)

// handlerPool runs a stream session's request handlers on goroutines that
// outlive one request (issue 16 item 2). A fresh goroutine starts on a 2 KB
// stack and a tool call through mcp-go grows it (each growth copies the
// stack) before the call is done; a goroutine kept for the next request has
// its stack already grown. The pool is shared by every session of the
// process, so a new session's first requests (and its writer) run warm as
// well. A worker left idle for 200 ms exits, so a burst does not keep its
// goroutines (and leak checks, which wait about 400 ms, see none left).
var handlerPool = newWorkerPool(4096, 200*time.Millisecond)

// workerPool hands functions to idle workers, or starts a worker when none
// is waiting: a function never waits for another to finish.
type workerPool struct {
	work chan func() // unbuffered: a send succeeds only into an idle worker
	n    atomic.Int32
	max  int32
	idle time.Duration
}

func newWorkerPool(max int32, idle time.Duration) *workerPool {
	return &workerPool{work: make(chan func()), max: max, idle: idle}
}

// Go runs f on an idle worker if one is waiting, else on a new goroutine
// (a pooled worker while fewer than max exist, a one-shot one beyond).
func (p *workerPool) Go(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	if p.n.Add(1) > p.max {
		p.n.Add(-1)
		go f()
		return
	}
	go p.worker(f)
}

// worker runs f, then whatever it is handed, until it has been idle for
// p.idle.
func (p *workerPool) worker(f func()) {
	defer p.n.Add(-1)
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		f = nil // not kept alive while idle
		t.Reset(p.idle)
		select {
		case f = <-p.work:
		case <-t.C:
			return
		}
	}
}
