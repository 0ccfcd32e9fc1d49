// Package worker is the worker runtime: it receives tasks from SQS when a slot
// is free, claims them in S3, runs each in a child process and records the
// outcome. Signals are the caller's business: Stop is how it is told to end.
package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/stepserver"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/submit"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/transport"
)

// writeTimeout bounds each phase of S3/SQS writes (records, deletes), which
// also run after a stop has been requested, so shutdown never drops them nor
// hangs on them. Each phase gets a fresh bound (see writeCtx): a task may run
// far longer than this. A variable so tests can shorten it.
var writeTimeout = 30 * time.Second

// writeCtx bounds one phase of writes. It ignores a stop, which must not drop
// the writes that record what happened.
func (w *Worker) writeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(w.workCtx), writeTimeout)
}

// Summary is what a stopped worker reports.
type Summary struct {
	WorkerID string `json:"worker_id"`
	TasksRun int64  `json:"tasks_run"`
}

// claimer takes a task for a worker; false means another worker holds it.
// store.Store is the one in use: tests put an atomic fake in its place,
// since moto's conditional put, unlike S3's, is not atomic under concurrency.
type claimer interface {
	Claim(ctx context.Context, c store.Claim) (bool, error)
}

// Worker serves a set of queues.
type Worker struct {
	opts   Options
	tr     *transport.Transport
	claims claimer
	key    []byte
	id     string
	host   string
	log    *slog.Logger
	output io.Writer

	stepSlots chan struct{} // a token is held from before a receive to the task's end
	runSlots  chan struct{}
	running   sync.Map // task id → *runningTask
	registry  registry
	orders    orders
	deletes   *deleter
	steps     *stepserver.Server // the warm step path; nil when cold

	fetchCtx  context.Context // canceled to stop receiving
	stopFetch context.CancelFunc
	workCtx   context.Context // canceled to stop running tasks
	stopWork  context.CancelFunc
	receivers sync.WaitGroup
	tasks     sync.WaitGroup
	done      chan struct{}
	stopOnce  sync.Once
	tasksRun  atomic.Int64
}

// runningTask is a task whose child process runs; cancel stops it.
type runningTask struct {
	once sync.Once
	stop chan struct{}
	// why is set before stop closes: canceled by a user, or lease taken over.
	why atomic.Value
}

func newRunningTask() *runningTask { return &runningTask{stop: make(chan struct{})} }

func (t *runningTask) end(why string) {
	t.once.Do(func() { t.why.Store(why); close(t.stop) })
}

func (t *runningTask) cancel() { t.end(whyCanceled) }

const (
	whyCanceled = "canceled"
	whyLost     = "lease taken over"
)

// New validates the signing setup and builds a worker; it does not start it.
func New(opts Options, tr *transport.Transport, log *slog.Logger, output io.Writer) (*Worker, error) {
	key, err := envelope.KeyFromEnv()
	if err != nil {
		return nil, err
	}
	if key == nil && !opts.InsecureNoSigning {
		return nil, fault.New(fault.Config, "no signing key: set %s or %s, or pass --insecure-no-signing to run unauthenticated tasks",
			envelope.KeyEnv, envelope.KeyFileEnv)
	}
	host, _ := os.Hostname()
	suffix := make([]byte, 3)
	_, _ = crand.Read(suffix)
	id := opts.Name + "-" + hex.EncodeToString(suffix)
	return &Worker{
		opts: opts, tr: tr, claims: tr.Store, key: key, id: id, host: host, output: output,
		log:       log.With("worker_id", id),
		stepSlots: make(chan struct{}, opts.Concurrency),
		runSlots:  make(chan struct{}, opts.RunConcurrency),
		done:      make(chan struct{}),
	}, nil
}

// ID is the worker's unique id.
func (w *Worker) ID() string { return w.id }

