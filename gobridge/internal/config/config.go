// Package config parses and validates the configuration shared by the
// executor, the run launcher and the worker. Python resolves {env: VAR}
// values and hands the result over as JSON; every key is checked here so
// that nothing is accepted and then ignored.
package config

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// Defaults of the shared keys.
const (
	QueuePrefixDefault           = "dagster-"
	DefaultQueueDefault          = "dagster"
	S3PrefixDefault              = "dagster-taskiq"
	PayloadThresholdBytesDefault = 192 * 1024
	PayloadThresholdBytesMax     = 1024*1024 - 16*1024 // SQS maximum minus room for the envelope
	MaxQueueWaitSecondsDefault   = 3600
	// AWSRetryMaxSecondsDefault rides out a short outage of SQS/S3 (a restart,
	// a network blip) without failing a submission, a renewal or a poll.
	AWSRetryMaxSecondsDefault = 60
	// AWSRetryMaxSecondsMax stays below the two minutes one bridge call may take.
	AWSRetryMaxSecondsMax = 100
)

// Config is the transport configuration common to every side.
type Config struct {
	// RegionName is the AWS region; empty means the AWS default chain decides.
	RegionName string `json:"region_name"`
	// EndpointURL points SQS and S3 at an emulator (moto, ElasticMQ); empty means AWS.
	EndpointURL string `json:"endpoint_url"`
	// QueuePrefix is prepended to logical queue names. Default "dagster-".
	QueuePrefix string `json:"queue_prefix"`
	// DefaultQueue receives tasks that no tag routes elsewhere. Default "dagster".
	DefaultQueue string `json:"default_queue"`
	// QueueURL, when set, sends every task to this one queue.
	QueueURL string `json:"queue_url"`
	// S3Bucket holds task records, claims and large payloads. Required.
	S3Bucket string `json:"s3_bucket"`
	// S3Prefix is the key prefix of everything written to S3. Default "dagster-taskiq".
	S3Prefix string `json:"s3_prefix"`
	// CreateMissingQueues creates unknown queues on first use instead of failing. Default false.
	CreateMissingQueues bool `json:"create_missing_queues"`
	// AWSRetryMaxSeconds is how long one SQS or S3 call keeps retrying
	// retryable failures (refused or reset connections, throttling, 5xx)
	// before its error reaches the caller (1..100). Default 60.
	AWSRetryMaxSeconds int `json:"aws_retry_max_seconds"`
	// Source holds the submit-side knobs of config_source.
	Source Source `json:"config_source"`
}

// Source holds the submit-side knobs accepted in config_source.
type Source struct {
	// PayloadThresholdBytes: larger Dagster args go to S3. Default 192 KiB.
	PayloadThresholdBytes int `json:"payload_threshold_bytes"`
	// MaxQueueWaitSeconds: how long a task may wait for a worker when no live
	// worker listens to its queue. Default 3600.
	MaxQueueWaitSeconds int `json:"max_queue_wait_seconds"`
}

var sharedKeys = []string{
	"region_name", "endpoint_url", "queue_prefix", "default_queue", "queue_url",
	"s3_bucket", "s3_prefix", "create_missing_queues", "aws_retry_max_seconds", "config_source",
}

var sourceKeys = []string{"payload_threshold_bytes", "max_queue_wait_seconds"}

// workerSideKeys maps knobs that belong to the worker to the option that sets them.
var workerSideKeys = map[string]string{
	"wait_time_seconds":          "worker start --poll-wait",
	"poll_wait_seconds":          "worker start --poll-wait",
	"heartbeat_interval_seconds": "worker start --heartbeat-interval",
	"anti_starvation_weight":     "worker start --anti-starvation-weight",
	"concurrency":                "worker start --concurrency",
	"run_concurrency":            "worker start --run-concurrency",
	"grace_period_seconds":       "worker start --grace-period",
}

// notSettings are keys that dagster-celery or the earlier dagster-taskiq had
// and that mean nothing here, with why.
var notSettings = map[string]string{
	"visibility_timeout": "a task's life is not bound by SQS visibility (workers hold a lease in the task record); " +
		"the queues' own VisibilityTimeout (120 s from `queue create`) only covers receive → claim → delete",
}

var queueNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Parse decodes JSON into a Config, applies defaults and validates it. Every
// problem is reported, each naming its key.
func Parse(data []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fault.Wrap(fault.Config, err, "configuration is not a JSON object")
	}
	var errs []error
	for _, key := range sortedKeys(raw) {
		if !slices.Contains(sharedKeys, key) {
			errs = append(errs, unknownKey("", key, sharedKeys))
		}
	}
	// Defaults first, then what was given: an explicit value, even 0 or "", is judged by validate.
	c := Config{}.WithDefaults()
	for _, key := range sharedKeys {
		v, ok := raw[key]
		if !ok || bytes.Equal(v, []byte("null")) {
			continue
		}
		if key == "config_source" {
			errs = append(errs, c.Source.decode(v))
			continue
		}
		if err := json.Unmarshal(v, c.field(key)); err != nil {
			errs = append(errs, fmt.Errorf("key %q: expected %s, got %s", key, kindOf(c.field(key)), v))
		}
	}
	c.S3Prefix = strings.Trim(c.S3Prefix, "/")
	errs = append(errs, c.validate())
	if err := errors.Join(errs...); err != nil {
		return Config{}, fault.Wrap(fault.Config, err, "invalid configuration")
	}
	return c, nil
}

