package worker

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

// receiver takes tasks for one slot pool from one logical queue's bands. It
// holds a free slot before it asks SQS for anything, so a message is only
// received by a worker able to start it soon.
//
// With a slot in hand it short-polls the bands highest first, so a backlog
// drains in priority order. When every band came back empty it long-polls all
// bands at once instead: an arrival on any band wakes it, and an idle worker
// costs one request per band per poll wait. Those long polls are never
// canceled early, because SQS may hand a message to a poll whose caller
// already left, hiding it for the visibility timeout: a poll that returns a
// message after another band's poll won keeps it pending for the next slot.
type receiver struct {
	w       *Worker
	queue   *sqsx.Queue
	urls    map[string]string // band → URL of this pool's family
	slots   chan struct{}
	runs    bool
	streak  int  // tasks taken in a row from the top band (anti-starvation)
	idle    bool // the last cycle found every band empty
	polling map[string]bool
	results chan polled // long-poll outcomes, one in flight per band at most
	pending []polled    // received, not yet handed to a slot
}

type polled struct {
	band string
	msgs []types.Message
	err  error
}

func (r *receiver) loop() {
	r.polling = map[string]bool{}
	r.results = make(chan polled, len(r.queue.Layout))
	defer r.handBack()
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
	r.collect()
	if len(r.pending) > 0 || !r.idle {
		for _, band := range r.order() {
			if len(r.pending) > 0 && r.queue.Layout.Rank(band) >= r.queue.Layout.Rank(r.best()) {
				break // nothing below a pending message's band can beat it
			}
			if r.polling[band] {
				continue // its long poll will land what arrives there
			}
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
	if p, ok := r.takePending(); ok {
		return p.band, &p.msgs[0], nil
	}
	return r.longPoll(ctx)
}

// best is the highest band among pending messages.
func (r *receiver) best() string {
	best := r.pending[0].band
	for _, p := range r.pending[1:] {
		if r.queue.Layout.Rank(p.band) < r.queue.Layout.Rank(best) {
			best = p.band
		}
	}
	return best
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

// longPoll waits on every band that has no poll in flight, and returns the
// first message any band yields; the other polls run on.
func (r *receiver) longPoll(ctx context.Context) (string, *types.Message, error) {
	for _, band := range r.queue.Layout {
		if r.polling[band] {
			continue
		}
		r.polling[band] = true
		// Deaf to a stop: a long poll abandoned client-side still completes at
		// SQS, and a message it takes then stays invisible for the visibility
		// timeout. Stopping waits for it instead (handBack releases what it took).
		pollCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(r.w.opts.PollWaitSeconds)*time.Second+writeTimeout)
		go func() {
			defer cancel()
			msgs, err := r.w.tr.Queues.Receive(pollCtx, r.urls[band], 1, r.w.opts.PollWaitSeconds)
			r.results <- polled{band, msgs, err}
		}()
	}
	var firstErr error
	for {
		select {
		case p := <-r.results:
			r.land(p)
			if p.err != nil && firstErr == nil && ctx.Err() == nil {
				firstErr = p.err
			}
		case <-ctx.Done():
			return "", nil, ctx.Err()
		}
		if p, ok := r.takePending(); ok {
			r.idle = false
			return p.band, &p.msgs[0], nil
		}
		if !slices.Contains(slices.Collect(maps.Values(r.polling)), true) {
			r.idle = firstErr == nil
			return "", nil, firstErr
		}
	}
}

// collect lands the polls that finished since the last look.
func (r *receiver) collect() {
	for {
		select {
		case p := <-r.results:
			r.land(p)
		default:
			return
		}
	}
}

func (r *receiver) land(p polled) {
	r.polling[p.band] = false
	if len(p.msgs) > 0 {
		r.pending = append(r.pending, p)
	}
}

// takePending hands out the highest-band pending message.
func (r *receiver) takePending() (polled, bool) {
	if len(r.pending) == 0 {
		return polled{}, false
	}
	slices.SortStableFunc(r.pending, func(a, b polled) int {
		return r.queue.Layout.Rank(a.band) - r.queue.Layout.Rank(b.band)
	})
	p := r.pending[0]
	r.pending = r.pending[1:]
	r.took(p.band)
	return p, true
}

// handBack makes received-but-unstarted messages visible again at shutdown,
// once the polls still in flight have returned.
func (r *receiver) handBack() {
	for slices.Contains(slices.Collect(maps.Values(r.polling)), true) {
		r.land(<-r.results)
	}
	for _, p := range r.pending {
		ctx, cancel := r.w.writeCtx()
		if err := r.w.tr.Queues.Release(ctx, r.urls[p.band], aws.ToString(p.msgs[0].ReceiptHandle)); err != nil {
			r.w.log.Warn("could not hand back a message; it returns after its visibility timeout", "error", err)
		}
		cancel()
	}
}
