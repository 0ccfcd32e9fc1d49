// Package sqsx is the SQS side of the transport: logical queue names to URLs,
// queue creation with a dead-letter queue, and the send/receive/delete calls.
package sqsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
)

// Queue attributes written by Create.
const (
	// VisibilityTimeoutDefault only covers receive→claim→delete: tasks are
	// deleted before they run, so it does not bound a task's duration.
	VisibilityTimeoutDefault = 120
	// MaxReceiveCountDefault is the redrive backstop; workers dead-letter
	// poison messages themselves long before it.
	MaxReceiveCountDefault = 10
	dlqSuffix              = "-dlq"
	runSuffix              = "-runs"
)

// Client resolves and caches queue URLs and wraps the SQS calls.
type Client struct {
	api    *sqs.Client
	prefix string
	create bool

	mu       sync.Mutex
	resolved map[string]*Queue
}

// New returns a Client. prefix is prepended to logical names; create makes
// Resolve create missing queues instead of failing.
func New(api *sqs.Client, prefix string, create bool) *Client {
	return &Client{api: api, prefix: prefix, create: create, resolved: map[string]*Queue{}}
}

// PhysicalName is the SQS name of a logical queue.
func (c *Client) PhysicalName(queue string) string { return c.prefix + queue }

// URL is the normal band's URL of a logical queue.
func (c *Client) URL(ctx context.Context, queue string) (string, error) {
	q, err := c.Resolve(ctx, queue)
	if err != nil {
		return "", err
	}
	return q.URLs[routing.BandNormal], nil
}

// DLQURL is the dead-letter queue's URL of a logical queue.
func (c *Client) DLQURL(ctx context.Context, queue string) (string, error) {
	q, err := c.Resolve(ctx, queue)
	if err != nil {
		return "", err
	}
	if q.DLQ == "" {
		return "", fault.New(fault.NotFound, "queue %q has no dead-letter queue", queue)
	}
	return q.DLQ, nil
}

// CreateBands makes a logical queue: its dead-letter queue, one SQS queue per
// band (each redriving to the DLQ), and the layout tag. It is idempotent, and
// refuses to change the layout of an existing queue: submitters and workers
// that read the old layout would strand messages in bands nobody polls.
func (c *Client) CreateBands(ctx context.Context, queue string, layout routing.Layout) error {
	if base, err := c.lookup(ctx, c.PhysicalName(queue)); err == nil {
		tags, err := c.api.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: aws.String(base)})
		if err != nil {
			return fault.Wrap(fault.Transport, err, "read band layout of queue %q", queue)
		}
		if have, ok := tags.Tags[LayoutTag]; ok && have != layout.String() {
			return fault.New(fault.Config, "queue %q already exists with bands %q; it cannot be changed to %q (delete the queue first)",
				queue, have, layout.String())
		}
	}
	dlqName := c.PhysicalName(queue) + dlqSuffix
	dlq, err := c.api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(dlqName)})
	if err != nil {
		return fault.Wrap(fault.Transport, err, "create dead-letter queue %q", dlqName)
	}
	attrs, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return fault.Wrap(fault.Transport, err, "read ARN of %q", dlqName)
	}
	redrive := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":%d}`,
		attrs.Attributes[string(types.QueueAttributeNameQueueArn)], MaxReceiveCountDefault)
	for _, band := range layout {
		for _, runs := range []bool{true, false} {
			if band == routing.BandNormal && !runs {
				continue
			}
			if err := c.createBand(ctx, c.BandName(queue, band, runs), redrive, false, layout); err != nil {
				return err
			}
		}
	}
	// The tagged queue last: resolving finds every band queue once the tag exists.
	if err := c.createBand(ctx, c.PhysicalName(queue), redrive, true, layout); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.resolved, queue)
	c.mu.Unlock()
	return nil
}

