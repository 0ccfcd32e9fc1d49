// Package awsx builds the SQS and S3 clients from the shared configuration.
// Credentials always come from the standard AWS chain, never from config.
package awsx

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// Clients holds one SQS and one S3 client for a configuration.
type Clients struct {
	SQS *sqs.Client
	S3  *s3.Client
}

// New loads the AWS chain (environment, profile, instance role) and points the
// clients at cfg.EndpointURL when one is set.
func New(ctx context.Context, cfg config.Config) (Clients, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryer(newRetryer),
	}
	if cfg.RegionName != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.RegionName))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return Clients{}, fault.Wrap(fault.Config, err, "load AWS configuration")
	}
	if awsCfg.Region == "" {
		return Clients{}, fault.New(fault.Config,
			`key "region_name" is not set and the AWS environment names no region (AWS_REGION, AWS_DEFAULT_REGION or a profile)`)
	}
	endpoint := cfg.EndpointURL
	if endpoint == "" {
		endpoint = "AWS (" + awsCfg.Region + ")"
	}
	awsCfg.APIOptions = append(awsCfg.APIOptions,
		retryBudget(time.Duration(cfg.AWSRetryMaxSeconds)*time.Second, endpoint))
	sqsClient := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
		}
	})
	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Objects written without a checksum (emulators, older writers) would log a line per read.
		o.DisableLogOutputChecksumValidationSkipped = true
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
			o.UsePathStyle = true // emulators serve buckets by path, not by virtual host
		}
	})
	return Clients{SQS: sqsClient, S3: s3Client}, nil
}
