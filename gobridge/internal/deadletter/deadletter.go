// Package deadletter finds tasks whose message SQS's own redrive policy moved
// to a dead-letter queue. Workers record the messages they dead-letter
// themselves; a redrive happens without any worker (a message received
// maxReceiveCount times and never deleted), so without this its task record
// would stay QUEUED and its step or run would wait forever.
package deadletter

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// Scan bounds. A scan hides what it reads for at most HideSeconds (it makes
// every message visible again as soon as it is done), reads at most
// MaxScanMessages, and is reused while the DLQ's depth is unchanged, for up
// to RescanAfter (RetryAfter when it could not see every message).
const (
	HideSeconds     = 30
	MaxScanMessages = 1000
	RescanAfter     = 30 * time.Second
	RetryAfter      = 5 * time.Second
	// waitSeconds makes each receive a (short) long poll: a short poll
	// samples only some SQS servers and may come back empty while messages wait.
	waitSeconds   = 1
	unhideTimeout = 10 * time.Second
)

// API is the part of sqsx.Client a Finder uses.
type API interface {
	Count(ctx context.Context, url string) (sqsx.Counts, error)
	ReceiveHidden(ctx context.Context, url string, max, waitSeconds, visibilitySeconds int) ([]types.Message, error)
	Unhide(ctx context.Context, url string, receipts []string) error
	RedrivePolicy(ctx context.Context, url string) (string, int, error)
}

// VerifyFunc says whether a message body and its signature attribute are
// authentic (see envelope.VerifyFromEnv).
type VerifyFunc func(body []byte, sig string) bool

// Finder answers "is this task's message in that DLQ?" from a cached scan of
// the DLQ: one GetQueueAttributes per question while the DLQ is empty or its
// depth is unchanged, a rescan when the depth changes.
type Finder struct {
	api    API
	verify VerifyFunc
	now    func() time.Time

	mu    sync.Mutex
	scans map[string]*scan // DLQ URL → its last scan
}

type scan struct {
	mu       sync.Mutex // one scan of a DLQ at a time
	at       time.Time
	depth    int
	complete bool
	tasks    map[string]bool // task ids of the authentic envelopes seen
}

// New returns a Finder.
func New(api API, verify VerifyFunc) *Finder {
	return &Finder{api: api, verify: verify, now: time.Now, scans: map[string]*scan{}}
}

// Contains reports whether the DLQ holds an authentic message, moved there by
// SQS's redrive, whose envelope names taskID. Messages a worker moved there
// itself (it recorded those) and messages that fail verification are ignored:
// the task id of an unauthenticated message must not fail anything.
func (f *Finder) Contains(ctx context.Context, dlqURL, taskID string) (bool, error) {
	counts, err := f.api.Count(ctx, dlqURL)
	if err != nil {
		return false, err
	}
	depth := counts.Visible + counts.InFlight
	f.mu.Lock()
	s, ok := f.scans[dlqURL]
	if !ok {
		s = &scan{}
		f.scans[dlqURL] = s
	}
	f.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if depth == 0 {
		s.at, s.depth, s.complete, s.tasks = time.Time{}, 0, false, nil // nothing there: forget the last scan
		return false, nil
	}
	reuse := RescanAfter
	if !s.complete {
		reuse = RetryAfter
	}
	if s.at.IsZero() || s.depth != depth || f.now().Sub(s.at) >= reuse {
		if err := f.rescan(ctx, dlqURL, s, counts); err != nil {
			return false, err
		}
		s.depth = depth
	}
	return s.tasks[taskID], nil
}

// rescan reads every visible message of the DLQ (up to MaxScanMessages),
// then makes them visible again, so operators keep seeing them.
func (f *Finder) rescan(ctx context.Context, url string, s *scan, counts sqsx.Counts) error {
	seen := map[string]bool{}
	tasks := map[string]bool{}
	var receipts []string
	defer func() {
		// Even when the scan itself ran out of time. Best effort: a message
		// whose release fails reappears after HideSeconds.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unhideTimeout)
		defer cancel()
		for start := 0; start < len(receipts); start += sqsx.MaxBatch {
			_ = f.api.Unhide(ctx, url, receipts[start:min(start+sqsx.MaxBatch, len(receipts))])
		}
	}()
	for len(seen) < min(counts.Visible, MaxScanMessages) {
		msgs, err := f.api.ReceiveHidden(ctx, url, sqsx.MaxBatch, waitSeconds, HideSeconds)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			break // the count was approximate, or another reader holds the rest
		}
		for _, m := range msgs {
			receipts = append(receipts, aws.ToString(m.ReceiptHandle))
			seen[aws.ToString(m.MessageId)] = true
			if id, ok := f.redriven(m); ok {
				tasks[id] = true
			}
		}
	}
	// Messages in flight elsewhere (an operator, another scan) were not seen:
	// such a scan is retried sooner.
	s.at, s.complete, s.tasks = f.now(), len(seen) >= counts.Visible+counts.InFlight, tasks
	return nil
}

// redriven returns the task id of an authentic envelope that SQS moved.
func (f *Finder) redriven(m types.Message) (string, bool) {
	if sqsx.Attr(m, envelope.AttrDeadLetterReason) != "" {
		return "", false // a worker's copy: that worker recorded the task
	}
	body := []byte(aws.ToString(m.Body))
	if !f.verify(body, sqsx.Attr(m, envelope.AttrSignature)) {
		return "", false
	}
	// The signed body names the task; the task-id attribute is not signed.
	env, err := envelope.Decode(body)
	if err != nil {
		return "", false
	}
	return env.TaskID, true
}

// Store is the part of store.Store that Fail uses.
type Store interface {
	IsClaimed(ctx context.Context, id string) (bool, error)
	PutTask(ctx context.Context, r store.Record) error
}

// Fail records a QUEUED task FAILED when SQS's redrive moved its message to
// the queue's DLQ, and returns the record as it now stands. A claimed task is
// left alone: a worker took it, and what SQS moved was a duplicate delivery.
func Fail(ctx context.Context, f *Finder, st Store, q *sqsx.Queue, rec store.Record) (store.Record, error) {
	if rec.State != store.Queued || q.DLQ == "" {
		return rec, nil
	}
	found, err := f.Contains(ctx, q.DLQ, rec.TaskID)
	if err != nil || !found {
		return rec, err
	}
	if claimed, err := st.IsClaimed(ctx, rec.TaskID); err != nil || claimed {
		return rec, err
	}
	// The receive limit of the band queue the task was sent to: bands may differ.
	urls := q.URLs
	if envelope.Kind(rec.Kind).IsRun() && q.RunURLs != nil {
		urls = q.RunURLs
	}
	source := cmp.Or(urls[rec.Band], q.URLs[routing.BandNormal])
	_, maxReceive, err := f.api.RedrivePolicy(ctx, source)
	if err != nil {
		return rec, err
	}
	now := f.now().UTC()
	rec.State, rec.FinishedAt = store.Failed, &now
	rec.Reason = fmt.Sprintf("dead-lettered by SQS into %s after %d receives from %s without a worker claiming it "+
		"(the message is kept there; see the workers' logs for why they did not take it)",
		sqsx.QueueName(q.DLQ), maxReceive, sqsx.QueueName(source))
	return rec, st.PutTask(ctx, rec)
}
