package deadletter

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

const testKey = "0123456789abcdef-test-key"

// fakeDLQ is one dead-letter queue in memory; it counts the calls a Finder makes.
type fakeDLQ struct {
	msgs     []types.Message
	hidden   map[string]bool // receipt → hidden
	inFlight int             // messages someone else holds
	counts   int
	receives int
	unhidden int
}

func (q *fakeDLQ) Count(context.Context, string) (sqsx.Counts, error) {
	q.counts++
	visible := 0
	for _, m := range q.msgs {
		if !q.hidden[aws.ToString(m.ReceiptHandle)] {
			visible++
		}
	}
	return sqsx.Counts{Visible: visible, InFlight: q.inFlight + len(q.msgs) - visible}, nil
}

func (q *fakeDLQ) ReceiveHidden(_ context.Context, _ string, max, _, visibility int) ([]types.Message, error) {
	q.receives++
	if visibility != HideSeconds {
		return nil, fmt.Errorf("scans must hide for HideSeconds, got %d", visibility)
	}
	var out []types.Message
	for _, m := range q.msgs {
		if r := aws.ToString(m.ReceiptHandle); !q.hidden[r] && len(out) < max {
			q.hidden[r] = true
			out = append(out, m)
		}
	}
	return out, nil
}

func (q *fakeDLQ) Unhide(_ context.Context, _ string, receipts []string) error {
	for _, r := range receipts {
		q.unhidden++
		delete(q.hidden, r)
	}
	return nil
}

func (q *fakeDLQ) RedrivePolicy(context.Context, string) (string, int, error) { return "dlq", 10, nil }

func (q *fakeDLQ) add(body string, attrs map[string]string) {
	m := types.Message{Body: aws.String(body), MessageId: aws.String(fmt.Sprint(len(q.msgs))),
		ReceiptHandle: aws.String(fmt.Sprint("r", len(q.msgs))), MessageAttributes: map[string]types.MessageAttributeValue{}}
	for k, v := range attrs {
		m.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	q.msgs = append(q.msgs, m)
}

func body(t *testing.T, taskID string) string {
	t.Helper()
	data, err := json.Marshal(envelope.Envelope{Version: envelope.Version, Kind: envelope.ExecuteStep, TaskID: taskID,
		RunID: "run1", StepKey: "s", Attempt: 1, Queue: "q", Band: "normal", Args: "a"})
	require.NoError(t, err)
	return string(data)
}

func signed(b string, attrs ...string) map[string]string {
	m := map[string]string{envelope.AttrSignature: envelope.Sign([]byte(testKey), []byte(b))}
	for i := 0; i+1 < len(attrs); i += 2 {
		m[attrs[i]] = attrs[i+1]
	}
	return m
}

func verify(b []byte, sig string) bool { return envelope.Verify([]byte(testKey), b, sig) }

func TestContainsOnlyAuthenticRedrivenEnvelopes(t *testing.T) {
	other := envelope.Sign([]byte(testKey), []byte("other bytes"))
	tests := []struct {
		name  string
		body  func(t *testing.T) string
		attrs func(body string) map[string]string
		want  bool
	}{
		{"signed envelope moved by SQS", func(t *testing.T) string { return body(t, "run1/s/1") },
			func(b string) map[string]string { return signed(b) }, true},
		{"the signed body names the task, not the attribute", func(t *testing.T) string { return body(t, "run1/s/1") },
			func(b string) map[string]string { return signed(b, envelope.AttrTaskID, "someone/else/1") }, true},
		{"unsigned", func(t *testing.T) string { return body(t, "run1/s/1") },
			func(string) map[string]string { return map[string]string{envelope.AttrTaskID: "run1/s/1"} }, false},
		{"signature of other bytes", func(t *testing.T) string { return body(t, "run1/s/1") },
			func(string) map[string]string { return map[string]string{envelope.AttrSignature: other} }, false},
		{"a worker's copy (the worker recorded it)", func(t *testing.T) string { return body(t, "run1/s/1") },
			func(b string) map[string]string { return signed(b, envelope.AttrDeadLetterReason, "unknown kind") }, false},
		{"signed but not an envelope", func(*testing.T) string { return `{"task_id": "run1/s/1"}` },
			func(b string) map[string]string { return signed(b) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeDLQ{hidden: map[string]bool{}}
			b := tt.body(t)
			q.add(b, tt.attrs(b))
			f := New(q, verify)
			got, err := f.Contains(context.Background(), "dlq", "run1/s/1")
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Empty(t, q.hidden, "a scan must make every message visible again")
		})
	}
}

func TestScansAreCachedByDepth(t *testing.T) {
	ctx := context.Background()
	q := &fakeDLQ{hidden: map[string]bool{}}
	now := time.Unix(1_000_000, 0)
	f := New(q, verify)
	f.now = func() time.Time { return now }

	found, err := f.Contains(ctx, "dlq", "run1/a/1")
	require.NoError(t, err)
	require.False(t, found)
	require.Equal(t, 0, q.receives, "an empty DLQ costs one count, no receive")

	for i := range 25 { // three receives' worth
		b := body(t, fmt.Sprintf("run1/s%d/1", i))
		q.add(b, signed(b))
	}
	found, err = f.Contains(ctx, "dlq", "run1/s24/1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 3, q.receives)
	require.Equal(t, 25, q.unhidden)
	require.Empty(t, q.hidden)

	for i := range 25 { // same depth: every task is answered from the scan
		found, err = f.Contains(ctx, "dlq", fmt.Sprintf("run1/s%d/1", i))
		require.NoError(t, err)
		require.True(t, found)
	}
	require.Equal(t, 3, q.receives)

	b := body(t, "run1/late/1") // a new dead letter changes the depth: rescan
	q.add(b, signed(b))
	found, err = f.Contains(ctx, "dlq", "run1/late/1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 6, q.receives)

	now = now.Add(RescanAfter) // unchanged depth, but old: rescan
	_, err = f.Contains(ctx, "dlq", "run1/late/1")
	require.NoError(t, err)
	require.Equal(t, 9, q.receives)
}

func TestScanMissingInFlightMessagesIsRetriedSooner(t *testing.T) {
	ctx := context.Background()
	q := &fakeDLQ{hidden: map[string]bool{}, inFlight: 1}
	b := body(t, "run1/s/1")
	q.add(b, signed(b))
	now := time.Unix(1_000_000, 0)
	f := New(q, verify)
	f.now = func() time.Time { return now }

	_, err := f.Contains(ctx, "dlq", "run1/s/1")
	require.NoError(t, err)
	require.Equal(t, 1, q.receives)
	now = now.Add(RetryAfter - time.Second)
	_, err = f.Contains(ctx, "dlq", "run1/s/1")
	require.NoError(t, err)
	require.Equal(t, 1, q.receives)
	now = now.Add(time.Second)
	_, err = f.Contains(ctx, "dlq", "run1/s/1")
	require.NoError(t, err)
	require.Equal(t, 2, q.receives, "a scan that missed in-flight messages is retried after RetryAfter")
}

func TestScanIsBounded(t *testing.T) {
	q := &fakeDLQ{hidden: map[string]bool{}}
	for i := range MaxScanMessages + 15 {
		b := body(t, fmt.Sprintf("run1/s%d/1", i))
		q.add(b, signed(b))
	}
	f := New(q, verify)
	_, err := f.Contains(context.Background(), "dlq", "run1/none/1")
	require.NoError(t, err)
	require.Equal(t, MaxScanMessages/sqsx.MaxBatch, q.receives)
	require.Empty(t, q.hidden)
}
