package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/deadletter"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/submit"
)

func TestMain(m *testing.M) { mototest.Main(m) }

// redrive receives a queue's message maxReceiveCount times without deleting
// it, as a consumer that keeps failing before its delete would, then once
// more: SQS moves it to the dead-letter queue instead of delivering it.
func redrive(t *testing.T, sq *sqsx.Client, url string, maxReceive int) {
	t.Helper()
	ctx := context.Background()
	for i := range maxReceive {
		msgs, err := sq.Receive(ctx, url, 1, 1)
		require.NoError(t, err)
		require.Len(t, msgs, 1, "receive %d", i+1)
		require.NoError(t, sq.Release(ctx, url, aws.ToString(msgs[0].ReceiptHandle)))
	}
	msgs, err := sq.Receive(ctx, url, 1, 1)
	require.NoError(t, err)
	require.Empty(t, msgs, "after %d receives the message belongs to the DLQ", maxReceive)
}

func TestRedrivenTaskIsRecordedFailed(t *testing.T) {
	t.Setenv(envelope.KeyEnv, "0123456789abcdef-test-key")
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()
	q, err := tr.Queue(ctx, "dagster")
	require.NoError(t, err)

	dead, err := submit.Submit(ctx, tr, submit.Request{Kind: envelope.ExecuteStep, RunID: "run1", StepKey: "dead", Attempt: 1, Args: "a"})
	require.NoError(t, err)
	redrive(t, tr.Queues, dead.QueueURL, sqsx.MaxReceiveCountDefault)
	alive, err := submit.Submit(ctx, tr, submit.Request{Kind: envelope.ExecuteStep, RunID: "run1", StepKey: "alive", Attempt: 1, Args: "a"})
	require.NoError(t, err)

	rec, err := tr.Store.GetTask(ctx, alive.TaskID)
	require.NoError(t, err)
	rec, err = deadletter.Fail(ctx, tr.DeadLetters, tr.Store, q, rec)
	require.NoError(t, err)
	require.Equal(t, store.Queued, rec.State, "a task whose message waits in its queue is not dead")

	rec, err = tr.Store.GetTask(ctx, dead.TaskID)
	require.NoError(t, err)
	rec, err = deadletter.Fail(ctx, tr.DeadLetters, tr.Store, q, rec)
	require.NoError(t, err)
	require.Equal(t, store.Failed, rec.State)
	dlqName := tr.Queues.PhysicalName("dagster") + "-dlq"
	require.Equal(t, "dead-lettered by SQS into "+dlqName+" after 10 receives from "+tr.Queues.PhysicalName("dagster")+
		" without a worker claiming it "+
		"(the message is kept there; see the workers' logs for why they did not take it)", rec.Reason)
	stored, err := tr.Store.GetTask(ctx, dead.TaskID)
	require.NoError(t, err)
	require.Equal(t, rec.Reason, stored.Reason, "recorded, so later checks need no scan")

	// The scan hid nothing for long: the message is visible to operators again.
	msgs, err := tr.Queues.Receive(ctx, q.DLQ, 1, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, dead.TaskID, sqsx.Attr(msgs[0], submit.AttrTaskID))
}

func TestRedrivenDuplicateOfAClaimedTaskIsLeftAlone(t *testing.T) {
	t.Setenv(envelope.KeyEnv, "0123456789abcdef-test-key")
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()
	q, err := tr.Queue(ctx, "dagster")
	require.NoError(t, err)
	res, err := submit.Submit(ctx, tr, submit.Request{Kind: envelope.ExecuteStep, RunID: "run1", StepKey: "s", Attempt: 1, Args: "a"})
	require.NoError(t, err)
	redrive(t, tr.Queues, res.QueueURL, sqsx.MaxReceiveCountDefault)
	ok, err := tr.Store.Claim(ctx, store.Claim{TaskID: res.TaskID, WorkerID: "w", ClaimedAt: time.Now()})
	require.NoError(t, err)
	require.True(t, ok)

	rec, err := tr.Store.GetTask(ctx, res.TaskID)
	require.NoError(t, err)
	rec, err = deadletter.Fail(ctx, tr.DeadLetters, tr.Store, q, rec)
	require.NoError(t, err)
	require.Equal(t, store.Queued, rec.State, "a worker holds the claim: what SQS moved was a duplicate")
}
