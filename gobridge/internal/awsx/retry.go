package awsx

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
)

// MaxBackoff caps the pause between two tries of one call, so a call notices
// a recovered endpoint within this long.
const MaxBackoff = 2 * time.Second

// newRetryer retries every retryable failure with capped exponential backoff
// until the call's time budget (see retryBudget) runs out. It has no retry
// quota: the SDK's default token bucket runs dry during an outage and then
// fails every call at once, however short the outage.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = math.MaxInt32 // bounded by time, not by count
		o.MaxBackoff = MaxBackoff
		o.RateLimiter = ratelimit.None
	})
}

// RetryBudgetError ends a call whose retries outlasted aws_retry_max_seconds.
// It names the endpoint, the limit and the last failure.
type RetryBudgetError struct {
	Service, Operation, Endpoint string
	Limit, Elapsed               time.Duration
	Attempts                     int
	Last                         error
}

func (e *RetryBudgetError) Error() string {
	return fmt.Sprintf("%s %s to %s failed for %s over %d attempts, past aws_retry_max_seconds=%d: %v",
		e.Service, e.Operation, e.Endpoint, e.Elapsed.Round(100*time.Millisecond), e.Attempts,
		int(e.Limit.Seconds()), e.Last)
}

// Unwrap keeps the last failure reachable for errors.As (HTTP status, API error codes).
func (e *RetryBudgetError) Unwrap() error { return e.Last }

// RetryableError tells the SDK's retry loop to stop, although the wrapped
// failure (a refused connection) is retryable on its own.
func (e *RetryBudgetError) RetryableError() bool { return false }

type budgetKey struct{}

type budgetState struct {
	start    time.Time
	attempts int
	last     error
}

// retryBudget bounds the time one call spends retrying: a middleware before
// the retry loop notes when the call began; one inside it refuses a further
// try once limit has passed, returning the last failure wrapped in a
// RetryBudgetError. The first try always goes out, however long it takes
// (a long poll takes 20 s).
func retryBudget(limit time.Duration, endpoint string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		start := middleware.InitializeMiddlewareFunc("RetryBudgetStart", func(
			ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler,
		) (middleware.InitializeOutput, middleware.Metadata, error) {
			ctx = middleware.WithStackValue(ctx, budgetKey{}, &budgetState{start: time.Now()})
			return next.HandleInitialize(ctx, in)
		})
		if err := stack.Initialize.Add(start, middleware.Before); err != nil {
			return err
		}
		check := middleware.FinalizeMiddlewareFunc("RetryBudget", func(
			ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler,
		) (middleware.FinalizeOutput, middleware.Metadata, error) {
			st, _ := middleware.GetStackValue(ctx, budgetKey{}).(*budgetState)
			if st == nil {
				return next.HandleFinalize(ctx, in)
			}
			if elapsed := time.Since(st.start); st.attempts > 0 && elapsed >= limit {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, &RetryBudgetError{
					Service: awsmiddleware.GetServiceID(ctx), Operation: awsmiddleware.GetOperationName(ctx),
					Endpoint: endpoint, Limit: limit, Elapsed: elapsed, Attempts: st.attempts, Last: st.last,
				}
			}
			out, md, err := next.HandleFinalize(ctx, in)
			st.attempts++
			st.last = err
			return out, md, err
		})
		return stack.Finalize.Insert(check, "Retry", middleware.After)
	}
}
