// Package gobridge is the facade that gopy exports to Python. It holds plain
// functions only: JSON strings in and out, at most (T, error) results, no
// callbacks. Every function recovers panics, and every error crosses as
// "<code>: <message>" (see internal/fault) for pyshim to map to an exception.
package gobridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/control"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/deadletter"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/health"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/submit"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/transport"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/worker"
)

// CoreVersion is the version of the Go core; it equals the Python package's.
const CoreVersion = "0.1.0"

// callTimeout bounds one facade call that talks to AWS.
const callTimeout = 2 * time.Minute

// Version returns the Go core's version.
func Version() string { return CoreVersion }

// ValidateConfig parses a configuration and returns it with defaults applied.
func ValidateConfig(configJSON string) (string, error) {
	return guard(func() (string, error) {
		cfg, err := config.Parse([]byte(configJSON))
		if err != nil {
			return "", err
		}
		return toJSON(cfg)
	})
}

// Submit sends one task (a submit.Request as JSON) and returns a submit.Result.
func Submit(configJSON, requestJSON string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		var req submit.Request
		if err := json.Unmarshal([]byte(requestJSON), &req); err != nil {
			return "", fault.Wrap(fault.Config, err, "submit request is not valid JSON")
		}
		res, err := submit.Submit(ctx, t, req)
		if err != nil {
			return "", err
		}
		return toJSON(res)
	})
}

// TaskStatus returns a task's record as JSON; a missing record is not_found.
func TaskStatus(configJSON, taskID string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		rec, err := t.Store.GetTask(ctx, taskID)
		if err != nil {
			return "", err
		}
		return toJSON(rec)
	})
}

// CancelRun cancels every unfinished task of a run and returns the
// submit.CancelResult of each. The executor calls it when a run ends
// CANCELING, because Dagster skips terminate_step for runs it will resume.
func CancelRun(configJSON, runID string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		records, err := t.Store.ListRunTasks(ctx, runID)
		if err != nil {
			return "", err
		}
		results := []submit.CancelResult{}
		for _, rec := range records {
			if rec.State != store.Queued && rec.State != store.Running {
				continue
			}
			res, err := submit.Cancel(ctx, t, rec.TaskID)
			if err != nil {
				return "", err
			}
			results = append(results, res)
		}
		return toJSON(results)
	})
}

// staleLeases holds this process's sightings of expired leases: a worker is
// judged lost only after its lease stayed expired for health.StaleGrace.
var staleLeases health.Observer

// TaskHealth judges a task (see internal/health) and returns a health.Verdict
// as JSON. A task without a record is NOT_FOUND. A RUNNING task whose lease
// went stale is recorded FAILED ("worker lost") here, so that recovery belongs
// to Dagster and the lost worker stops its child if it comes back. A QUEUED
// task whose message SQS's redrive moved to the dead-letter queue is recorded
// FAILED here too (see internal/deadletter): no worker ever saw it.
func TaskHealth(configJSON, taskID string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		rec, err := t.Store.GetTask(ctx, taskID)
		if fault.CodeOf(err) == fault.NotFound {
			return toJSON(health.Verdict{Status: "NOT_FOUND", Reason: fmt.Sprintf("task %s has no record", taskID)})
		}
		if err != nil {
			return "", err
		}
		if rec.State == store.Queued {
			// Best effort: an SQS error (or a queue deleted since) must not fail a check whose
			// record was read; the record still judges the task, and the next check looks again.
			if q, err := t.Queue(ctx, rec.Queue); err == nil {
				if checked, err := deadletter.Fail(ctx, t.DeadLetters, t.Store, q, rec); err == nil {
					rec = checked
				}
			}
		}
		in := health.Inputs{Now: time.Now().UTC(), MaxQueueWait: time.Duration(t.Config.Source.MaxQueueWaitSeconds) * time.Second}
		if rec.State == store.Queued {
			if in.Workers, err = t.Store.ListWorkers(ctx); err != nil {
				return "", err
			}
		}
		in.StaleFor = staleLeases.StaleFor(rec, in.Now)
		v := health.Check(rec, in)
		if v.Abandoned {
			// The marker first, as for any cancel: a worker that claims the
			// message later reads it and drops the task unrun.
			if err := t.Store.MarkCanceled(ctx, taskID); err != nil {
				return "", err
			}
		}
		if v.WorkerLost || v.Abandoned {
			now := in.Now
			rec.State, rec.Reason, rec.FinishedAt = store.Failed, v.Reason, &now
			if err := t.Store.PutTask(ctx, rec); err != nil {
				return "", err
			}
		}
		return toJSON(v)
	})
}

// Cancel stops a task (see submit.Cancel) and returns a submit.CancelResult.
func Cancel(configJSON, taskID string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		res, err := submit.Cancel(ctx, t, taskID)
		if err != nil {
			return "", err
		}
		return toJSON(res)
	})
}

