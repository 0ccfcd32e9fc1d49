package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
)

// batchCall is one DeleteBatch call, or the deletes a test makes on one queue.
type batchCall struct {
	url      string
	receipts []string
}

func receipts(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

func TestDeleterBatchesDeletesDueTogether(t *testing.T) {
	const never = time.Hour // only a full batch or close sends
	tests := []struct {
		name    string
		window  time.Duration
		deletes []batchCall // made in this order
		early   []batchCall // calls made before close, in order
		atClose []batchCall // calls made by close, in any order
	}{
		{"a burst on one queue is one call", never,
			[]batchCall{{"a", receipts("a", 4)}},
			nil,
			[]batchCall{{"a", receipts("a", 4)}}},
		{"each queue has its own batch", never,
			[]batchCall{{"a", []string{"a1"}}, {"b", []string{"b1"}}, {"a", []string{"a2"}}, {"b", []string{"b2"}}, {"a", []string{"a3"}}},
			nil,
			[]batchCall{{"a", []string{"a1", "a2", "a3"}}, {"b", []string{"b1", "b2"}}}},
		{"a full batch goes at once", never,
			[]batchCall{{"a", receipts("a", 12)}},
			[]batchCall{{"a", receipts("a", 12)[:10]}},
			[]batchCall{{"a", []string{"a11", "a12"}}}},
		{"a lone delete goes once the window ends", 10 * time.Millisecond,
			[]batchCall{{"a", []string{"a1"}}},
			[]batchCall{{"a", []string{"a1"}}},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := make(chan batchCall, 10)
			d := startDeleter(func(_ context.Context, url string, receipts []string) []error {
				calls <- batchCall{url, receipts}
				return make([]error, len(receipts))
			}, tt.window)
			for _, del := range tt.deletes {
				for _, r := range del.receipts {
					d.delete(slog.New(slog.DiscardHandler), del.url, r)
				}
			}
			for _, want := range tt.early {
				select {
				case got := <-calls:
					require.Equal(t, want, got)
				case <-time.After(deadline):
					require.Fail(t, "no batch call before close", "want %v", want)
				}
			}
			d.close()
			close(calls)
			var got []batchCall
			for c := range calls {
				got = append(got, c)
			}
			require.ElementsMatch(t, tt.atClose, got)
		})
	}
}

func TestDeleterLogsEachFailedDelete(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	var sent []string // written by the call, read once close has waited for it
	d := startDeleter(func(_ context.Context, _ string, receipts []string) []error {
		sent = receipts
		return []error{nil, errors.New("receipt handle expired"), nil}
	}, time.Hour)
	for i := range 3 {
		d.delete(log.With("task_id", fmt.Sprintf("t%d", i)), "a", fmt.Sprintf("r%d", i))
	}
	d.close()
	require.Equal(t, []string{"r0", "r1", "r2"}, sent)
	require.Equal(t, 1, strings.Count(logs.String(), "could not delete message"), logs.String())
	require.Contains(t, logs.String(), "task_id=t1")
	require.Contains(t, logs.String(), "receipt handle expired")
}

// A worker with several slots taking a burst: every task runs once and
// every message is deleted by the time the worker has stopped.
func TestWorkerBurstRunsEachTaskOnceAndEmptiesQueue(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	const burst = 24
	var ids, want []string
	for i := range burst {
		res := submitStep(t, tr, fmt.Sprintf("op_%02d", i), "args")
		ids = append(ids, res.TaskID)
		want = append(want, strings.ReplaceAll(res.TaskID, "/", "_"))
	}
	w := startWorker(t, tr, child, Options{Concurrency: 4})
	for _, id := range ids {
		waitState(t, tr, id, store.Success)
	}
	w.Stop(true)
	require.True(t, w.Wait(deadline))

	require.ElementsMatch(t, want, child.runs(t), "every task runs once")
	require.Equal(t, int64(burst), w.Summary().TasksRun)
	n, err := queued(context.Background(), tr, testQueue)
	require.NoError(t, err)
	require.Zero(t, n, "a stopped worker has deleted every message it took")
}
