// Package transport opens the SQS and S3 sides of one configuration.
package transport

import (
	"context"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/awsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// Transport is what submitters and workers share: the config, the queues and the store.
type Transport struct {
	Config config.Config
	Queues *sqsx.Client
	Store  *store.Store
}

// Open builds the clients for cfg. It makes no network call.
func Open(ctx context.Context, cfg config.Config) (*Transport, error) {
	clients, err := awsx.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Transport{
		Config: cfg,
		Queues: sqsx.New(clients.SQS, cfg.QueuePrefix, cfg.CreateMissingQueues),
		Store:  store.New(clients.S3, cfg.S3Bucket, cfg.S3Prefix),
	}, nil
}

// QueueURL resolves a logical queue, honouring the queue_url override.
func (t *Transport) QueueURL(ctx context.Context, queue string) (string, error) {
	if t.Config.QueueURL != "" {
		return t.Config.QueueURL, nil
	}
	return t.Queues.URL(ctx, queue)
}
