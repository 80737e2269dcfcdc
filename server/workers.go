package server

import (
	"sync"
	"sync/atomic"
)

// sessionWorkers runs a stream session's request handlers on goroutines
// kept for the session's next requests (issue 16 item 2). A fresh
// goroutine starts on a 2 KB stack, and a tool call through mcp-go grows
// it (each growth copies the stack) before the call is done; a goroutine
// kept from the previous request has its stack grown already. At most
// maxIdleWorkers wait for work; the others end when their request is done,
// so a burst leaves no crowd of goroutines (nor their stacks) behind, and
// the rest end with the session (stop). There is no timer and nothing
// shared between sessions.
type sessionWorkers struct {
	work chan func() // unbuffered, so a send succeeds only into an idle worker; made on first use
	idle atomic.Int32
	wg   sync.WaitGroup
}

// maxIdleWorkers is how many workers a session keeps waiting: one serves
// a client that sends one request at a time, the common case.
const maxIdleWorkers = 1

// Go runs f on an idle worker if one is waiting, else on a new one: f
// never waits for another function to finish (a request must not queue
// behind another, say a subscriptions/listen that lasts the session).
// Only one goroutine (the session's reader) calls Go.
func (w *sessionWorkers) Go(f func()) {
	if w.work == nil {
		w.work = make(chan func())
	}
	select {
	case w.work <- f:
		return
	default:
	}
	w.wg.Add(1)
	go w.run(f, w.work)
}

// run runs f, then whatever it is handed, until stop.
func (w *sessionWorkers) run(f func(), work <-chan func()) {
	defer w.wg.Done()
	for {
		f()
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		var ok bool
		f, ok = <-work
		w.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// stop ends the workers once every function handed to Go has returned
// (the caller waits for that first) and waits for them; Go must not be
// called after it.
func (w *sessionWorkers) stop() {
	if w.work != nil {
		close(w.work)
	}
	w.wg.Wait()
}
