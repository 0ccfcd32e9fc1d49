// Package submit turns a task request into a QUEUED task record and a signed
// SQS message, and cancels tasks.
package submit

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/control"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/transport"
)

// Message attribute names (see envelope).
const (
	AttrSignature = envelope.AttrSignature
	AttrTaskID    = envelope.AttrTaskID
)

// Request asks for one task. The tags decide its queue and priority band.
type Request struct {
	Kind     envelope.Kind     `json:"kind"`
	RunID    string            `json:"run_id"`
	StepKey  string            `json:"step_key"`
	Attempt  int               `json:"attempt"`
	StepTags map[string]string `json:"step_tags"` // nil for whole runs
	RunTags  map[string]string `json:"run_tags"`
	Args     string            `json:"args"` // serialized Dagster args, opaque here
}

// Result says where the task went.
type Result struct {
	TaskID    string   `json:"task_id"`
	Queue     string   `json:"queue"`
	Priority  int      `json:"priority"`
	Band      string   `json:"band"`
	QueueURL  string   `json:"queue_url"`
	MessageID string   `json:"message_id"`
	Offloaded bool     `json:"payload_offloaded"`
	Warnings  []string `json:"warnings"`
	// Listeners counts the live workers listening to the queue (from a
	// listing at most 15 s old); 0 means the task waits until one starts.
	Listeners int `json:"listeners"`
}

// Submit records the task as QUEUED and sends its envelope.
func Submit(ctx context.Context, t *transport.Transport, req Request) (Result, error) {
	if !req.Kind.Valid() {
		return Result{}, fault.New(fault.Config, "unknown task kind %q", req.Kind)
	}
	if req.RunID == "" || req.Args == "" || (req.Kind == envelope.ExecuteStep && req.StepKey == "") {
		return Result{}, fault.New(fault.Config, "a %s request needs run_id, args%s", req.Kind,
			map[bool]string{true: " and step_key", false: ""}[req.Kind == envelope.ExecuteStep])
	}
	key, err := signingKey()
	if err != nil {
		return Result{}, err
	}
	route, err := routing.Route(req.StepTags, req.RunTags, t.Config.DefaultQueue)
	if err != nil {
		return Result{}, err
	}
	q, err := t.Queue(ctx, route.Queue)
	if err != nil {
		return Result{}, err
	}
	band := q.Layout.Band(route.Priority)
	urls := q.URLs
	if req.Kind.IsRun() {
		if q.RunURLs == nil {
			return Result{}, fault.New(fault.Config,
				"queue_url names one queue for steps; runs need named queues: unset queue_url in the run launcher's config")
		}
		urls = q.RunURLs
	}
	env := envelope.Envelope{
		Version: envelope.Version, Kind: req.Kind,
		TaskID: envelope.TaskID(req.Kind, req.RunID, req.StepKey, req.Attempt),
		RunID:  req.RunID, StepKey: req.StepKey, Attempt: req.Attempt,
		Queue: route.Queue, Band: band, SentAt: time.Now().UTC(), Args: req.Args,
	}
	res := Result{TaskID: env.TaskID, Queue: route.Queue, Priority: route.Priority, Band: band,
		QueueURL: urls[band], Warnings: route.Warnings}
	if len(req.Args) > t.Config.Source.PayloadThresholdBytes {
		env.ArgsKey, env.Args = t.Store.PayloadKey(env.TaskID), ""
		if err := t.Store.Put(ctx, env.ArgsKey, []byte(req.Args)); err != nil {
			return Result{}, err
		}
		res.Offloaded = true
	}
	body, err := json.Marshal(env)
	if err != nil {
		return Result{}, fault.Wrap(fault.Internal, err, "encode envelope")
	}
	rec := store.Record{TaskID: env.TaskID, Kind: string(env.Kind), RunID: env.RunID, StepKey: env.StepKey,
		Attempt: env.Attempt, Queue: env.Queue, Band: env.Band, State: store.Queued, QueuedAt: env.SentAt,
		BodyDigest: envelope.Digest(body)}
	if err := t.Store.PutTask(ctx, rec); err != nil {
		return Result{}, err
	}
	attrs := map[string]string{AttrTaskID: env.TaskID}
	if key != nil {
		attrs[AttrSignature] = envelope.Sign(key, body)
	}
	if res.MessageID, err = t.Queues.Send(ctx, res.QueueURL, string(body), attrs); err != nil {
		return Result{}, err
	}
	if res.Listeners, err = t.Listeners(ctx, route.Queue); err != nil {
		return Result{}, err
	}
	return res, nil
}

func signingKey() ([]byte, error) {
	key, err := envelope.KeyFromEnv()
	if err != nil || key != nil {
		return key, err
	}
	if os.Getenv(envelope.InsecureEnv) == "1" {
		return nil, nil
	}
	return nil, fault.New(fault.Config, "no signing key: set %s or %s (workers refuse unsigned tasks), or %s=1 for workers started with --insecure-no-signing",
		envelope.KeyEnv, envelope.KeyFileEnv, envelope.InsecureEnv)
}

// CancelResult says what a cancel did.
type CancelResult struct {
	TaskID string      `json:"task_id"`
	State  store.State `json:"state"`
	// Requested is true when the cancel changed something: a queued task will
	// never start, or its worker was asked to stop it.
	Requested bool `json:"requested"`
	// Worker holds the task's claim; Ordered says the order reached its control queue.
	Worker  string `json:"worker,omitempty"`
	Ordered bool   `json:"ordered,omitempty"`
}

// Cancel stops a task. It writes the cancel marker first and reads the claim
// second; a worker writes the claim first and reads the marker second, so one
// side always sees the other and a queued task never starts.
func Cancel(ctx context.Context, t *transport.Transport, taskID string) (CancelResult, error) {
	rec, err := t.Store.GetTask(ctx, taskID)
	if err != nil {
		return CancelResult{}, err
	}
	switch rec.State {
	case store.Success, store.Failed, store.Canceled:
		return CancelResult{TaskID: taskID, State: rec.State}, nil
	}
	if err := t.Store.MarkCanceled(ctx, taskID); err != nil {
		return CancelResult{}, err
	}
	claimed, err := t.Store.IsClaimed(ctx, taskID)
	if err != nil {
		return CancelResult{}, err
	}
	if !claimed {
		now := time.Now().UTC()
		rec.State, rec.Reason, rec.FinishedAt = store.Canceled, "canceled before a worker started it", &now
		if err := t.Store.PutTask(ctx, rec); err != nil {
			return CancelResult{}, err
		}
		return CancelResult{TaskID: taskID, State: rec.State, Requested: true}, nil
	}
	// Running (or about to): tell its worker now; the marker covers a lost order.
	res := CancelResult{TaskID: taskID, State: rec.State, Requested: true}
	if claim, err := t.Store.GetClaim(ctx, taskID); err == nil {
		res.Worker = claim.WorkerID
		res.Ordered = Order(ctx, t, claim.WorkerID, control.Order{Op: control.OpCancel, TaskID: taskID}) == nil
	}
	return res, nil
}

// Order sends a control order to a worker's control queue. A worker without
// one (gone, or never started) is a not_found error.
func Order(ctx context.Context, t *transport.Transport, workerID string, o control.Order) error {
	url, err := t.Queues.ControlURL(ctx, workerID)
	if err != nil {
		return err
	}
	if url == "" {
		return fault.New(fault.NotFound, "worker %s has no control queue: it is not running", workerID)
	}
	key, err := signingKey()
	if err != nil {
		return err
	}
	return control.Send(ctx, t.Queues, url, key, o)
}