// QueueCreate creates the bucket and a logical queue: one SQS queue per band
// of bands ("high,normal,low" or a subset), a dead-letter queue and the layout
// tag. It returns the resolved queue as JSON.
func QueueCreate(configJSON, queue, bands string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		if err := config.ValidateQueueName(queue); err != nil {
			return "", fault.Wrap(fault.Config, err, "queue create")
		}
		layout, err := routing.ParseLayout(bands)
		if err != nil {
			return "", err
		}
		if err := t.Store.EnsureBucket(ctx); err != nil {
			return "", err
		}
		if err := t.Queues.CreateBands(ctx, queue, layout); err != nil {
			return "", err
		}
		q, err := t.Queues.Resolve(ctx, queue)
		if err != nil {
			return "", err
		}
		return toJSON(q)
	})
}

// Workers lists the registered workers (store.WorkerRecord), each with a
// "live" flag: a worker is live while its heartbeat is at most three
// intervals old.
func Workers(configJSON string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		records, err := t.Store.ListWorkers(ctx)
		if err != nil {
			return "", err
		}
		type listed struct {
			store.WorkerRecord
			Live bool `json:"live"`
		}
		now := time.Now().UTC()
		out := make([]listed, 0, len(records))
		for _, w := range records {
			out = append(out, listed{WorkerRecord: w, Live: w.Live(now)})
		}
		return toJSON(out)
	})
}

// QueueStats reports a logical queue's message counts per band, its
// dead-letter queue's depth and the live workers that listen to it.
func QueueStats(configJSON, queue string) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		q, err := t.Queue(ctx, queue)
		if err != nil {
			return "", err
		}
		type bandStats struct {
			Band string `json:"band"`
			sqsx.Counts
			RunsVisible  int `json:"runs_visible"`
			RunsInFlight int `json:"runs_in_flight"`
		}
		stats := struct {
			Queue   string      `json:"queue"`
			Bands   []bandStats `json:"bands"`
			DLQ     *int        `json:"dead_letters"`
			Workers []string    `json:"live_workers"`
		}{Queue: queue, Workers: []string{}}
		for _, band := range q.Layout {
			counts, err := t.Queues.Count(ctx, q.URLs[band])
			if err != nil {
				return "", err
			}
			stat := bandStats{Band: band, Counts: counts}
			if url, ok := q.RunURLs[band]; ok {
				runs, err := t.Queues.Count(ctx, url)
				if err != nil {
					return "", err
				}
				stat.RunsVisible, stat.RunsInFlight = runs.Visible, runs.InFlight
			}
			stats.Bands = append(stats.Bands, stat)
		}
		if q.DLQ != "" {
			counts, err := t.Queues.Count(ctx, q.DLQ)
			if err != nil {
				return "", err
			}
			dead := counts.Visible + counts.InFlight
			stats.DLQ = &dead
		}
		workers, err := t.Store.ListWorkers(ctx)
		if err != nil {
			return "", err
		}
		now := time.Now().UTC()
		for _, w := range workers {
			if w.Live(now) && slices.Contains(w.Queues, queue) {
				stats.Workers = append(stats.Workers, w.WorkerID)
			}
		}
		return toJSON(stats)
	})
}

// QueuePurge deletes every message in every band of a logical queue (not its
// dead letters) and returns how many were visible before.
func QueuePurge(configJSON, queue string) (int, error) {
	return guard(func() (int, error) {
		t, err := openTransport(configJSON)
		if err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		q, err := t.Queue(ctx, queue)
		if err != nil {
			return 0, err
		}
		purged := 0
		for _, urls := range []map[string]string{q.URLs, q.RunURLs} {
			for _, url := range urls {
				counts, err := t.Queues.Count(ctx, url)
				if err != nil {
					return 0, err
				}
				if err := t.Queues.Purge(ctx, url); err != nil {
					return 0, err
				}
				purged += counts.Visible
			}
		}
		return purged, nil
	})
}

// WorkerTerminate asks live workers to stop gracefully, through their control
// queues: the worker whose id is name, or every worker whose id starts with
// name, or all of them when all is true. It returns the ids it reached.
func WorkerTerminate(configJSON, name string, all bool) (string, error) {
	return withTransport(configJSON, func(ctx context.Context, t *transport.Transport) (string, error) {
		if name == "" && !all {
			return "", fault.New(fault.Config, "name a worker, or pass --all")
		}
		records, err := t.Store.ListWorkers(ctx)
		if err != nil {
			return "", err
		}
		now := time.Now().UTC()
		reached := []string{}
		for _, w := range records {
			if !w.Live(now) || (!all && w.WorkerID != name && !strings.HasPrefix(w.WorkerID, name)) {
				continue
			}
			if err := submit.Order(ctx, t, w.WorkerID, control.Order{Op: control.OpStop}); err != nil {
				return "", err
			}
			reached = append(reached, w.WorkerID)
		}
		if len(reached) == 0 {
			return "", fault.New(fault.NotFound, "no live worker matches %q", name)
		}
		return toJSON(reached)
	})
}

var (
	workersMu  sync.Mutex
	workers    = map[int64]*worker.Worker{}
	nextHandle int64
)

