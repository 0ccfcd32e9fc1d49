package store_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
)

func TestMain(m *testing.M) { mototest.Main(m) }

func TestEnsureBucketCreatesItInTheConfiguredRegion(t *testing.T) {
	for _, region := range []string{"us-east-1", "eu-west-1"} {
		t.Run(region, func(t *testing.T) {
			// mototest.Transport creates the bucket through EnsureBucket.
			tr := mototest.Transport(t, func(c *config.Config) { c.RegionName = region })
			api := tr.Store.API()
			loc, err := api.GetBucketLocation(context.Background(), &s3.GetBucketLocationInput{Bucket: aws.String(tr.Store.Bucket())})
			require.NoError(t, err)
			want := region
			if region == "us-east-1" {
				want = "" // S3 reports us-east-1 as no constraint
			}
			require.Equal(t, want, string(loc.LocationConstraint))
			require.NoError(t, tr.Store.EnsureBucket(context.Background()), "a second call finds the bucket")
		})
	}
}
