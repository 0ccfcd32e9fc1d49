package worker

import (
	"context"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/control"
)

// staleControlAfter is how long a worker record must have been silent (or
// missing) before its control queue counts as garbage.
const staleControlAfter = 10 * time.Minute

// staleRecordAfter is how long `worker list` goes on showing a worker that
// died without cleaning up, as stale, before its record is deleted.
const staleRecordAfter = 24 * time.Hour

// orders listens on the worker's own control queue, so a cancel or a stop
// arrives within one long-poll wake instead of at the next heartbeat. Cancel
// markers in S3 stay the fallback when the queue is unreachable.
type orders struct {
	w    *Worker
	url  string
	ctx  context.Context
	stop context.CancelFunc
	done chan struct{}
}

func (o *orders) start(ctx context.Context) error {
	url, err := o.w.tr.Queues.CreateControl(ctx, o.w.id)
	if err != nil {
		return err
	}
	o.url = url
	o.ctx, o.stop = context.WithCancel(context.Background())
	o.done = make(chan struct{})
	go o.loop()
	go o.collectGarbage()
	return nil
}

func (o *orders) loop() {
	defer close(o.done)
	for o.ctx.Err() == nil {
		msgs, err := o.w.tr.Queues.Receive(o.ctx, o.url, 10, 20)
		if err != nil {
			if o.ctx.Err() == nil {
				o.w.log.Warn("control queue receive failed", "error", err)
				time.Sleep(time.Second)
			}
			continue
		}
		for _, m := range msgs {
			ctx, cancel := o.w.writeCtx()
			if order, err := control.Decode(m, o.w.key); err != nil {
				o.w.log.Error("ignoring control message", "error", err)
			} else {
				o.obey(order)
			}
			if err := o.w.tr.Queues.Delete(ctx, o.url, aws.ToString(m.ReceiptHandle)); err != nil {
				o.w.log.Warn("could not delete control message", "error", err)
			}
			cancel()
		}
	}
}

func (o *orders) obey(order control.Order) {
	switch order.Op {
	case control.OpStop:
		o.w.log.Info("stop ordered through the control queue")
		o.w.Stop(true)
	case control.OpCancel:
		if t, ok := o.w.running.Load(order.TaskID); ok {
			o.w.log.Info("cancel ordered through the control queue", "task_id", order.TaskID, "latency", time.Since(order.SentAt).Round(time.Millisecond))
			t.(*runningTask).cancel()
		}
	}
}

// close stops listening and deletes the queue.
func (o *orders) close() {
	o.stop()
	<-o.done
	ctx, cancel := o.w.writeCtx()
	defer cancel()
	if err := o.w.tr.Queues.DeleteQueue(ctx, o.url); err != nil {
		o.w.log.Warn("could not delete the control queue", "error", err)
	}
}

// collectGarbage deletes the control queues, and later the records, of
// workers that died without cleaning up (kill -9, host loss).
func (o *orders) collectGarbage() {
	ctx, cancel := o.w.writeCtx()
	defer cancel()
	urls, err := o.w.tr.Queues.ListQueues(ctx, o.w.tr.Queues.ControlPrefix())
	if err != nil {
		o.w.log.Debug("could not list control queues", "error", err)
		return
	}
	workers, err := o.w.tr.Store.ListWorkers(ctx)
	if err != nil {
		return
	}
	alive := map[string]bool{}
	now := time.Now()
	for _, rec := range workers {
		if now.Sub(rec.HeartbeatAt) < staleControlAfter {
			alive[o.w.tr.Queues.ControlName(rec.WorkerID)] = true
		}
		if now.Sub(rec.HeartbeatAt) > staleRecordAfter {
			if err := o.w.tr.Store.DeleteWorker(ctx, rec.WorkerID); err == nil {
				o.w.log.Info("deleted the record of a worker silent for a day", "stale_worker", rec.WorkerID)
			}
		}
	}
	for _, url := range urls {
		name := url[strings.LastIndex(url, "/")+1:]
		if name == o.w.tr.Queues.ControlName(o.w.id) || alive[name] {
			continue
		}
		if err := o.w.tr.Queues.DeleteQueue(ctx, url); err == nil {
			o.w.log.Info("deleted the control queue of a worker gone silent", "queue", name)
		}
	}
}
