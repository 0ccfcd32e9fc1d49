package awsx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
)

// closedPort is a loopback port nobody listens on: connections are refused.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func clients(t *testing.T, addr string, retrySeconds int) Clients {
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	cfg := config.Config{S3Bucket: "b", RegionName: "us-east-1", EndpointURL: "http://" + addr,
		AWSRetryMaxSeconds: retrySeconds}.WithDefaults()
	c, err := New(context.Background(), cfg)
	require.NoError(t, err)
	return c
}

func TestCallFailsPastTheRetryLimitNamingEndpointAndLimit(t *testing.T) {
	addr := closedPort(t)
	c := clients(t, addr, 2)
	start := time.Now()
	_, err := c.S3.HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String("b")})
	elapsed := time.Since(start)
	require.Error(t, err)
	var budget *RetryBudgetError
	require.True(t, errors.As(err, &budget), err)
	require.GreaterOrEqual(t, elapsed, 2*time.Second)
	require.Greater(t, budget.Attempts, 2, "retried with backoff before giving up")
	require.Contains(t, err.Error(), "http://"+addr)
	require.Contains(t, err.Error(), "aws_retry_max_seconds=2")
	require.Contains(t, err.Error(), "connection refused")
}

func TestCallRetriesThroughAnOutageShorterThanTheLimit(t *testing.T) {
	addr := closedPort(t)
	c := clients(t, addr, 30)
	up := make(chan *http.Server, 1)
	go func() {
		// The endpoint comes back after 3 s, on the same address.
		time.Sleep(3 * time.Second)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			up <- nil
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ReadHeaderTimeout: time.Second}
		up <- srv
		_ = srv.Serve(l)
	}()
	start := time.Now()
	_, err := c.S3.HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String("b")})
	srv := <-up
	require.NotNil(t, srv, "could not listen again on %s", addr)
	defer srv.Close()
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 3*time.Second)
}

func TestCanceledContextEndsRetries(t *testing.T) {
	c := clients(t, closedPort(t), 60)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.S3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("b")})
	require.Error(t, err)
	require.Less(t, time.Since(start), 10*time.Second)
}
