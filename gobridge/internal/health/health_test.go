package health

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

func TestCheck(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	live := store.WorkerRecord{WorkerID: "w1", Queues: []string{"a"}, HeartbeatAt: now.Add(-5 * time.Second), HeartbeatEvery: 5}
	stale := live
	stale.HeartbeatAt = now.Add(-time.Minute)
	stopping := live
	stopping.Stopping = true
	queued := func(waited time.Duration) store.Record {
		return store.Record{TaskID: "r/s/1", State: store.Queued, Queue: "a", Band: "normal", QueuedAt: now.Add(-waited)}
	}
	running := func(lease *time.Time) store.Record {
		return store.Record{TaskID: "r/s/1", State: store.Running, WorkerID: "w1", Host: "h", LeaseUntil: lease}
	}
	tests := []struct {
		name       string
		rec        store.Record
		workers    []store.WorkerRecord
		status     string
		healthy    bool
		reason     string
		workerLost bool
	}{
		{"queued briefly, nobody listening", queued(time.Minute), nil, Queued, true, "", false},
		{"queued long, live listener", queued(5 * time.Hour), []store.WorkerRecord{live}, Queued, true, "", false},
		{"queued too long, nobody listening", queued(2 * time.Hour), nil, Failed, false, `in queue "a" (band normal)`, false},
		{"queued too long, listener stale", queued(2 * time.Hour), []store.WorkerRecord{stale}, Failed, false, "no live worker", false},
		{"queued too long, listener stopping", queued(2 * time.Hour), []store.WorkerRecord{stopping}, Failed, false, "worker start -q a", false},
		{"queued too long, worker on another queue", queued(2 * time.Hour),
			[]store.WorkerRecord{{WorkerID: "w2", Queues: []string{"b"}, HeartbeatAt: now, HeartbeatEvery: 5}}, Failed, false, "max_queue_wait_seconds=3600", false},
		{"running, fresh lease", running(at(10 * time.Second)), nil, Running, true, "", false},
		{"running, lease stale", running(at(-30 * time.Second)), nil, Failed, false, "worker lost: w1 on h", true},
		{"running, lease stale at first sight", running(at(-30 * time.Second)), nil, Running, true, "waiting up to 10s for a renewal", false},
		{"success", store.Record{TaskID: "r/s/1", State: store.Success}, nil, Success, true, "", false},
		{"failed", store.Record{TaskID: "r/s/1", State: store.Failed, Reason: "exited with code 1"}, nil, Failed, false, "exited with code 1", false},
		{"canceled", store.Record{TaskID: "r/s/1", State: store.Canceled, Reason: "canceled while running"}, nil, Canceled, false, "canceled while running", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Inputs{Now: now, MaxQueueWait: time.Hour, Workers: tt.workers, StaleFor: StaleGrace}
			if tt.name == "running, lease stale at first sight" {
				in.StaleFor = 0
			}
			v := Check(tt.rec, in)
			require.Equal(t, tt.status, v.Status)
			require.Equal(t, tt.healthy, v.Healthy)
			require.Contains(t, v.Reason, tt.reason)
			require.Equal(t, tt.workerLost, v.WorkerLost)
			require.Equal(t, tt.rec.State == store.Queued && !tt.healthy, v.Abandoned, "a QUEUED task failed for its wait is abandoned")
		})
	}
}

func TestObserverNeedsTheSameExpiredLeaseForTheGrace(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := store.Record{TaskID: "r/s/1", State: store.Running, WorkerID: "w1"}
	lease := now.Add(-time.Minute)
	rec.LeaseUntil = &lease
	var o Observer
	require.Zero(t, o.StaleFor(rec, now), "first sighting")
	require.Equal(t, 4*time.Second, o.StaleFor(rec, now.Add(4*time.Second)))

	// The worker came back after an outage: its renewal moves the lease, and the count starts over.
	renewed := now.Add(6500 * time.Millisecond)
	rec.LeaseUntil = &renewed
	require.Zero(t, o.StaleFor(rec, now.Add(6*time.Second)), "a fresh lease is not stale")
	require.Zero(t, o.StaleFor(rec, now.Add(7*time.Second)), "a new expiry is a first sighting")
	require.Equal(t, StaleGrace, o.StaleFor(rec, now.Add(7*time.Second+StaleGrace)))

	v := Check(rec, Inputs{Now: now.Add(7*time.Second + StaleGrace), StaleFor: o.StaleFor(rec, now.Add(7*time.Second+StaleGrace))})
	require.True(t, v.WorkerLost)
	require.Equal(t, Failed, v.Status)
}
