// Package store keeps task state in S3: task records, claims, cancel markers
// and large payloads, all under one key prefix.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// State is a task's lifecycle state.
type State string

const (
	Queued   State = "QUEUED"
	Running  State = "RUNNING"
	Success  State = "SUCCESS"
	Failed   State = "FAILED"
	Canceled State = "CANCELED"
)

// Finished reports whether the state is final.
func (s State) Finished() bool { return s == Success || s == Failed || s == Canceled }

// Record is a task's state as stored in <prefix>/tasks/<task_id>.json.
type Record struct {
	TaskID     string     `json:"task_id"`
	Kind       string     `json:"kind"`
	RunID      string     `json:"run_id"`
	StepKey    string     `json:"step_key,omitempty"`
	Attempt    int        `json:"attempt"`
	Queue      string     `json:"queue"`
	Band       string     `json:"band"`
	State      State      `json:"state"`
	QueuedAt   time.Time  `json:"queued_at"`
	WorkerID   string     `json:"worker_id,omitempty"`
	Host       string     `json:"host,omitempty"`
	PID        int        `json:"pid,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	// BodyDigest is the SHA-256 of the submitted message body (QUEUED
	// records): it tells a mis-signed genuine message from a forged one.
	BodyDigest string `json:"body_digest,omitempty"`
}

// Claim is the body of a claim object: who took the task, and when.
type Claim struct {
	TaskID    string    `json:"task_id"`
	WorkerID  string    `json:"worker_id"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// Store reads and writes task state in one bucket under one prefix.
type Store struct {
	api    *s3.Client
	bucket string
	prefix string
}

// New returns a Store.
func New(api *s3.Client, bucket, prefix string) *Store {
	return &Store{api: api, bucket: bucket, prefix: prefix}
}

// API is the S3 client, for tests and tools that need a call the store does not make.
func (s *Store) API() *s3.Client { return s.api }

// Bucket names the bucket.
func (s *Store) Bucket() string { return s.bucket }

func (s *Store) taskKey(id string) string   { return s.prefix + "/tasks/" + id + ".json" }
func (s *Store) claimKey(id string) string  { return s.prefix + "/claims/" + id }
func (s *Store) cancelKey(id string) string { return s.prefix + "/cancels/" + id }

// PayloadKey is where the large args of a task are kept.
func (s *Store) PayloadKey(id string) string { return s.prefix + "/payloads/" + id }

// PutTask writes a task record.
func (s *Store) PutTask(ctx context.Context, r Record) error {
	return s.putJSON(ctx, s.taskKey(r.TaskID), r)
}

// GetTask reads a task record; a missing record is a not_found error.
func (s *Store) GetTask(ctx context.Context, id string) (Record, error) {
	return getJSON[Record](ctx, s, s.taskKey(id))
}

// getJSON reads and decodes one object; a missing object is a not_found error.
func getJSON[T any](ctx context.Context, s *Store, key string) (T, error) {
	var v T
	data, err := s.Get(ctx, key)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fault.Wrap(fault.Payload, err, "s3://%s/%s is corrupt", s.bucket, key)
	}
	return v, nil
}

// listJSON reads every object under prefix. An object removed between the
// listing and its read is skipped (a worker that exited, say).
func listJSON[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
	var out []T
	p := s3.NewListObjectsV2Paginator(s.api, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fault.Wrap(fault.Transport, err, "list s3://%s/%s", s.bucket, prefix)
		}
		for _, obj := range page.Contents {
			v, err := getJSON[T](ctx, s, aws.ToString(obj.Key))
			if fault.CodeOf(err) == fault.NotFound {
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// Claim creates the claim object for a task only if none exists. It returns
// false, nil when another worker already holds the claim.
func (s *Store) Claim(ctx context.Context, c Claim) (bool, error) {
	body, _ := json.Marshal(c)
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(s.claimKey(c.TaskID)),
		Body: bytes.NewReader(body), IfNoneMatch: aws.String("*"),
	})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed" {
		return false, nil
	}
	if err != nil {
		return false, fault.Wrap(fault.Transport, err, "claim task %s", c.TaskID)
	}
	return true, nil
}

// MarkCanceled writes the cancel marker of a task.
func (s *Store) MarkCanceled(ctx context.Context, id string) error {
	return s.Put(ctx, s.cancelKey(id), []byte(time.Now().UTC().Format(time.RFC3339Nano)))
}

// IsCanceled reports whether a cancel marker exists for the task.
func (s *Store) IsCanceled(ctx context.Context, id string) (bool, error) {
	return s.exists(ctx, s.cancelKey(id))
}

