package config

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"s3_bucket": "b"}`))
	require.NoError(t, err)
	require.Equal(t, QueuePrefixDefault, c.QueuePrefix)
	require.Equal(t, DefaultQueueDefault, c.DefaultQueue)
	require.Equal(t, S3PrefixDefault, c.S3Prefix)
	require.Equal(t, PayloadThresholdBytesDefault, c.Source.PayloadThresholdBytes)
	require.Equal(t, MaxQueueWaitSecondsDefault, c.Source.MaxQueueWaitSeconds)
	require.False(t, c.CreateMissingQueues)
	require.Equal(t, AWSRetryMaxSecondsDefault, c.AWSRetryMaxSeconds)
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte(`{"s3_bucket": "b", "s3_prefix": "/x/y/", "queue_prefix": "p_", "default_queue": "gpu",
		"endpoint_url": "http://127.0.0.1:1", "create_missing_queues": true, "aws_retry_max_seconds": 5,
		"config_source": {"payload_threshold_bytes": 2048, "max_queue_wait_seconds": 5}}`))
	require.NoError(t, err)
	require.Equal(t, "x/y", c.S3Prefix)
	require.Equal(t, "p_", c.QueuePrefix)
	require.Equal(t, "gpu", c.DefaultQueue)
	require.True(t, c.CreateMissingQueues)
	require.Equal(t, 5, c.AWSRetryMaxSeconds)
	require.Equal(t, 2048, c.Source.PayloadThresholdBytes)
	require.Equal(t, 5, c.Source.MaxQueueWaitSeconds)
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // each must appear in the message
	}{
		{"not an object", `[1]`, []string{"not a JSON object"}},
		{"missing bucket", `{}`, []string{`"s3_bucket" is required`}},
		{"unknown key lists valid keys", `{"s3_bucket": "b", "queue_name": "x"}`,
			[]string{`unknown key "queue_name"`, "valid keys: region_name", "create_missing_queues"}},
		{"wrong type", `{"s3_bucket": "b", "create_missing_queues": "yes"}`,
			[]string{`key "create_missing_queues": expected a boolean`}},
		{"bad queue name", `{"s3_bucket": "b", "default_queue": "a b"}`, []string{`key "default_queue"`}},
		{"bad endpoint", `{"s3_bucket": "b", "endpoint_url": "localhost:5000"}`, []string{`key "endpoint_url"`}},
		{"unknown config_source key", `{"s3_bucket": "b", "config_source": {"payload_size": 1}}`,
			[]string{`unknown key "config_source.payload_size"`, "valid keys: payload_threshold_bytes, max_queue_wait_seconds"}},
		{"worker-side key in config_source", `{"s3_bucket": "b", "config_source": {"heartbeat_interval_seconds": 3}}`,
			[]string{`"config_source.heartbeat_interval_seconds" is a worker-side setting`, "worker start --heartbeat-interval"}},
		{"a celery-era key that means nothing here", `{"s3_bucket": "b", "config_source": {"visibility_timeout": 600}}`,
			[]string{`"config_source.visibility_timeout" is not a setting`, "lease"}},
		{"threshold range", `{"s3_bucket": "b", "config_source": {"payload_threshold_bytes": 10}}`,
			[]string{`"config_source.payload_threshold_bytes": 10 is outside`}},
		{"explicit zero is not the default", `{"s3_bucket": "b", "config_source": {"payload_threshold_bytes": 0}}`,
			[]string{`"config_source.payload_threshold_bytes": 0 is outside`}},
		{"retry limit zero", `{"s3_bucket": "b", "aws_retry_max_seconds": 0}`,
			[]string{`key "aws_retry_max_seconds": 0 is outside 1..100`}},
		{"retry limit above a bridge call", `{"s3_bucket": "b", "aws_retry_max_seconds": 101}`,
			[]string{`key "aws_retry_max_seconds": 101 is outside 1..100`}},
		{"empty s3 prefix", `{"s3_bucket": "b", "s3_prefix": "/"}`, []string{`key "s3_prefix" must not be empty`}},
		{"config_source type", `{"s3_bucket": "b", "config_source": {"max_queue_wait_seconds": "1h"}}`,
			[]string{`"config_source.max_queue_wait_seconds": expected an integer`}},
		{"several problems reported together", `{"bogus": 1, "s3_bucket": ""}`,
			[]string{`unknown key "bogus"`, `"s3_bucket" is required`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.input))
			require.Error(t, err)
			require.Equal(t, fault.Config, fault.CodeOf(err))
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestValidateQueueName(t *testing.T) {
	require.NoError(t, ValidateQueueName("gpu-1_x"))
	require.Error(t, ValidateQueueName(""))
	require.Error(t, ValidateQueueName("a.b"))
}
