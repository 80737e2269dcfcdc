package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Window is the timing of one closed-loop run: every worker starts at once
// and runs through Warmup (not counted: caches, session tickets, goroutine
// pools fill up), then Duration is measured. OnStart and OnEnd run at the
// window's edges, where the caller samples the server's CPU time.
type Window struct {
	Warmup, Duration time.Duration
	OnStart, OnEnd   func()
}

// Op is one operation of a worker's loop; resumed marks a resumed
// handshake.
type Op func() (resumed bool, err error)

// NewWorker prepares worker i (say, opens its session) before the clock
// starts, returning its operation and a cleanup.
type NewWorker func(i int) (op Op, cleanup func(), err error)

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// errSetup wraps a worker that could not even be prepared.
var errSetup = errors.New("load: worker setup failed")

// Run runs workers closed loops of their Op through win and returns what
// the measured window saw. Every worker is prepared first; if one cannot
// be, the others are cleaned up and Run fails.
func Run(ctx context.Context, workers int, win Window, newWorker NewWorker) (Result, error) {
	ops, cleanup, err := prepare(workers, newWorker)
	defer cleanup()
	if err != nil {
		return Result{}, err
	}
	var phase atomic.Int32
	var rec recorder
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w worker
			defer rec.merge(&w)
			for ctx.Err() == nil {
				if phase.Load() == phaseStop {
					return
				}
				start := time.Now()
				resumed, err := ops[i]()
				// Counted when it completes inside the window, wherever it
				// started: the unbiased count of completions per second.
				if phase.Load() != phaseMeasure {
					continue
				}
				if err != nil {
					w.fail(err)
					// A failing target must not spin: errors are reported, not
					// measured.
					time.Sleep(time.Millisecond)
					continue
				}
				w.ops++
				if resumed {
					w.resumed++
				}
				w.lat = append(w.lat, time.Since(start))
			}
		}()
	}
	sleep(ctx, win.Warmup)
	if win.OnStart != nil {
		win.OnStart()
	}
	begin := time.Now()
	phase.Store(phaseMeasure)
	sleep(ctx, win.Duration)
	phase.Store(phaseStop)
	elapsed := time.Since(begin)
	if win.OnEnd != nil {
		win.OnEnd()
	}
	wg.Wait()
	return rec.result(elapsed), ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// prepare makes every worker's Op; cleanup undoes what was made, also
// when one worker could not be prepared (err).
func prepare(workers int, newWorker NewWorker) (ops []Op, cleanup func(), err error) {
	ops = make([]Op, workers)
	cleanups := make([]func(), 0, workers)
	cleanup = func() {
		for _, c := range cleanups {
			c()
		}
	}
	for i := range workers {
		op, c, err := newWorker(i)
		if err != nil {
			return nil, cleanup, fmt.Errorf("%w: worker %d: %v", errSetup, i, err)
		}
		ops[i] = op
		if c != nil {
			cleanups = append(cleanups, c)
		}
	}
	return ops, cleanup, nil
}
