package submit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
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
	require.ErrorContains(t, err, "queue create")
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
		{"queue", Request{Kind: envelope.ExecuteRun, RunID: "r", Args: "a",
			RunTags: map[string]string{routing.QueueTag: "no spaces"}}, `tag "dagster-taskiq/queue" on the run`},
		{"priority", Request{Kind: envelope.ExecuteStep, RunID: "r", StepKey: "s", Args: "a",
			StepTags: map[string]string{routing.PriorityTag: "high"}}, `"high"`},
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

func TestSubmitRoutesByTags(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil, "dagster", "a", "b")
	ctx := context.Background()
	tests := []struct {
		name      string
		step, run map[string]string
		want      string
	}{
		{"default queue", nil, nil, "dagster"},
		{"run tag", nil, map[string]string{routing.QueueTag: "a"}, "a"},
		{"step tag beats run tag", map[string]string{routing.QueueTag: "b"}, map[string]string{routing.QueueTag: "a"}, "b"},
		{"celery step tag as fallback", map[string]string{routing.CeleryQueueTag: "b"}, nil, "b"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := stepRequest("x")
			req.StepKey = fmt.Sprintf("op_%d", i)
			req.StepTags, req.RunTags = tt.step, tt.run
			res, err := Submit(ctx, tr, req)
			require.NoError(t, err)
			require.Equal(t, tt.want, res.Queue)
			msgs, err := tr.Queues.Receive(ctx, res.QueueURL, 1, 1)
			require.NoError(t, err)
			require.Len(t, msgs, 1, "the message is in queue %s", tt.want)
			require.Equal(t, res.TaskID, sqsx.Attr(msgs[0], AttrTaskID))
		})
	}
}

func TestSubmitPriorityChoosesBandWithoutDelay(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()
	q, err := tr.Queue(ctx, "dagster")
	require.NoError(t, err)
	require.Equal(t, routing.DefaultLayout, q.Layout)
	tests := []struct {
		name      string
		step, run map[string]string
		priority  int
		band      string
	}{
		{"no tags", nil, nil, 0, routing.BandNormal},
		{"step priority", map[string]string{routing.PriorityTag: "10"}, nil, 10, routing.BandHigh},
		{"step plus run", map[string]string{routing.PriorityTag: "3"}, map[string]string{routing.RunPriorityTag: "-5"}, -2, routing.BandLow},
		{"dagster priority", map[string]string{routing.DagsterPriorityTag: "1"}, nil, 1, routing.BandHigh},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := stepRequest("x")
			req.StepKey = fmt.Sprintf("op_%d", i)
			req.StepTags, req.RunTags = tt.step, tt.run
			res, err := Submit(ctx, tr, req)
			require.NoError(t, err)
			require.Equal(t, tt.priority, res.Priority)
			require.Equal(t, tt.band, res.Band)
			require.Equal(t, q.URLs[tt.band], res.QueueURL)
			// No delay: the message is receivable at once, with a zero-wait receive.
			msgs, err := tr.Queues.Receive(ctx, q.URLs[tt.band], 1, 0)
			require.NoError(t, err)
			require.Len(t, msgs, 1)
		})
	}
}

func TestOneBandQueueTakesEveryPriority(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	tr := mototest.Transport(t, nil)
	ctx := context.Background()
	require.NoError(t, tr.Queues.CreateBands(ctx, "dagster", routing.Layout{routing.BandNormal}))
	req := stepRequest("x")
	req.StepTags = map[string]string{routing.PriorityTag: "10"}
	res, err := Submit(ctx, tr, req)
	require.NoError(t, err)
	require.Equal(t, routing.BandNormal, res.Band)
}

func TestBandLayoutCannotChange(t *testing.T) {
	tr := mototest.Transport(t, nil, "dagster")
	ctx := context.Background()
	require.NoError(t, tr.Queues.CreateBands(ctx, "dagster", routing.DefaultLayout), "re-creating is idempotent")
	err := tr.Queues.CreateBands(ctx, "dagster", routing.Layout{routing.BandNormal})
	require.Equal(t, fault.Config, fault.CodeOf(err))
	require.ErrorContains(t, err, `already exists with bands "high,normal,low"`)
}

func TestQueueURLOverride(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	other := mototest.Transport(t, nil, "elsewhere")
	url, err := other.QueueURL(context.Background(), "elsewhere")
	require.NoError(t, err)
	tr := mototest.Transport(t, func(c *config.Config) { c.QueueURL = url })
	req := stepRequest("x")
	req.StepTags = map[string]string{routing.PriorityTag: "10"}
	res, err := Submit(context.Background(), tr, req)
	require.NoError(t, err)
	require.Equal(t, url, res.QueueURL)
}
