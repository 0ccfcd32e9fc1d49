// Package transport opens the SQS and S3 sides of one configuration.
package transport

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/awsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/deadletter"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// Transport is what submitters and workers share: the config, the queues and the store.
type Transport struct {
	Config config.Config
	Queues *sqsx.Client
	Store  *store.Store
	// DeadLetters finds tasks that SQS's redrive moved to a DLQ; its scans
	// are cached, so every health check of the process shares them.
	DeadLetters *deadletter.Finder

	workersMu   sync.Mutex
	workers     []store.WorkerRecord
	workersRead time.Time
}

// workersTTL bounds how stale the worker list behind Listeners may be: one
// listing per this interval, however many steps a run launches.
const workersTTL = 15 * time.Second

// Listeners counts the live workers that listen to a queue.
func (t *Transport) Listeners(ctx context.Context, queue string) (int, error) {
	t.workersMu.Lock()
	defer t.workersMu.Unlock()
	now := time.Now()
	if now.Sub(t.workersRead) > workersTTL {
		workers, err := t.Store.ListWorkers(ctx)
		if err != nil {
			return 0, err
		}
		t.workers, t.workersRead = workers, now
	}
	n := 0
	for _, w := range t.workers {
		// Live as of the listing: a cached listing must not make live workers look stale.
		if w.Live(t.workersRead) && !w.Stopping && slices.Contains(w.Queues, queue) {
			n++
		}
	}
	return n, nil
}

// Open builds the clients for cfg. It makes no network call.
func Open(ctx context.Context, cfg config.Config) (*Transport, error) {
	clients, err := awsx.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	queues := sqsx.New(clients.SQS, cfg.QueuePrefix, cfg.CreateMissingQueues)
	return &Transport{
		Config:      cfg,
		Queues:      queues,
		Store:       store.New(clients.S3, cfg.S3Bucket, cfg.S3Prefix),
		DeadLetters: deadletter.New(queues, envelope.VerifyFromEnv),
	}, nil
}

// Queue resolves a logical queue to its bands, honouring the queue_url override.
func (t *Transport) Queue(ctx context.Context, queue string) (*sqsx.Queue, error) {
	if t.Config.QueueURL != "" {
		return t.Queues.Fixed(ctx, queue, t.Config.QueueURL)
	}
	return t.Queues.Resolve(ctx, queue)
}

// QueueURL is the normal band's URL of a logical queue.
func (t *Transport) QueueURL(ctx context.Context, queue string) (string, error) {
	q, err := t.Queue(ctx, queue)
	if err != nil {
		return "", err
	}
	return q.URLs[routing.BandNormal], nil
}
