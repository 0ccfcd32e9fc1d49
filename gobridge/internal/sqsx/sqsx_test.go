package sqsx_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

func TestMain(m *testing.M) { mototest.Main(m) }

func TestDeleteBatchReportsEachEntry(t *testing.T) {
	const queue = "q"
	tests := []struct {
		name    string
		badURL  bool
		wantErr []string // per entry: "" for deleted, else a substring of its error
		left    int      // messages still on the queue
	}{
		{"one bad receipt fails alone", false, []string{"", "ReceiptHandleIsInvalid", "", ""}, 0},
		{"a failed call fails every entry", true, []string{"delete messages", "delete messages", "delete messages", "delete messages"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := mototest.Transport(t, nil, queue)
			ctx := context.Background()
			url, err := tr.Queues.URL(ctx, queue)
			require.NoError(t, err)
			for range 3 {
				_, err := tr.Queues.Send(ctx, url, "body", nil)
				require.NoError(t, err)
			}
			var got []string
			require.Eventually(t, func() bool {
				msgs, err := tr.Queues.Receive(ctx, url, sqsx.MaxBatch, 1)
				if err != nil {
					return false
				}
				for _, m := range msgs {
					got = append(got, aws.ToString(m.ReceiptHandle))
				}
				return len(got) == 3
			}, 30*time.Second, 10*time.Millisecond)

			target := url
			if tt.badURL {
				target += "-missing"
			}
			errs := tr.Queues.DeleteBatch(ctx, target, []string{got[0], "not-a-receipt", got[1], got[2]})
			require.Len(t, errs, len(tt.wantErr))
			for i, want := range tt.wantErr {
				if want == "" {
					require.NoError(t, errs[i], "entry %d", i)
				} else {
					require.ErrorContains(t, errs[i], want, "entry %d", i)
				}
			}
			counts, err := tr.Queues.Count(ctx, url)
			require.NoError(t, err)
			require.Equal(t, tt.left, counts.Visible+counts.InFlight)
		})
	}
}

func TestRedrivePolicyIsRead(t *testing.T) {
	tests := []struct {
		name, policy, dlq string
		max               int
		bad               bool
	}{
		{"number", `{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123:p-dagster-dlq","maxReceiveCount":3}`, "p-dagster-dlq", 3, false},
		{"string", `{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123:d","maxReceiveCount":"7"}`, "d", 7, false},
		{"no count", `{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123:d"}`, "", 0, true},
		{"no target", `{"maxReceiveCount":3}`, "", 0, true},
		{"not JSON", `maxReceiveCount=3`, "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dlq, max, err := sqsx.ParseRedrive(tt.policy)
			if tt.bad {
				require.ErrorContains(t, err, "unreadable redrive policy")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.dlq, dlq)
			require.Equal(t, tt.max, max)
		})
	}
}
