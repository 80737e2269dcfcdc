package server

import "sync"

// sessionWorkers runs a stream session's request handlers on goroutines
// kept for the session's next requests (issue 16 item 2). A fresh
// goroutine starts on a 2 KB stack, and a tool call through mcp-go grows
// it (each growth copies the stack) before the call is done; a goroutine
// kept from the previous request has its stack grown already. Workers end
// with the session (stop); there is no timer and nothing shared between
// sessions.
type sessionWorkers struct {
	work chan func() // unbuffered, so a send succeeds only into an idle worker; made on first use
	wg   sync.WaitGroup
}

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
		var ok bool
		if f, ok = <-work; !ok {
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
