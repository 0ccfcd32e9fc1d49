package worker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/control"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/submit"
)

// waitForGo holds a child until <id>.go or <dir>/all exists.
const waitForGo = `while [ ! -e "$d/$id.go" ] && [ ! -e "$d/all" ]; do sleep 0.05; done`

func (c *fakeChild) let(t *testing.T, name string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, strings.ReplaceAll(name, "/", "_")+".go"), nil, 0o644))
}

func (c *fakeChild) letAll(t *testing.T) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, "all"), nil, 0o644))
}

func TestWorkerStartsHighBandFirst(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, waitForGo)
	startWorker(t, tr, child, Options{Concurrency: 1})

	hold := submitStep(t, tr, "hold", "a")
	waitState(t, tr, hold.TaskID, store.Running)
	for i := range 20 {
		submitStep(t, tr, "normal_"+string(rune('a'+i)), "a")
	}
	high := stepRequest("urgent", "a")
	high.StepTags = map[string]string{routing.PriorityTag: "10"}
	res, err := submit.Submit(context.Background(), tr, high)
	require.NoError(t, err)
	require.Equal(t, routing.BandHigh, res.Band)

	child.let(t, hold.TaskID)
	require.Eventually(t, func() bool { return len(child.runs(t)) >= 2 }, deadline, tick)
	require.Equal(t, strings.ReplaceAll(res.TaskID, "/", "_"), child.runs(t)[1],
		"with the only slot busy and 20 normal tasks queued, the high-band task is the next started")
	child.letAll(t)
	require.Eventually(t, func() bool { return len(child.runs(t)) == 22 }, deadline, tick)
}

func TestWorkerRegistersItselfAndCleansUp(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, waitForGo)
	w := startWorker(t, tr, child, Options{Concurrency: 2, RunConcurrency: 1})
	ctx := context.Background()

	task := submitStep(t, tr, "busy", "a")
	waitState(t, tr, task.TaskID, store.Running)
	require.Eventually(t, func() bool {
		records, err := tr.Store.ListWorkers(ctx)
		return err == nil && len(records) == 1 && slices.Contains(records[0].Running, task.TaskID)
	}, deadline, tick, "the worker record lists its running task")
	records, err := tr.Store.ListWorkers(ctx)
	require.NoError(t, err)
	rec := records[0]
	require.Equal(t, w.ID(), rec.WorkerID)
	require.Equal(t, []string{testQueue}, rec.Queues)
	require.Equal(t, 2, rec.Slots)
	require.Equal(t, 1, rec.RunSlots)
	require.True(t, rec.Live(time.Now()))
	url, err := tr.Queues.ControlURL(ctx, w.ID())
	require.NoError(t, err)
	require.NotEmpty(t, url, "the worker has a control queue")

	child.letAll(t)
	waitState(t, tr, task.TaskID, store.Success)
	w.Stop(true)
	require.True(t, w.Wait(deadline))
	records, err = tr.Store.ListWorkers(ctx)
	require.NoError(t, err)
	require.Empty(t, records, "a clean exit removes the worker record")
	url, err = tr.Queues.ControlURL(ctx, w.ID())
	require.NoError(t, err)
	require.Empty(t, url, "a clean exit deletes the control queue")
}

func TestWorkerCollectsWhatDeadWorkersLeft(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	ctx := context.Background()
	dead := func(id string, silent time.Duration) string {
		require.NoError(t, tr.Store.PutWorker(ctx, store.WorkerRecord{WorkerID: id, Queues: []string{testQueue},
			HeartbeatAt: time.Now().UTC().Add(-silent), HeartbeatEvery: 5}))
		url, err := tr.Queues.CreateControl(ctx, id)
		require.NoError(t, err)
		return url
	}
	dead("recent", time.Minute)
	dead("hour", time.Hour)
	dead("days", 48*time.Hour)

	startWorker(t, tr, newFakeChild(t, ""), Options{})
	controls := func() []string {
		var ids []string
		for _, id := range []string{"recent", "hour", "days"} {
			if url, err := tr.Queues.ControlURL(ctx, id); err == nil && url != "" {
				ids = append(ids, id)
			}
		}
		return ids
	}
	require.Eventually(t, func() bool { return slices.Equal(controls(), []string{"recent"}) }, deadline, tick,
		"control queues of workers silent for over 10 minutes are deleted: %v", controls())
	require.Eventually(t, func() bool {
		records, err := tr.Store.ListWorkers(ctx)
		var ids []string
		for _, r := range records {
			ids = append(ids, r.WorkerID)
		}
		slices.Sort(ids)
		return err == nil && slices.Contains(ids, "hour") && !slices.Contains(ids, "days")
	}, deadline, tick, "records stay for a day, shown as stale, then go")
}