// IsClaimed reports whether a worker has claimed the task.
func (s *Store) IsClaimed(ctx context.Context, id string) (bool, error) {
	return s.exists(ctx, s.claimKey(id))
}

// Put writes an object.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err := s.missingBucket(err); err != nil {
		return err
	}
	return fault.Wrap(fault.Transport, err, "write s3://%s/%s", s.bucket, key)
}

// missingBucket turns S3's NoSuchBucket into an error that says what to do.
func (s *Store) missingBucket(err error) error {
	var nb *types.NoSuchBucket
	var ae smithy.APIError
	if errors.As(err, &nb) || (errors.As(err, &ae) && ae.ErrorCode() == "NoSuchBucket") {
		return fault.New(fault.NotFound, "bucket %q (s3_bucket) does not exist: create it, or run `dagster-taskiq-go queue create`, which does", s.bucket)
	}
	return nil
}

// Get reads an object; a missing object is a not_found error.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	var missing *types.NoSuchKey
	if errors.As(err, &missing) {
		return nil, fault.New(fault.NotFound, "s3://%s/%s does not exist", s.bucket, key)
	}
	if err != nil {
		return nil, fault.Wrap(fault.Transport, err, "read s3://%s/%s", s.bucket, key)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	return data, fault.Wrap(fault.Transport, err, "read s3://%s/%s", s.bucket, key)
}

// Delete removes an object (a missing object is not an error).
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	return fault.Wrap(fault.Transport, err, "delete s3://%s/%s", s.bucket, key)
}

// EnsureBucket creates the bucket if it does not exist yet.
func (s *Store) EnsureBucket(ctx context.Context) error {
	if _, err := s.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}); err == nil {
		return nil
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(s.bucket)}
	// us-east-1 is the one region that refuses an explicit location constraint.
	if region := s.api.Options().Region; region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
	}
	_, err := s.api.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	if errors.As(err, &owned) {
		return nil
	}
	return fault.Wrap(fault.Transport, err, "create bucket %q", s.bucket)
}

func (s *Store) putJSON(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fault.Wrap(fault.Internal, err, "encode %s", key)
	}
	return s.Put(ctx, key, data)
}

func (s *Store) exists(ctx context.Context, key string) (bool, error) {
	_, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	var nf *types.NotFound
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, fault.Wrap(fault.Transport, err, "head s3://%s/%s", s.bucket, key)
	}
	return true, nil
}

// WorkerRecord is a worker's registration in <prefix>/workers/<id>.json,
// rewritten every heartbeat and removed on clean exit.
type WorkerRecord struct {
	WorkerID       string    `json:"worker_id"`
	Host           string    `json:"host"`
	PID            int       `json:"pid"`
	Version        string    `json:"version"`
	Queues         []string  `json:"queues"`
	Slots          int       `json:"slots"`
	RunSlots       int       `json:"run_slots"`
	Running        []string  `json:"running"` // task ids
	StartedAt      time.Time `json:"started_at"`
	HeartbeatAt    time.Time `json:"heartbeat_at"`
	HeartbeatEvery int       `json:"heartbeat_seconds"`
	Stopping       bool      `json:"stopping"`
}

// Live reports whether the worker has heartbeated within three intervals.
func (w WorkerRecord) Live(now time.Time) bool {
	return now.Sub(w.HeartbeatAt) <= 3*time.Duration(w.HeartbeatEvery)*time.Second
}

func (s *Store) workerKey(id string) string { return s.prefix + "/workers/" + id + ".json" }

// PutWorker writes a worker record.
func (s *Store) PutWorker(ctx context.Context, w WorkerRecord) error {
	return s.putJSON(ctx, s.workerKey(w.WorkerID), w)
}

// DeleteWorker removes a worker record.
func (s *Store) DeleteWorker(ctx context.Context, id string) error {
	return s.Delete(ctx, s.workerKey(id))
}

// ListWorkers reads every worker record, live or stale.
func (s *Store) ListWorkers(ctx context.Context) ([]WorkerRecord, error) {
	return listJSON[WorkerRecord](ctx, s, s.prefix+"/workers/")
}

// GetClaim reads a task's claim; a missing claim is a not_found error.
func (s *Store) GetClaim(ctx context.Context, id string) (Claim, error) {
	return getJSON[Claim](ctx, s, s.claimKey(id))
}

// ListRunTasks reads the records of every task of a run.
func (s *Store) ListRunTasks(ctx context.Context, runID string) ([]Record, error) {
	return listJSON[Record](ctx, s, s.prefix+"/tasks/"+runID+"/")
}