// Start resolves the queues, registers the worker, opens its control queue
// and starts one receiver per queue and slot pool.
func (w *Worker) Start(ctx context.Context) error {
	var receivers []*receiver
	for _, name := range w.opts.Queues {
		q, err := w.tr.Queue(ctx, name)
		if err != nil {
			return err
		}
		for _, url := range append(slices.Collect(maps.Values(q.URLs)), slices.Collect(maps.Values(q.RunURLs))...) {
			if err := w.tr.Queues.CheckShortPolls(ctx, url); err != nil {
				return err
			}
		}
		if q.DLQ == "" {
			w.log.Warn("queue has no dead-letter queue: poison messages will be logged and left for their visibility timeout", "queue", name)
		}
		receivers = append(receivers, &receiver{w: w, queue: q, urls: q.URLs, slots: w.stepSlots})
		if w.opts.RunConcurrency > 0 && q.RunURLs != nil {
			receivers = append(receivers, &receiver{w: w, queue: q, urls: q.RunURLs, slots: w.runSlots, runs: true})
		}
	}
	w.fetchCtx, w.stopFetch = context.WithCancel(context.Background())
	w.workCtx, w.stopWork = context.WithCancel(context.Background())
	w.orders.w, w.registry.w = w, w
	if err := w.orders.start(ctx); err != nil {
		return err
	}
	w.registry.start()
	w.deletes = startDeleter(w.tr.Queues.DeleteBatch, deleteWindow)
	if w.opts.StepProcess == StepProcessWarm {
		steps, err := stepserver.Start(stepserver.Config{Python: w.opts.Python, Env: childEnviron(false), Log: w.log})
		if err != nil {
			return err
		}
		w.steps = steps
	}
	for _, r := range receivers {
		w.receivers.Go(r.loop)
	}
	w.log.Info("worker started", "queues", w.opts.Queues, "concurrency", w.opts.Concurrency,
		"run_concurrency", w.opts.RunConcurrency, "signing", w.key != nil, "step_process", w.opts.StepProcess)
	go func() {
		w.receivers.Wait()
		w.tasks.Wait()
		w.deletes.close()
		if w.steps != nil {
			w.steps.Stop()
		}
		w.registry.close()
		w.orders.close()
		w.log.Info("worker stopped", "tasks_run", w.tasksRun.Load())
		close(w.done)
	}()
	return nil
}

// Stop ends the worker. A graceful stop stops receiving and lets running
// tasks finish for up to the grace period before terminating them; an
// immediate stop terminates them at once. Stop may be called again to
// escalate from graceful to immediate.
func (w *Worker) Stop(graceful bool) {
	w.stopOnce.Do(func() {
		w.log.Info("stopping: no new tasks will be taken", "graceful", graceful)
		w.stopFetch()
		if graceful {
			go func() {
				select {
				case <-w.done:
				case <-time.After(time.Duration(w.opts.GracePeriodSeconds) * time.Second):
					w.log.Warn("grace period over: terminating running tasks")
					w.stopWork()
				}
			}()
		}
	})
	if !graceful {
		w.stopWork()
	}
}