func TestWorkerCancelArrivesThroughControlQueue(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `trap 'echo term > "$d/$id.term"; exit 143' TERM; while true; do sleep 0.05; done`)
	// A heartbeat far longer than the test: only the control queue can deliver the cancel in time.
	startWorker(t, tr, child, Options{HeartbeatSeconds: 120})
	task := submitStep(t, tr, "long", "a")
	waitState(t, tr, task.TaskID, store.Running)
	child.waitFile(t, task.TaskID, "pid")

	started := time.Now()
	res, err := submit.Cancel(context.Background(), tr, task.TaskID)
	require.NoError(t, err)
	require.True(t, res.Ordered, "the cancel order reached the worker's control queue")
	rec := waitState(t, tr, task.TaskID, store.Canceled)
	t.Logf("cancel → CANCELED through the control queue: %s", time.Since(started).Round(time.Millisecond))
	require.Equal(t, "term\n", child.read(t, task.TaskID, "term"))
	require.Equal(t, "canceled while running", rec.Reason)
}

func TestWorkerStopsTaskWhoseLeaseWasTakenOver(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `trap 'echo term > "$d/$id.term"; exit 143' TERM; while true; do sleep 0.05; done`)
	startWorker(t, tr, child, Options{})
	task := submitStep(t, tr, "orphan", "a")
	rec := waitState(t, tr, task.TaskID, store.Running)
	pid := child.pid(t, task.TaskID)

	// What a health check writes when it judged this worker lost.
	rec.State, rec.Reason = store.Failed, "worker lost: lease expired"
	require.NoError(t, tr.Store.PutTask(context.Background(), rec))

	child.waitFile(t, task.TaskID, "term")
	require.Eventually(t, func() bool { return processGone(pid) }, deadline, tick)
	// The worker must not overwrite the verdict: check once its task has left the worker record.
	require.Eventually(t, func() bool {
		records, err := tr.Store.ListWorkers(context.Background())
		return err == nil && len(records) == 1 && len(records[0].Running) == 0
	}, deadline, tick)
	final, err := tr.Store.GetTask(context.Background(), task.TaskID)
	require.NoError(t, err)
	require.Equal(t, store.Failed, final.State)
	require.Equal(t, "worker lost: lease expired", final.Reason, "the health verdict stands")
}

func TestWorkerDeadLettersMessageNearItsReceiveLimit(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	ctx := context.Background()
	env := stepEnvelope("bouncy", "a")
	putQueued(t, tr, env)
	body := marshal(t, env)
	send(t, tr, testQueue, body, signed(body, env.TaskID))
	url, err := tr.Queues.URL(ctx, testQueue)
	require.NoError(t, err)
	for range 9 { // what nine receivers that could not run it would leave behind
		msgs := receiveAll(t, tr, url, 1)
		require.NoError(t, tr.Queues.Release(ctx, url, aws.ToString(msgs[0].ReceiptHandle)))
	}
	child := newFakeChild(t, "")
	startWorker(t, tr, child, Options{})
	rec := waitState(t, tr, env.TaskID, store.Failed)
	require.Contains(t, rec.Reason, "received 10 times without being run")
	q, err := tr.Queue(ctx, testQueue)
	require.NoError(t, err)
	dead := receiveAll(t, tr, q.DLQ, 1)
	require.Equal(t, body, aws.ToString(dead[0].Body))
	require.Empty(t, child.runs(t))
}

func TestWorkerRunSlotsAreSeparateFromStepSlots(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, waitForGo)
	startWorker(t, tr, child, Options{Concurrency: 1, RunConcurrency: 1})
	step := submitStep(t, tr, "hold", "a")
	waitState(t, tr, step.TaskID, store.Running)

	run, err := submit.Submit(context.Background(), tr, submit.Request{Kind: envelope.ExecuteRun, RunID: "run2", Args: "run-args"})
	require.NoError(t, err)
	waitState(t, tr, run.TaskID, store.Running)
	require.Equal(t, "-m\ndagster_taskiq_go.child\nexecute_run\n", child.read(t, run.TaskID, "argv"))
	require.Equal(t, "run-args", child.read(t, run.TaskID, "stdin"))
	child.letAll(t)
	waitState(t, tr, run.TaskID, store.Success)
	waitState(t, tr, step.TaskID, store.Success)
}

func TestWorkerStopsOnTerminateOrder(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	w := startWorker(t, tr, newFakeChild(t, ""), Options{})
	require.NoError(t, submit.Order(context.Background(), tr, w.ID(), control.Order{Op: control.OpStop}))
	require.True(t, w.Wait(deadline), "a stop order ends the worker")
}
