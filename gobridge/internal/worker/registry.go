package worker

import (
	"os"
	"sort"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// Version is written into worker records; the facade sets it to the core's version.
var Version = "dev"

// registry keeps the worker's record in S3 fresh: `worker list`, health
// checks ("does a live worker listen to this queue?") and queue stats read it.
type registry struct {
	w       *Worker
	started time.Time
	stop    chan struct{}
	done    chan struct{}
}

func (r *registry) record(stopping bool) store.WorkerRecord {
	var running []string
	r.w.running.Range(func(id, _ any) bool { running = append(running, id.(string)); return true })
	sort.Strings(running)
	return store.WorkerRecord{
		WorkerID: r.w.id, Host: r.w.host, PID: os.Getpid(), Version: Version,
		Queues: r.w.opts.Queues, Slots: r.w.opts.Concurrency, RunSlots: r.w.opts.RunConcurrency,
		Running: running, StartedAt: r.started, HeartbeatAt: time.Now().UTC(),
		HeartbeatEvery: r.w.opts.HeartbeatSeconds, Stopping: stopping,
	}
}

func (r *registry) put(stopping bool) {
	ctx, cancel := r.w.writeCtx()
	defer cancel()
	if err := r.w.tr.Store.PutWorker(ctx, r.record(stopping)); err != nil {
		r.w.log.Warn("could not write the worker record", "error", err)
	}
}

// start writes the record and refreshes it every heartbeat until shutdown.
func (r *registry) start() {
	r.started = time.Now().UTC()
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	r.put(false)
	go func() {
		defer close(r.done)
		ticker := time.NewTicker(time.Duration(r.w.opts.HeartbeatSeconds) * time.Second)
		defer ticker.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-r.w.fetchCtx.Done():
				r.put(true) // still draining: listed, but no longer a listener
				<-r.stop
				return
			case <-ticker.C:
				r.put(false)
			}
		}
	}()
}

// close removes the record: a clean exit leaves no stale worker behind.
func (r *registry) close() {
	close(r.stop)
	<-r.done
	ctx, cancel := r.w.writeCtx()
	defer cancel()
	if err := r.w.tr.Store.DeleteWorker(ctx, r.w.id); err != nil {
		r.w.log.Warn("could not remove the worker record", "error", err)
	}
}