// Wait blocks up to timeout and reports whether the worker has stopped.
func (w *Worker) Wait(timeout time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Summary reports what the worker did.
func (w *Worker) Summary() Summary {
	return Summary{WorkerID: w.id, TasksRun: w.tasksRun.Load()}
}

// handle takes one received message from verification to its final record.
func (w *Worker) handle(q *sqsx.Queue, url string, m types.Message) {
	ctx, cancel := w.writeCtx()
	defer cancel()
	body := []byte(aws.ToString(m.Body))
	log := w.log.With("queue", q.Name)

	if !w.opts.InsecureNoSigning && !envelope.Verify(w.key, body, sqsx.Attr(m, submit.AttrSignature)) {
		// The task id attribute is as unauthenticated as the body: it names
		// the message in the DLQ, but fails that task's record only when the
		// record vouches for the body (then the keys differ, not the message).
		taskID := sqsx.Attr(m, submit.AttrTaskID)
		if w.submittedBody(ctx, taskID, body) {
			w.deadLetter(ctx, log, q, url, m, taskID, true, "the signature does not verify with this worker's key, "+
				"yet the body is the one submitted (its digest matches the task record): do the submitters and "+
				"this worker share one signing key?")
			return
		}
		w.deadLetter(ctx, log, q, url, m, taskID, false, "missing or invalid signature")
		return
	}
	env, err := envelope.Decode(body)
	if err != nil {
		w.deadLetter(ctx, log, q, url, m, env.TaskID, true, err.Error())
		return
	}
	log = log.With("task_id", env.TaskID, "kind", env.Kind)
	if n := sqsx.ReceiveCount(m); n >= sqsx.MaxReceiveCountDefault-1 {
		// Take it out before SQS's own redrive does it silently.
		w.deadLetter(ctx, log, q, url, m, env.TaskID, true, fmt.Sprintf("received %d times without being run", n))
		return
	}
	if w.fetchCtx.Err() != nil {
		// Stopping before the claim: hand the message back untouched.
		if err := w.tr.Queues.Release(ctx, url, aws.ToString(m.ReceiptHandle)); err != nil {
			log.Warn("could not release message; it returns after its visibility timeout", "error", err)
		}
		return
	}
	claimed, err := w.claims.Claim(ctx, store.Claim{TaskID: env.TaskID, WorkerID: w.id, ClaimedAt: time.Now().UTC()})
	if err != nil {
		log.Warn("claim failed; the message will be redelivered", "error", err)
		return
	}
	if !claimed {
		log.Info("duplicate delivery: task already claimed; deleting it unrun")
		w.deletes.delete(log, url, aws.ToString(m.ReceiptHandle))
		return
	}
	// Claim first, then the cancel marker: see submit.Cancel for the other half.
	canceled, err := w.tr.Store.IsCanceled(ctx, env.TaskID)
	if err != nil {
		log.Warn("could not read cancel marker; running the task", "error", err)
	}
	w.deletes.delete(log, url, aws.ToString(m.ReceiptHandle))
	rec := store.Record{TaskID: env.TaskID, Kind: string(env.Kind), RunID: env.RunID, StepKey: env.StepKey,
		Attempt: env.Attempt, Queue: env.Queue, Band: env.Band, QueuedAt: env.SentAt, WorkerID: w.id, Host: w.host}
	if canceled {
		// A task failed or canceled by others (e.g. nobody took it in time)
		// keeps what they recorded.
		if cur, err := w.tr.Store.GetTask(ctx, env.TaskID); err == nil && cur.State.Finished() {
			log.Info("task canceled before it started; dropping it", "record_state", cur.State)
			return
		}
		w.finish(ctx, log, rec, store.Canceled, nil, "canceled before it started")
		return
	}
	args := env.Args
	if env.ArgsKey != "" {
		data, err := w.tr.Store.Get(ctx, env.ArgsKey)
		if err != nil {
			w.finish(ctx, log, rec, store.Failed, nil, "payload unavailable: "+err.Error())
			return
		}
		args = string(data)
		defer func() {
			// The task may have outlived ctx: the delete gets its own bound.
			ctx, cancel := w.writeCtx()
			defer cancel()
			if err := w.tr.Store.Delete(ctx, env.ArgsKey); err != nil {
				log.Warn("could not delete payload", "key", env.ArgsKey, "error", err)
			}
		}()
	}
	w.run(log, rec, env, args)
}

// run executes the child, keeps its lease fresh and watches for a cancel
// (control queue or marker) and for its lease being taken over.
func (w *Worker) run(log *slog.Logger, rec store.Record, env envelope.Envelope, args string) {
	heartbeat := time.Duration(w.opts.HeartbeatSeconds) * time.Second
	task := newRunningTask()
	w.running.Store(env.TaskID, task)
	defer w.running.Delete(env.TaskID)
	started := time.Now()

	var hb sync.WaitGroup
	hbDone := make(chan struct{})
	onStart := func(pid int) {
		now := time.Now().UTC()
		rec.State, rec.PID, rec.StartedAt = store.Running, pid, &now
		rec.LeaseUntil = ptr(now.Add(3 * heartbeat))
		ctx, cancel := w.writeCtx()
		if err := w.tr.Store.PutTask(ctx, rec); err != nil {
			log.Warn("could not record RUNNING", "error", err)
		}
		cancel()
		log.Info("task started", "pid", pid)
		hb.Go(func() {
			ticker := time.NewTicker(heartbeat)
			defer ticker.Stop()
			for {
				select {
				case <-hbDone:
					return
				case <-ticker.C:
				}
				w.heartbeat(log, task, &rec, heartbeat)
			}
		})
	}
	res, err := runChild(w.workCtx, childSpec{
		Python: w.opts.Python, Kind: env.Kind, TaskID: env.TaskID, Args: args,
		Env: []string{
			"DAGSTER_TASKIQ_WORKER_ID=" + w.id,
			"DAGSTER_TASKIQ_TASK_ID=" + env.TaskID,
			"DAGSTER_TASKIQ_QUEUE=" + env.Queue,
		},
		Grace: time.Duration(w.opts.GracePeriodSeconds) * time.Second, Output: w.output,
		Warm: w.steps, Log: log,
	}, task.stop, onStart)
	close(hbDone)
	hb.Wait()
	w.tasksRun.Add(1)

	why, _ := task.why.Load().(string)
	if why == whyLost {
		// Dagster owns recovery now (the record says FAILED, worker lost); writing would undo that.
		log.Warn("task stopped: its lease was taken over while this worker was unreachable")
		return
	}
	state, reason := store.Success, ""
	switch {
	case err != nil:
		state, reason = store.Failed, "could not run the task: "+err.Error()
	case why == whyCanceled:
		state, reason = store.Canceled, "canceled while running"
	case res.Signaled:
		state, reason = store.Failed, "worker shut down while the task ran"
	case res.ExitCode != 0:
		state, reason = store.Failed, fmt.Sprintf("exited with code %d", res.ExitCode)
	}
	var code *int // nil: the child did not start, or how it ended is unknown
	if err == nil {
		code = &res.ExitCode
	}
	// The task may have run far longer than writeTimeout: bound the final
	// write from now, not from when the task started.
	ctx, cancel := w.writeCtx()
	defer cancel()
	w.finish(ctx, log, rec, state, code, reason)
	if code != nil {
		log.Info("task finished", "state", state, "run_id", env.RunID, "step_key", env.StepKey, "exit_code", *code,
			"duration", time.Since(started).Round(time.Millisecond))
	}
}

// heartbeat renews the lease, unless the record shows the lease was taken
// over (health checks judged this worker lost), and polls the cancel marker,
// the fallback for a cancel order that did not arrive by the control queue.
func (w *Worker) heartbeat(log *slog.Logger, task *runningTask, rec *store.Record, interval time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), interval)
	defer cancel()
	if current, err := w.tr.Store.GetTask(ctx, rec.TaskID); err == nil &&
		(current.State != store.Running || current.WorkerID != w.id) {
		log.Warn("lease taken over: stopping the task", "record_state", current.State, "reason", current.Reason)
		task.end(whyLost)
		return
	}
	if c, err := w.tr.Store.IsCanceled(ctx, rec.TaskID); err == nil && c {
		task.cancel()
	}
	rec.LeaseUntil = ptr(time.Now().UTC().Add(3 * interval))
	if err := w.tr.Store.PutTask(ctx, *rec); err != nil {
		log.Warn("lease renewal failed", "error", err)
	}
}