func (c *Config) field(key string) any {
	switch key {
	case "region_name":
		return &c.RegionName
	case "endpoint_url":
		return &c.EndpointURL
	case "queue_prefix":
		return &c.QueuePrefix
	case "default_queue":
		return &c.DefaultQueue
	case "queue_url":
		return &c.QueueURL
	case "s3_bucket":
		return &c.S3Bucket
	case "s3_prefix":
		return &c.S3Prefix
	case "create_missing_queues":
		return &c.CreateMissingQueues
	case "aws_retry_max_seconds":
		return &c.AWSRetryMaxSeconds
	}
	panic("config: no field for key " + key)
}

func (s *Source) decode(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("key \"config_source\": expected an object, got %s", data)
	}
	var errs []error
	for _, key := range sortedKeys(raw) {
		v := raw[key]
		var target *int
		switch key {
		case "payload_threshold_bytes":
			target = &s.PayloadThresholdBytes
		case "max_queue_wait_seconds":
			target = &s.MaxQueueWaitSeconds
		default:
			if opt, ok := workerSideKeys[key]; ok {
				errs = append(errs, fmt.Errorf("key \"config_source.%s\" is a worker-side setting: set it with `%s`", key, opt))
			} else if why, ok := notSettings[key]; ok {
				errs = append(errs, fmt.Errorf("key \"config_source.%s\" is not a setting: %s", key, why))
			} else {
				errs = append(errs, unknownKey("config_source.", key, sourceKeys))
			}
			continue
		}
		if err := json.Unmarshal(v, target); err != nil {
			errs = append(errs, fmt.Errorf("key \"config_source.%s\": expected an integer, got %s", key, v))
		}
	}
	return errors.Join(errs...)
}

// WithDefaults fills unset keys with their defaults.
func (c Config) WithDefaults() Config {
	c.QueuePrefix = cmp.Or(c.QueuePrefix, QueuePrefixDefault)
	c.DefaultQueue = cmp.Or(c.DefaultQueue, DefaultQueueDefault)
	c.S3Prefix = strings.Trim(cmp.Or(c.S3Prefix, S3PrefixDefault), "/")
	if c.Source.PayloadThresholdBytes == 0 {
		c.Source.PayloadThresholdBytes = PayloadThresholdBytesDefault
	}
	if c.AWSRetryMaxSeconds == 0 {
		c.AWSRetryMaxSeconds = AWSRetryMaxSecondsDefault
	}
	if c.Source.MaxQueueWaitSeconds == 0 {
		c.Source.MaxQueueWaitSeconds = MaxQueueWaitSecondsDefault
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.S3Bucket == "" {
		errs = append(errs, errors.New(`key "s3_bucket" is required: the bucket that holds task records and large payloads`))
	}
	if c.S3Prefix == "" {
		errs = append(errs, errors.New(`key "s3_prefix" must not be empty: everything is written under it`))
	}
	if c.QueuePrefix != "" && !queueNameRe.MatchString(c.QueuePrefix) {
		errs = append(errs, fmt.Errorf("key \"queue_prefix\": %q may hold only letters, digits, '-' and '_'", c.QueuePrefix))
	}
	if err := ValidateQueueName(c.DefaultQueue); err != nil {
		errs = append(errs, fmt.Errorf("key \"default_queue\": %w", err))
	}
	if c.EndpointURL != "" && !strings.HasPrefix(c.EndpointURL, "http://") && !strings.HasPrefix(c.EndpointURL, "https://") {
		errs = append(errs, fmt.Errorf("key \"endpoint_url\": %q must start with http:// or https://", c.EndpointURL))
	}
	if c.QueueURL != "" && !strings.HasPrefix(c.QueueURL, "http://") && !strings.HasPrefix(c.QueueURL, "https://") {
		errs = append(errs, fmt.Errorf("key \"queue_url\": %q must be a queue URL (http:// or https://)", c.QueueURL))
	}
	if t := c.Source.PayloadThresholdBytes; t < 1024 || t > PayloadThresholdBytesMax {
		errs = append(errs, fmt.Errorf("key \"config_source.payload_threshold_bytes\": %d is outside 1024..%d", t, PayloadThresholdBytesMax))
	}
	if r := c.AWSRetryMaxSeconds; r < 1 || r > AWSRetryMaxSecondsMax {
		errs = append(errs, fmt.Errorf("key \"aws_retry_max_seconds\": %d is outside 1..%d", r, AWSRetryMaxSecondsMax))
	}
	if w := c.Source.MaxQueueWaitSeconds; w < 1 {
		errs = append(errs, fmt.Errorf("key \"config_source.max_queue_wait_seconds\": %d must be at least 1", w))
	}
	return errors.Join(errs...)
}

// reservedSuffixes name the band and dead-letter queues derived from a
// logical queue; a logical queue ending in one would collide with them.
var reservedSuffixes = []string{"-high", "-low", "-dlq", "-runs"}

// ValidateQueueName checks a logical queue name (as used in tags and -q).
func ValidateQueueName(name string) error {
	if name == "" || len(name) > 64 || !queueNameRe.MatchString(name) {
		return fmt.Errorf("queue name %q must be 1 to 64 letters, digits, '-' or '_'", name)
	}
	for _, suffix := range reservedSuffixes {
		if strings.HasSuffix(name, suffix) {
			return fmt.Errorf("queue name %q must not end in %q: that names one of a queue's own SQS queues", name, suffix)
		}
	}
	return nil
}

func unknownKey(prefix, key string, valid []string) error {
	return fmt.Errorf("unknown key %q; valid keys: %s", prefix+key, strings.Join(valid, ", "))
}

func kindOf(target any) string {
	switch target.(type) {
	case *bool:
		return "a boolean"
	case *int:
		return "an integer"
	default:
		return "a string"
	}
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
