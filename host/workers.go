package host

import (
	"context"
	"runtime/pprof"
	"time"
)

// workers runs the Runtime's fetches on goroutines that outlive one fetch. A fetch goes deep on its
// goroutine's stack (wazero calls the host functions, which call net/http), so on a new goroutine the
// stack grew from its first 8 KB in several copies on every fetch: a tenth of a fetch's time in
// BenchmarkTokenFetch. A worker keeps its grown stack for the next fetch; it ends when it has had
// nothing to do for idleWorker, or when the Runtime closes.
type workers struct {
	ctx  context.Context // the Runtime's: canceled by Close
	work chan job        // unbuffered: a send succeeds only when a worker waits for work
}

// job is one fetch, with the context of the caller that started it: the fetch runs under that
// caller's profiler labels (pprof.Do), as a goroutine started by the caller would, and under no
// other caller's.
type job struct {
	labels context.Context
	run    func()
}

// idleWorker is how long a worker waits for another fetch before it ends.
const idleWorker = 10 * time.Second

func newWorkers(ctx context.Context) *workers {
	return &workers{ctx: ctx, work: make(chan job)}
}

// run runs f on a waiting worker, or on a new one when none waits (it never queues f behind another
// fetch), under the profiler labels of caller, the context of the call that starts the fetch.
func (w *workers) run(caller context.Context, f func()) {
	j := job{labels: caller, run: f}
	select {
	case w.work <- j:
	default:
		go w.loop(j)
	}
}

func (w *workers) loop(j job) {
	idle := time.NewTimer(idleWorker)
	defer idle.Stop()
	for {
		pprof.SetGoroutineLabels(j.labels)
		j.run()
		pprof.SetGoroutineLabels(context.Background()) // no caller's labels while idle
		j = job{}                                      // hold nothing of a finished fetch while idle
		idle.Reset(idleWorker)
		select {
		case j = <-w.work:
		case <-idle.C:
			return
		case <-w.ctx.Done():
			return
		}
	}
}