func (c *Client) createBand(ctx context.Context, name, redrive string, tagged bool, layout routing.Layout) error {
	in := &sqs.CreateQueueInput{
		QueueName: aws.String(name),
		// ReceiveMessageWaitTimeSeconds stays 0: see CheckShortPolls.
		Attributes: map[string]string{
			string(types.QueueAttributeNameVisibilityTimeout): strconv.Itoa(VisibilityTimeoutDefault),
			string(types.QueueAttributeNameRedrivePolicy):     redrive,
		},
	}
	if tagged {
		in.Tags = map[string]string{LayoutTag: layout.String()}
	}
	_, err := c.api.CreateQueue(ctx, in)
	return fault.Wrap(fault.Transport, err, "create queue %q", name)
}

// Send sends one message body with string attributes and returns its id.
func (c *Client) Send(ctx context.Context, url, body string, attrs map[string]string) (string, error) {
	in := &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body),
		MessageAttributes: map[string]types.MessageAttributeValue{}}
	for k, v := range attrs {
		in.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	out, err := c.api.SendMessage(ctx, in)
	if err != nil {
		return "", fault.Wrap(fault.Transport, err, "send to %s", url)
	}
	return aws.ToString(out.MessageId), nil
}

// Receive waits up to waitSeconds for at most max messages.
func (c *Client) Receive(ctx context.Context, url string, max, waitSeconds int) ([]types.Message, error) {
	out, err := c.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(url),
		MaxNumberOfMessages:         int32(max),
		WaitTimeSeconds:             int32(waitSeconds),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	})
	if err != nil {
		return nil, fault.Wrap(fault.Transport, err, "receive from %s", url)
	}
	return out.Messages, nil
}

// ReceiveHidden receives up to max messages and hides them for
// visibilitySeconds (instead of the queue's visibility timeout), waiting up to
// waitSeconds for the first. Readers that only look use it with Unhide.
// visibilitySeconds must be at least 1: the SDK leaves a 0 out of the request.
func (c *Client) ReceiveHidden(ctx context.Context, url string, max, waitSeconds, visibilitySeconds int) ([]types.Message, error) {
	out, err := c.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(url),
		MaxNumberOfMessages:         int32(max),
		WaitTimeSeconds:             int32(waitSeconds),
		VisibilityTimeout:           int32(visibilitySeconds),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	})
	if err != nil {
		return nil, fault.Wrap(fault.Transport, err, "receive from %s", url)
	}
	return out.Messages, nil
}

// Unhide makes up to MaxBatch received messages of one queue visible again
// at once, in one call; it returns the first error.
func (c *Client) Unhide(ctx context.Context, url string, receipts []string) error {
	entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(receipts))
	for i, r := range receipts {
		entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(r)}
	}
	out, err := c.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url), Entries: entries})
	if err != nil {
		return fault.Wrap(fault.Transport, err, "release messages on %s", url)
	}
	if len(out.Failed) > 0 {
		return fault.New(fault.Transport, "release messages on %s: %d failed: %s", url, len(out.Failed), aws.ToString(out.Failed[0].Message))
	}
	return nil
}

// Delete removes a received message.
func (c *Client) Delete(ctx context.Context, url, receipt string) error {
	_, err := c.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: aws.String(receipt)})
	return fault.Wrap(fault.Transport, err, "delete message from %s", url)
}

// MaxBatch is the most entries SQS takes in one batch call.
const MaxBatch = 10

// DeleteBatch removes up to MaxBatch received messages of one queue in one
// call. errs[i] is nil when receipts[i] was deleted; when the call itself
// fails, every entry carries its error.
func (c *Client) DeleteBatch(ctx context.Context, url string, receipts []string) []error {
	entries := make([]types.DeleteMessageBatchRequestEntry, len(receipts))
	for i, r := range receipts {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(r)}
	}
	errs := make([]error, len(receipts))
	out, err := c.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
	if err != nil {
		err = fault.Wrap(fault.Transport, err, "delete messages from %s", url)
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for _, f := range out.Failed {
		if i := slices.IndexFunc(entries, func(e types.DeleteMessageBatchRequestEntry) bool {
			return aws.ToString(e.Id) == aws.ToString(f.Id)
		}); i >= 0 {
			errs[i] = fault.New(fault.Transport, "delete message from %s: %s: %s", url, aws.ToString(f.Code), aws.ToString(f.Message))
		}
	}
	return errs
}

