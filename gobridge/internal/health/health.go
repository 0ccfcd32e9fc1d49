// Package health turns a task record into the verdict Dagster's health checks
// need: is the step or run alive, and if not, why.
package health

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// Status values, matching Dagster's WorkerStatus where they overlap.
const (
	Queued   = "QUEUED"
	Running  = "RUNNING"
	Success  = "SUCCESS"
	Failed   = "FAILED"
	Canceled = "CANCELED"
)

// Verdict is the health of one task.
type Verdict struct {
	Status  string        `json:"status"`
	Healthy bool          `json:"healthy"`
	Reason  string        `json:"reason,omitempty"`
	Record  *store.Record `json:"record"`
	// WorkerLost is set when the verdict turned a RUNNING record FAILED; the
	// caller records that, so the lost worker's children are stopped if it returns.
	WorkerLost bool `json:"worker_lost,omitempty"`
	// Abandoned is set when the verdict failed a QUEUED task nobody took in
	// time; the caller cancels the task, so a worker started later drops it.
	Abandoned bool `json:"abandoned,omitempty"`
}

// StaleGrace is how long one observer must see a lease expired, and not
// renewed, before it judges the worker lost. An outage of SQS/S3 stops the
// renewals and the checks alike; when it ends, the first check may read the
// record before the worker's first renewal lands (within a retry backoff,
// see awsx.MaxBackoff). A worker that is really gone never renews.
const StaleGrace = 10 * time.Second

// Inputs are the facts besides the record.
type Inputs struct {
	Now          time.Time
	MaxQueueWait time.Duration
	Workers      []store.WorkerRecord // every registered worker, live or stale
	// StaleFor is how long this observer has seen the record's lease expired
	// and unchanged (see Observer); 0 on a first sighting.
	StaleFor time.Duration
}

// Check judges a task record.
func Check(rec store.Record, in Inputs) Verdict {
	v := Verdict{Status: string(rec.State), Record: &rec}
	switch rec.State {
	case store.Queued:
		if listener := liveListener(in.Workers, rec.Queue, in.Now); listener != "" {
			v.Healthy = true
			return v
		}
		waited := in.Now.Sub(rec.QueuedAt)
		if waited <= in.MaxQueueWait {
			v.Healthy = true
			return v
		}
		v.Status, v.Abandoned = Failed, true
		v.Reason = fmt.Sprintf("task %s waited %s in queue %q (band %s) and no live worker listens to that queue "+
			"(max_queue_wait_seconds=%d); start one with `dagster-taskiq-go worker start -q %s`",
			rec.TaskID, waited.Round(time.Second), rec.Queue, rec.Band, int(in.MaxQueueWait.Seconds()), rec.Queue)
	case store.Running:
		if rec.LeaseUntil == nil || !in.Now.After(*rec.LeaseUntil) {
			v.Healthy = true
			return v
		}
		expired := in.Now.Sub(*rec.LeaseUntil).Round(time.Second)
		if in.StaleFor < StaleGrace {
			v.Healthy = true
			v.Reason = fmt.Sprintf("lease of task %s on %s expired %s ago; waiting up to %s for a renewal before judging the worker lost",
				rec.TaskID, rec.WorkerID, expired, StaleGrace-in.StaleFor.Round(time.Second))
			return v
		}
		v.Status, v.WorkerLost = Failed, true
		v.Reason = fmt.Sprintf("worker lost: %s on %s stopped renewing the lease of task %s (expired %s ago)",
			rec.WorkerID, rec.Host, rec.TaskID, expired)
	case store.Success:
		v.Healthy = true
	default:
		v.Reason = fmt.Sprintf("task %s is %s: %s", rec.TaskID, rec.State, rec.Reason)
	}
	return v
}

func liveListener(workers []store.WorkerRecord, queue string, now time.Time) string {
	for _, w := range workers {
		if !w.Stopping && w.Live(now) && slices.Contains(w.Queues, queue) {
			return w.WorkerID
		}
	}
	return ""
}

// Observer remembers, per task, since when this process has seen its lease
// expired at the same instant: a renewal moves the lease and starts over.
type Observer struct {
	mu   sync.Mutex
	seen map[string]sighting
}

type sighting struct{ lease, first time.Time }

// forgetAfter drops sightings of tasks nobody asked about for this long.
const forgetAfter = time.Hour

// StaleFor records a sighting of rec at now and returns how long its lease
// has been seen expired and unchanged; 0 when the lease is not expired.
func (o *Observer) StaleFor(rec store.Record, now time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]sighting{}
	}
	for id, s := range o.seen {
		if now.Sub(s.first) > forgetAfter {
			delete(o.seen, id)
		}
	}
	if rec.State != store.Running || rec.LeaseUntil == nil || !now.After(*rec.LeaseUntil) {
		delete(o.seen, rec.TaskID)
		return 0
	}
	s, ok := o.seen[rec.TaskID]
	if !ok || !s.lease.Equal(*rec.LeaseUntil) {
		s = sighting{lease: *rec.LeaseUntil, first: now}
		o.seen[rec.TaskID] = s
	}
	return now.Sub(s.first)
}
