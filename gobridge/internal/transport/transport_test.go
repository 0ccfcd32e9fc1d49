package transport_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

func TestMain(m *testing.M) { mototest.Main(m) }

// The worker listing behind Listeners is cached; a worker live when it was
// listed must not turn stale as the cached listing ages.
func TestListenersJudgeLivenessAsOfTheListing(t *testing.T) {
	tr := mototest.Transport(t, nil)
	ctx := context.Background()
	require.NoError(t, tr.Store.PutWorker(ctx, store.WorkerRecord{WorkerID: "w1", Queues: []string{"a"},
		HeartbeatAt: time.Now().UTC(), HeartbeatEvery: 1}))
	require.NoError(t, tr.Store.PutWorker(ctx, store.WorkerRecord{WorkerID: "old", Queues: []string{"a"},
		HeartbeatAt: time.Now().UTC().Add(-time.Hour), HeartbeatEvery: 1}))

	n, err := tr.Listeners(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, 1, n, "the stale worker does not count")

	time.Sleep(3500 * time.Millisecond) // past w1's liveness window (3 heartbeats), within the cache's TTL
	n, err = tr.Listeners(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = tr.Listeners(ctx, "b")
	require.NoError(t, err)
	require.Zero(t, n)
}
