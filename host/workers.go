package host

import (
	"context"
	"time"
)

// workers runs the Runtime's fetches on goroutines that outlive one fetch. A fetch goes deep on its
// goroutine's stack (wazero calls the host functions, which call net/http), so on a new goroutine the
// stack grew from its first 8 KB in several copies on every fetch: a tenth of a fetch's time in
// BenchmarkTokenFetch. A worker keeps its grown stack for the next fetch; it ends when it has had
// nothing to do for idleWorker, or when the Runtime closes.
type workers struct {
	ctx  context.Context // the Runtime's: canceled by Close
	work chan func()     // unbuffered: a send succeeds only when a worker waits for work
}

// idleWorker is how long a worker waits for another fetch before it ends.
const idleWorker = 10 * time.Second

func newWorkers(ctx context.Context) *workers {
	return &workers{ctx: ctx, work: make(chan func())}
}

// run runs f on a waiting worker, or on a new one when none waits: it never queues f behind another
// fetch.
func (w *workers) run(f func()) {
	select {
	case w.work <- f:
	default:
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	idle := time.NewTimer(idleWorker)
	defer idle.Stop()
	for {
		f()
		f = nil // hold nothing of a finished fetch while idle
		idle.Reset(idleWorker)
		select {
		case f = <-w.work:
		case <-idle.C:
			return
		case <-w.ctx.Done():
			return
		}
	}
}
