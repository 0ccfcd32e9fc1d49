// Package health turns a task record into the verdict Dagster's health checks
// need: is the step or run alive, and if not, why.
package health

import (
	"fmt"
	"slices"
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

// Inputs are the facts besides the record.
type Inputs struct {
	Now          time.Time
	MaxQueueWait time.Duration
	Workers      []store.WorkerRecord // every registered worker, live or stale
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
		v.Status, v.WorkerLost = Failed, true
		v.Reason = fmt.Sprintf("worker lost: %s on %s stopped renewing the lease of task %s (expired %s ago)",
			rec.WorkerID, rec.Host, rec.TaskID, in.Now.Sub(*rec.LeaseUntil).Round(time.Second))
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