func (w *Worker) finish(ctx context.Context, log *slog.Logger, rec store.Record, state store.State, exitCode *int, reason string) {
	rec.State, rec.ExitCode, rec.Reason = state, exitCode, reason
	rec.FinishedAt, rec.LeaseUntil = ptr(time.Now().UTC()), nil
	if err := w.tr.Store.PutTask(ctx, rec); err != nil {
		log.Error("could not record the task's outcome", "state", state, "error", err)
	}
	if exitCode == nil {
		log.Warn("task not run", "state", state, "reason", reason)
	}
}

// submittedBody reports whether body is the one submitted for a task still
// QUEUED, by its digest in the task record.
func (w *Worker) submittedBody(ctx context.Context, taskID string, body []byte) bool {
	if taskID == "" {
		return false
	}
	rec, err := w.tr.Store.GetTask(ctx, taskID)
	return err == nil && rec.State == store.Queued && rec.BodyDigest != "" && rec.BodyDigest == envelope.Digest(body)
}

// deadLetter moves a message the worker cannot run to the queue's DLQ. When
// the message is authentic (signed, or signing is off) and names a task, that
// task's QUEUED record becomes FAILED; an unauthenticated task id only labels
// the message, or anyone able to send to the queue could fail any queued task.
func (w *Worker) deadLetter(ctx context.Context, log *slog.Logger, q *sqsx.Queue, url string, m types.Message, taskID string, authentic bool, reason string) {
	log.Error("dead-lettering message", "task_id", taskID, "reason", reason)
	err := fault.New(fault.NotFound, "queue %q has no dead-letter queue", q.Name)
	if q.DLQ != "" {
		attrs := map[string]string{envelope.AttrDeadLetterReason: reason}
		if taskID != "" {
			attrs[submit.AttrTaskID] = taskID
		}
		// Kept so that an operator who moves the message back after fixing its
		// cause (a missing DLQ permission, a worker-side bug) has it accepted.
		if sig := sqsx.Attr(m, submit.AttrSignature); sig != "" {
			attrs[submit.AttrSignature] = sig
		}
		_, err = w.tr.Queues.Send(ctx, q.DLQ, aws.ToString(m.Body), attrs)
	}
	if err != nil {
		log.Error("could not move message to the dead-letter queue; leaving it for redrive", "error", err)
		return
	}
	if taskID != "" && authentic {
		if rec, err := w.tr.Store.GetTask(ctx, taskID); err == nil && rec.State == store.Queued {
			w.finish(ctx, log, rec, store.Failed, nil, "dead-lettered: "+reason)
		}
	}
	w.deletes.delete(log, url, aws.ToString(m.ReceiptHandle))
}

func ptr[T any](v T) *T { return &v }