// Release makes a received message visible again at once.
func (c *Client) Release(ctx context.Context, url, receipt string) error {
	_, err := c.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(url), ReceiptHandle: aws.String(receipt), VisibilityTimeout: 0})
	return fault.Wrap(fault.Transport, err, "release message on %s", url)
}

// Attr returns a string message attribute, or "".
func Attr(m types.Message, name string) string {
	if v, ok := m.MessageAttributes[name]; ok {
		return aws.ToString(v.StringValue)
	}
	return ""
}

// LayoutTag is the queue tag, on a logical queue's normal-band queue, that
// records its band layout. Submitters and workers both read it, so they agree
// on which physical queues exist.
const LayoutTag = "dagster-taskiq:bands"

// Queue is a resolved logical queue: its band layout and the URL of each
// band, for steps and, separately, for whole runs: workers keep separate slot
// pools for the two, and each pool receives only from its own queues, so a
// worker never receives a task it has no slot for.
type Queue struct {
	Name    string            `json:"name"`
	Layout  routing.Layout    `json:"bands"`
	URLs    map[string]string `json:"urls"`     // band → URL, step tasks
	RunURLs map[string]string `json:"run_urls"` // band → URL, run tasks; nil for a queue_url override
	DLQ     string            `json:"dlq"`      // URL of the dead-letter queue; "" when the queue has none
}

// BandName is the SQS name of one band of a logical queue's step or run
// family: the normal step band keeps the plain name "<prefix><queue>".
func (c *Client) BandName(queue, band string, runs bool) string {
	name := c.PhysicalName(queue)
	if runs {
		name += runSuffix
	}
	if band != routing.BandNormal {
		name += "-" + band
	}
	return name
}

// Resolve looks a logical queue up (cached): its layout and band URLs. A
// missing queue is created when the client may create queues.
func (c *Client) Resolve(ctx context.Context, queue string) (*Queue, error) {
	c.mu.Lock()
	q, ok := c.resolved[queue]
	c.mu.Unlock()
	if ok {
		return q, nil
	}
	q, err := c.resolve(ctx, queue)
	var fe *fault.Error
	if errors.As(err, &fe) && fe.Code == fault.NotFound && c.create {
		if err = c.CreateBands(ctx, queue, routing.DefaultLayout); err == nil {
			q, err = c.resolve(ctx, queue)
		}
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.resolved[queue] = q
	c.mu.Unlock()
	return q, nil
}

func (c *Client) resolve(ctx context.Context, queue string) (*Queue, error) {
	base, err := c.lookup(ctx, c.PhysicalName(queue))
	if err != nil {
		return nil, fault.Wrap(fault.CodeOf(err), err, "queue %q", queue)
	}
	tags, err := c.api.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: aws.String(base)})
	if err != nil {
		return nil, fault.Wrap(fault.Transport, err, "read band layout of queue %q", queue)
	}
	layout := routing.Layout{routing.BandNormal} // a queue made by hand has one band
	if s, ok := tags.Tags[LayoutTag]; ok {
		if layout, err = routing.ParseLayout(s); err != nil {
			return nil, fault.Wrap(fault.Config, err, "band layout tag of queue %q", queue)
		}
	}
	q := &Queue{Name: queue, Layout: layout, URLs: map[string]string{}, RunURLs: map[string]string{}}
	for _, band := range layout {
		for _, runs := range []bool{false, true} {
			url, err := c.lookup(ctx, c.BandName(queue, band, runs))
			if err != nil {
				return nil, fault.Wrap(fault.CodeOf(err), err,
					"queue %q declares band %q but one of its SQS queues is missing; run `dagster-taskiq-go queue create %s`",
					queue, band, queue)
			}
			if runs {
				q.RunURLs[band] = url
			} else {
				q.URLs[band] = url
			}
		}
	}
	if q.DLQ, err = c.deadLetterURL(ctx, base); err != nil {
		return nil, err
	}
	return q, nil
}

