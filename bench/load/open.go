package load

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// RunOpen runs an open loop: rate operations per second in total, offered
// whatever the server does, spread evenly over workers (each has its own
// schedule, rate/workers per second, staggered so the sends interleave;
// each worker has at most one operation outstanding, as a Session needs).
// A closed loop slows down with the server and so hides queueing (the
// coordinated omission of wrk, JMeter and closed-loop harnesses): here an
// operation's latency runs from the time it was scheduled, not from the
// time a late worker got round to sending it, so a stalled server shows
// up in the percentiles in full.
//
// The schedule runs through win.Warmup and win.Duration. Result.Ops counts
// completions inside the measured window (the achieved rate);
// Result.Latencies are those of every operation scheduled inside it,
// including ones that complete after it ends. An operation still not sent
// by win.Duration/2 after the window's end is not sent: it counts in
// Result.Late, with the time it had waited by then as its latency (a lower
// bound), so an overloaded server cannot stretch the run without limit.
func RunOpen(ctx context.Context, workers int, rate float64, win Window, newWorker NewWorker) (Result, error) {
	if workers < 1 || rate <= 0 {
		return Result{}, fmt.Errorf("load: open loop needs workers ≥ 1 and a positive rate, got %d and %v", workers, rate)
	}
	ops, cleanup, err := prepare(workers, newWorker)
	defer cleanup()
	if err != nil {
		return Result{}, err
	}
	interval := time.Duration(float64(workers) / rate * float64(time.Second))
	t0 := time.Now().Add(10 * time.Millisecond)
	begin := t0.Add(win.Warmup)
	end := begin.Add(win.Duration)
	cutoff := end.Add(win.Duration / 2)
	var rec recorder
	var late sync.Mutex
	var lateN int64
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w worker
			defer rec.merge(&w)
			sched := t0.Add(interval * time.Duration(i) / time.Duration(workers))
			for ; sched.Before(end) && ctx.Err() == nil; sched = sched.Add(interval) {
				now := time.Now()
				if now.After(cutoff) {
					// Never sent: the rest of this worker's schedule inside
					// the window waited at least this long.
					var n int64
					for ; sched.Before(end); sched = sched.Add(interval) {
						if !sched.Before(begin) {
							w.lat = append(w.lat, now.Sub(sched))
							n++
						}
					}
					late.Lock()
					lateN += n
					late.Unlock()
					return
				}
				if d := sched.Sub(now); d > 0 {
					sleep(ctx, d)
				}
				_, err := ops[i]()
				done := time.Now()
				measured := !sched.Before(begin)
				if err != nil {
					if measured {
						w.fail(err)
					}
					continue
				}
				if measured {
					w.lat = append(w.lat, done.Sub(sched))
				}
				if !done.Before(begin) && done.Before(end) {
					w.ops++
				}
			}
		}()
	}
	sleep(ctx, time.Until(begin))
	if win.OnStart != nil {
		win.OnStart()
	}
	sleep(ctx, time.Until(end))
	if win.OnEnd != nil {
		win.OnEnd()
	}
	wg.Wait()
	res := rec.result(win.Duration)
	res.Late = lateN
	return res, ctx.Err()
}
