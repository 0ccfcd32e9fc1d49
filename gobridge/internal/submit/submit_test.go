package submit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

const testKey = "0123456789abcdef-test-key"

func TestMain(m *testing.M) { mototest.Main(m) }

func stepRequest(args string) Request {
	return Request{Kind: envelope.ExecuteStep, RunID: "run1", StepKey: "op_a", Attempt: 1, Args: args}
}

func TestSubmitRoundTrip(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()

	res, err := Submit(ctx, tr, stepRequest("compressed-args"))
	require.NoError(t, err)
	require.Equal(t, "run1/op_a/1", res.TaskID)
	require.Equal(t, "dagster", res.Queue)
	require.False(t, res.Offloaded)

	rec, err := tr.Store.GetTask(ctx, res.TaskID)
	require.NoError(t, err)
	require.Equal(t, store.Queued, rec.State)
	require.Equal(t, "op_a", rec.StepKey)

	msgs, err := tr.Queues.Receive(ctx, res.QueueURL, 1, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	body := []byte(aws.ToString(msgs[0].Body))
	require.True(t, envelope.Verify([]byte(testKey), body, sqsx.Attr(msgs[0], AttrSignature)))
	require.Equal(t, res.TaskID, sqsx.Attr(msgs[0], AttrTaskID))
	env, err := envelope.Decode(body)
	require.NoError(t, err)
	require.Equal(t, "compressed-args", env.Args)
	require.Equal(t, envelope.ExecuteStep, env.Kind)
	require.WithinDuration(t, time.Now(), env.SentAt, time.Minute)
}

func TestSubmitOffloadsLargePayload(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, func(c *config.Config) { c.Source.PayloadThresholdBytes = 1024 }, "dagster")
	ctx := context.Background()
	args := strings.Repeat("x", 4096)

	res, err := Submit(ctx, tr, stepRequest(args))
	require.NoError(t, err)
	require.True(t, res.Offloaded)
	msgs, err := tr.Queues.Receive(ctx, res.QueueURL, 1, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	env, err := envelope.Decode([]byte(aws.ToString(msgs[0].Body)))
	require.NoError(t, err)
	require.Empty(t, env.Args)
	stored, err := tr.Store.Get(ctx, env.ArgsKey)
	require.NoError(t, err)
	require.Equal(t, args, string(stored))
}

func TestSubmitMissingQueueNamesIt(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil)
	_, err := Submit(context.Background(), tr, stepRequest("a"))
	require.Error(t, err)
	require.Equal(t, fault.NotFound, fault.CodeOf(err))
	require.ErrorContains(t, err, `queue "dagster"`)
	require.ErrorContains(t, err, "queue create dagster")
}

func TestSubmitCreatesMissingQueueWhenAllowed(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, func(c *config.Config) { c.CreateMissingQueues = true })
	res, err := Submit(context.Background(), tr, stepRequest("a"))
	require.NoError(t, err)
	require.Contains(t, res.QueueURL, tr.Queues.PhysicalName("dagster"))
}

func TestSubmitRequiresSigningKey(t *testing.T) {
	t.Setenv(envelope.KeyEnv, "")
	t.Setenv(envelope.KeyFileEnv, "")
	t.Setenv(envelope.InsecureEnv, "")
	tr := mototest.Transport(t, nil, "dagster")
	_, err := Submit(context.Background(), tr, stepRequest("a"))
	require.Equal(t, fault.Config, fault.CodeOf(err))
	require.ErrorContains(t, err, envelope.KeyEnv)

	t.Setenv(envelope.InsecureEnv, "1")
	_, err = Submit(context.Background(), tr, stepRequest("a"))
	require.NoError(t, err)
}

func TestSubmitRejectsBadRequests(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil, "dagster")
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"kind", Request{Kind: "shell", RunID: "r", Args: "a"}, `unknown task kind "shell"`},
		{"step key", Request{Kind: envelope.ExecuteStep, RunID: "r", Args: "a"}, "step_key"},
		{"args", Request{Kind: envelope.ExecuteRun, RunID: "r"}, "args"},
		{"queue", Request{Kind: envelope.ExecuteRun, RunID: "r", Args: "a", Queue: "no spaces"}, "queue name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Submit(context.Background(), tr, tt.req)
			require.Equal(t, fault.Config, fault.CodeOf(err))
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestCancelQueuedTask(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()
	res, err := Submit(ctx, tr, stepRequest("a"))
	require.NoError(t, err)

	out, err := Cancel(ctx, tr, res.TaskID)
	require.NoError(t, err)
	require.True(t, out.Requested)
	require.Equal(t, store.Canceled, out.State)
	canceled, err := tr.Store.IsCanceled(ctx, res.TaskID)
	require.NoError(t, err)
	require.True(t, canceled)

	again, err := Cancel(ctx, tr, res.TaskID)
	require.NoError(t, err)
	require.False(t, again.Requested, "a finished task has nothing left to cancel")

	_, err = Cancel(ctx, tr, "run1/missing/1")
	require.Equal(t, fault.NotFound, fault.CodeOf(err))
}