// Fixed describes the one queue named by a queue_url override: one band,
// and the dead-letter queue its redrive policy names. Like Resolve, it
// caches: health checks ask for it every few seconds per task.
func (c *Client) Fixed(ctx context.Context, queue, url string) (*Queue, error) {
	key := "\x00" + queue + "\x00" + url // never a logical queue name
	c.mu.Lock()
	q, ok := c.resolved[key]
	c.mu.Unlock()
	if ok {
		return q, nil
	}
	dlq, err := c.deadLetterURL(ctx, url)
	if err != nil {
		return nil, err
	}
	q = &Queue{Name: queue, Layout: routing.Layout{routing.BandNormal},
		URLs: map[string]string{routing.BandNormal: url}, DLQ: dlq}
	c.mu.Lock()
	c.resolved[key] = q
	c.mu.Unlock()
	return q, nil
}

// lookup returns a physical queue's URL; a missing queue is a not_found error.
func (c *Client) lookup(ctx context.Context, name string) (string, error) {
	out, err := c.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	var missing *types.QueueDoesNotExist
	switch {
	case errors.As(err, &missing):
		return "", fault.New(fault.NotFound,
			"SQS queue %q does not exist: create it with `dagster-taskiq-go queue create`, or set create_missing_queues", name)
	case err != nil:
		return "", fault.Wrap(fault.Transport, err, "look up SQS queue %q", name)
	}
	return aws.ToString(out.QueueUrl), nil
}

// deadLetterURL follows a queue's redrive policy to its dead-letter queue.
func (c *Client) deadLetterURL(ctx context.Context, url string) (string, error) {
	target, _, err := c.RedrivePolicy(ctx, url)
	if err != nil || target == "" {
		return "", err
	}
	return c.lookup(ctx, target)
}

// RedrivePolicy reads a queue's redrive policy: the name of its dead-letter
// queue ("" when it has none) and the receives after which SQS moves a
// message there.
func (c *Client) RedrivePolicy(ctx context.Context, url string) (string, int, error) {
	out, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy}})
	if err != nil {
		return "", 0, fault.Wrap(fault.Transport, err, "read redrive policy of %s", url)
	}
	policy := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if policy == "" {
		return "", 0, nil
	}
	target, maxReceive, err := ParseRedrive(policy)
	return target, maxReceive, fault.Wrap(fault.Config, err, "queue %s", url)
}

// ParseRedrive reads a redrive policy: the dead-letter queue's name and
// maxReceiveCount (a JSON number, or a string as some emulators write it).
func ParseRedrive(policy string) (string, int, error) {
	var redrive struct {
		DeadLetterTargetArn string          `json:"deadLetterTargetArn"`
		MaxReceiveCount     json.RawMessage `json:"maxReceiveCount"`
	}
	err := json.Unmarshal([]byte(policy), &redrive)
	n, convErr := strconv.Atoi(strings.Trim(string(redrive.MaxReceiveCount), `"`))
	if err != nil || redrive.DeadLetterTargetArn == "" || convErr != nil || n < 1 {
		return "", 0, fmt.Errorf("unreadable redrive policy %q", policy)
	}
	return QueueName(redrive.DeadLetterTargetArn), n, nil
}

// QueueName is the last component of a queue's URL or ARN: its SQS name.
func QueueName(urlOrARN string) string {
	return urlOrARN[strings.LastIndexAny(urlOrARN, ":/")+1:]
}

