package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

// receiver takes tasks for one slot pool from one logical queue's bands. It
// holds a free slot before it asks SQS for anything, so a message is only
// received by a worker able to start it at once.
//
// With a slot in hand it short-polls the bands highest first, so a backlog
// drains in priority order. When every band came back empty it long-polls all
// bands at once instead: an arrival on any band wakes it, and an idle worker
// costs one request per band per poll wait.
type receiver struct {
	w      *Worker
	queue  *sqsx.Queue
	urls   map[string]string // band → URL of this pool's family
	slots  chan struct{}
	runs   bool
	streak int  // tasks taken in a row from the top band (anti-starvation)
	idle   bool // the last cycle found every band empty
}

func (r *receiver) loop() {
	backoff := time.Second
	for {
		select {
		case r.slots <- struct{}{}:
		case <-r.w.fetchCtx.Done():
			return
		}
		band, m, err := r.next(r.w.fetchCtx)
		if err != nil {
			<-r.slots
			if r.w.fetchCtx.Err() != nil {
				return
			}
			r.w.log.Warn("receive failed; retrying", "queue", r.queue.Name, "runs", r.runs, "error", err, "backoff", backoff)
			select {
			case <-time.After(backoff + rand.N(backoff/2)):
			case <-r.w.fetchCtx.Done():
				return
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		if m == nil {
			<-r.slots
			continue
		}
		r.w.tasks.Go(func() {
			defer func() { <-r.slots }()
			r.w.handle(r.queue, r.urls[band], *m)
		})
	}
}

// next returns one message and its band, or a nil message when none came.
func (r *receiver) next(ctx context.Context) (string, *types.Message, error) {
	if !r.idle {
		for _, band := range r.order() {
			msgs, err := r.w.tr.Queues.Receive(ctx, r.urls[band], 1, 0)
			if err != nil {
				return "", nil, err
			}
			if len(msgs) > 0 {
				r.took(band)
				return band, &msgs[0], nil
			}
		}
	}
	band, m, err := r.longPoll(ctx)
	r.idle = err == nil && m == nil
	if m != nil {
		r.took(band)
	}
	return band, m, err
}

// order is the short-poll order: highest band first, except that after
// AntiStarvationWeight tasks in a row from the top band a lower band goes first once.
func (r *receiver) order() []string {
	bands := slices.Clone(r.queue.Layout)
	if w := r.w.opts.AntiStarvationWeight; w > 0 && r.streak >= w && len(bands) > 1 {
		r.streak = 0
		return append(bands[1:], bands[0])
	}
	return bands
}

func (r *receiver) took(band string) {
	if band == r.queue.Layout[0] {
		r.streak++
	} else {
		r.streak = 0
	}
}

// longPoll waits on every band at once and keeps the highest-band message.
// Polls still out when the first message arrives are canceled; any other
// message that did arrive is handed back at once (visibility 0).
func (r *receiver) longPoll(ctx context.Context) (string, *types.Message, error) {
	bands := r.queue.Layout
	wait := r.w.opts.PollWaitSeconds
	if len(bands) == 1 {
		msgs, err := r.w.tr.Queues.Receive(ctx, r.urls[bands[0]], 1, wait)
		if err != nil || len(msgs) == 0 {
			return "", nil, err
		}
		return bands[0], &msgs[0], nil
	}
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		band string
		msgs []types.Message
		err  error
	}
	results := make(chan result, len(bands))
	for _, band := range bands {
		go func() {
			msgs, err := r.w.tr.Queues.Receive(pollCtx, r.urls[band], 1, wait)
			results <- result{band, msgs, err}
		}()
	}
	var got []result
	var firstErr error
	for range bands {
		res := <-results
		switch {
		case len(res.msgs) > 0:
			got = append(got, res)
			cancel()
		case res.err != nil && !errors.Is(res.err, context.Canceled) && firstErr == nil:
			firstErr = res.err
		}
	}
	if len(got) == 0 {
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		return "", nil, firstErr
	}
	slices.SortFunc(got, func(a, b result) int { return r.queue.Layout.Rank(a.band) - r.queue.Layout.Rank(b.band) })
	for _, extra := range got[1:] {
		releaseCtx, releaseCancel := r.w.writeCtx()
		if err := r.w.tr.Queues.Release(releaseCtx, r.urls[extra.band], aws.ToString(extra.msgs[0].ReceiptHandle)); err != nil {
			r.w.log.Warn("could not hand back a message; it returns after its visibility timeout", "error", err)
		}
		releaseCancel()
	}
	return got[0].band, &got[0].msgs[0], nil
}