// WorkerStart starts a worker (options: worker.Options as JSON) and returns a
// handle for WorkerWait and WorkerStop. logLevel is debug, info, warn or error.
func WorkerStart(configJSON, optionsJSON, logLevel string) (int64, error) {
	return guard(func() (int64, error) {
		var level slog.Level
		if err := level.UnmarshalText([]byte(logLevel)); err != nil {
			return 0, fault.New(fault.Config, "--log-level: %q is not one of debug, info, warn, error", logLevel)
		}
		opts, err := worker.ParseOptions([]byte(optionsJSON))
		if err != nil {
			return 0, err
		}
		t, err := openTransport(configJSON)
		if err != nil {
			return 0, err
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		worker.Version = CoreVersion
		w, err := worker.New(opts, t, log, os.Stderr)
		if err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := w.Start(ctx); err != nil {
			return 0, err
		}
		workersMu.Lock()
		defer workersMu.Unlock()
		nextHandle++
		workers[nextHandle] = w
		return nextHandle, nil
	})
}

// WorkerID returns the id of a started worker.
func WorkerID(handle int64) (string, error) {
	return guard(func() (string, error) {
		w, err := lookupWorker(handle)
		if err != nil {
			return "", err
		}
		return w.ID(), nil
	})
}

// WorkerWait blocks up to timeoutMs. It returns "" while the worker runs and
// its summary (JSON) once it has stopped, after which the handle is released.
func WorkerWait(handle int64, timeoutMs int) (string, error) {
	return guard(func() (string, error) {
		w, err := lookupWorker(handle)
		if err != nil {
			return "", err
		}
		if !w.Wait(time.Duration(timeoutMs) * time.Millisecond) {
			return "", nil
		}
		workersMu.Lock()
		delete(workers, handle)
		workersMu.Unlock()
		return toJSON(w.Summary())
	})
}

// WorkerStop asks a worker to stop: gracefully (finish running tasks within
// the grace period) or at once (terminate them now).
func WorkerStop(handle int64, graceful bool) error {
	_, err := guard(func() (string, error) {
		w, err := lookupWorker(handle)
		if err != nil {
			return "", err
		}
		w.Stop(graceful)
		return "", nil
	})
	return err
}

// Crash panics with message. It exists so tests can prove that a Go panic
// reaches Python as an exception instead of aborting the interpreter.
func Crash(message string) (string, error) {
	return guard(func() (string, error) { panic(message) })
}

func lookupWorker(handle int64) (*worker.Worker, error) {
	workersMu.Lock()
	defer workersMu.Unlock()
	w, ok := workers[handle]
	if !ok {
		return nil, fault.New(fault.NotFound, "no worker with handle %d", handle)
	}
	return w, nil
}

var transports sync.Map // config JSON → *transport.Transport

func openTransport(configJSON string) (*transport.Transport, error) {
	if t, ok := transports.Load(configJSON); ok {
		return t.(*transport.Transport), nil
	}
	cfg, err := config.Parse([]byte(configJSON))
	if err != nil {
		return nil, err
	}
	t, err := transport.Open(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	actual, _ := transports.LoadOrStore(configJSON, t)
	return actual.(*transport.Transport), nil
}

func withTransport(configJSON string, fn func(context.Context, *transport.Transport) (string, error)) (string, error) {
	return guard(func() (string, error) {
		t, err := openTransport(configJSON)
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		return fn(ctx, t)
	})
}

// guard runs fn, turns a panic into an internal error and encodes any error
// for the bridge.
func guard[T any](fn func() (T, error)) (out T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New(fault.Encode(fault.New(fault.Internal, "panic in Go core: %v", r)))
		}
	}()
	out, err = fn()
	if err != nil {
		err = errors.New(fault.Encode(err))
	}
	return out, err
}

func toJSON(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fault.Wrap(fault.Internal, err, "encode %T", v)
	}
	return string(data), nil
}

// SyncEnv makes the Go side's view of the AWS_* and DAGSTER_TASKIQ_*
// environment equal to Python's. A c-shared Go library copies the environment
// once, when it is loaded, so variables Python sets later (os.environ) are
// otherwise invisible to the AWS credential chain and the signing-key lookup.
// envJSON maps names to values; a prefixed name absent from it is unset.
func SyncEnv(envJSON string) error {
	_, err := guard(func() (string, error) {
		var want map[string]string
		if err := json.Unmarshal([]byte(envJSON), &want); err != nil {
			return "", fault.Wrap(fault.Internal, err, "SyncEnv: not a JSON object of strings")
		}
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			if _, keep := want[name]; !keep && syncedName(name) {
				_ = os.Unsetenv(name)
			}
		}
		for name, value := range want {
			if !syncedName(name) {
				return "", fault.New(fault.Internal, "SyncEnv: %q is not an AWS_ or DAGSTER_TASKIQ_ variable", name)
			}
			if err := os.Setenv(name, value); err != nil {
				return "", fault.Wrap(fault.Internal, err, "SyncEnv %s", name)
			}
		}
		return "", nil
	})
	return err
}

func syncedName(name string) bool {
	return strings.HasPrefix(name, "AWS_") || strings.HasPrefix(name, "DAGSTER_TASKIQ_")
}
