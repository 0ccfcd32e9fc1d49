package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

// deleteWindow is how long a due delete waits for others to the same queue.
// A receiver takes one message per receive, so the deletes of a burst fall
// due a receive round trip or so apart; a task never waits on its delete.
const deleteWindow = 30 * time.Millisecond

// deleter deletes the task messages a worker is done with. The deletes of
// one queue URL that fall due within deleteWindow go in one
// DeleteMessageBatch call (a full batch at once), not a DeleteMessage each:
// a worker with N slots taking a burst makes one call, not N.
//
// Lease renewals are not batched: each is an S3 PUT of the task's own
// record, and S3 has no batch put.
type deleter struct {
	batch   func(ctx context.Context, url string, receipts []string) []error // sqsx.Client.DeleteBatch
	window  time.Duration
	due     chan deletion
	flights sync.WaitGroup // batch calls under way
	done    chan struct{}
}

type deletion struct {
	url, receipt string
	log          *slog.Logger // the task's, so a failure names it
}

func startDeleter(batch func(context.Context, string, []string) []error, window time.Duration) *deleter {
	d := &deleter{batch: batch, window: window, due: make(chan deletion), done: make(chan struct{})}
	go d.loop()
	return d
}

// delete hands a received message over for deletion and returns at once.
func (d *deleter) delete(log *slog.Logger, url, receipt string) {
	d.due <- deletion{url: url, receipt: receipt, log: log}
}

// close sends the deletes still waiting and returns once every call has
// ended. No delete may follow it.
func (d *deleter) close() {
	close(d.due)
	<-d.done
}

func (d *deleter) loop() {
	defer close(d.done)
	pending := map[string][]deletion{} // url → deletes waiting
	var timer <-chan time.Time         // nil while nothing waits
	flush := func() {
		for url, dels := range pending {
			d.send(url, dels)
		}
		clear(pending)
		timer = nil
	}
	for {
		select {
		case del, open := <-d.due:
			if !open {
				flush()
				d.flights.Wait()
				return
			}
			if dels := append(pending[del.url], del); len(dels) == sqsx.MaxBatch {
				d.send(del.url, dels)
				delete(pending, del.url)
			} else {
				pending[del.url] = dels
			}
			if timer == nil {
				timer = time.After(d.window)
			}
		case <-timer:
			flush()
		}
	}
}

// send makes one batch call in the background, so deletes keep collecting.
func (d *deleter) send(url string, dels []deletion) {
	d.flights.Go(func() {
		// Bounded, and deaf to a stop: the last batches go while the worker stops.
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		receipts := make([]string, len(dels))
		for i, del := range dels {
			receipts[i] = del.receipt
		}
		for i, err := range d.batch(ctx, url, receipts) {
			if err != nil {
				dels[i].log.Warn("could not delete message; a redelivery will be refused by the claim", "error", err)
			}
		}
	})
}