// Counts are a queue's approximate message counts.
type Counts struct {
	Visible  int `json:"visible"`
	InFlight int `json:"in_flight"`
}

// Count reads a queue's approximate visible and in-flight message counts.
func (c *Client) Count(ctx context.Context, url string) (Counts, error) {
	out, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		return Counts{}, fault.Wrap(fault.Transport, err, "read message counts of %s", url)
	}
	visible, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	inFlight, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return Counts{Visible: visible, InFlight: inFlight}, nil
}

// Purge deletes every message in a queue.
func (c *Client) Purge(ctx context.Context, url string) error {
	_, err := c.api.PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: aws.String(url)})
	return fault.Wrap(fault.Transport, err, "purge %s", url)
}

// ControlName is the SQS name of a worker's control queue.
func (c *Client) ControlName(workerID string) string {
	return c.prefix + controlInfix + controlSafe.ReplaceAllString(workerID, "_")
}

// ControlPrefix is the SQS name prefix shared by every worker's control queue.
func (c *Client) ControlPrefix() string { return c.prefix + controlInfix }

const controlInfix = "ctl-"

var controlSafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// CreateControl creates a worker's control queue: long-polled, with a short
// retention, since a control message is useless once its moment has passed.
func (c *Client) CreateControl(ctx context.Context, workerID string) (string, error) {
	name := c.ControlName(workerID)
	out, err := c.api.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name),
		Attributes: map[string]string{
			string(types.QueueAttributeNameReceiveMessageWaitTimeSeconds): "20",
			string(types.QueueAttributeNameMessageRetentionPeriod):        "300",
			string(types.QueueAttributeNameVisibilityTimeout):             "30",
		},
	})
	if err != nil {
		return "", fault.Wrap(fault.Transport, err, "create control queue %q", name)
	}
	return aws.ToString(out.QueueUrl), nil
}

// ControlURL looks up a worker's control queue; "" when it has none.
func (c *Client) ControlURL(ctx context.Context, workerID string) (string, error) {
	url, err := c.lookup(ctx, c.ControlName(workerID))
	if fault.CodeOf(err) == fault.NotFound {
		return "", nil
	}
	return url, err
}

// CheckShortPolls fails when a queue's default receive wait is not 0. The
// SDK never sends WaitTimeSeconds=0 (a zero value is left out), so on such a
// queue every short poll of a higher band silently becomes a long poll and
// priority order breaks. Long polls always name their wait explicitly.
func (c *Client) CheckShortPolls(ctx context.Context, url string) error {
	out, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameReceiveMessageWaitTimeSeconds}})
	if err != nil {
		return fault.Wrap(fault.Transport, err, "read attributes of %s", url)
	}
	if wait := out.Attributes[string(types.QueueAttributeNameReceiveMessageWaitTimeSeconds)]; wait != "" && wait != "0" {
		return fault.New(fault.Config,
			"queue %s has ReceiveMessageWaitTimeSeconds=%s; workers need 0 there (they choose each poll's wait themselves): "+
				"set it to 0, or create the queue with `dagster-taskiq-go queue create`", url, wait)
	}
	return nil
}

// DeleteQueue deletes a physical queue.
func (c *Client) DeleteQueue(ctx context.Context, url string) error {
	_, err := c.api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)})
	return fault.Wrap(fault.Transport, err, "delete queue %s", url)
}

// ListQueues lists the URLs of the queues whose names start with prefix.
func (c *Client) ListQueues(ctx context.Context, prefix string) ([]string, error) {
	var urls []string
	p := sqs.NewListQueuesPaginator(c.api, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fault.Wrap(fault.Transport, err, "list queues %q", prefix)
		}
		urls = append(urls, page.QueueUrls...)
	}
	return urls, nil
}

// ReceiveCount is how many times SQS has delivered a message.
func ReceiveCount(m types.Message) int {
	n, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	return n
}
