// Package sqsx is the SQS side of the transport: logical queue names to URLs,
// queue creation with a dead-letter queue, and the send/receive/delete calls.
package sqsx

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
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
)

// Client resolves and caches queue URLs and wraps the SQS calls.
type Client struct {
	api    *sqs.Client
	prefix string
	create bool

	mu   sync.Mutex
	urls map[string]string
}

// New returns a Client. prefix is prepended to logical names; create makes
// URL create missing queues instead of failing.
func New(api *sqs.Client, prefix string, create bool) *Client {
	return &Client{api: api, prefix: prefix, create: create, urls: map[string]string{}}
}

// PhysicalName is the SQS name of a logical queue.
func (c *Client) PhysicalName(queue string) string { return c.prefix + queue }

// URL resolves a logical queue to its URL, creating it only when allowed.
func (c *Client) URL(ctx context.Context, queue string) (string, error) {
	c.mu.Lock()
	url, ok := c.urls[queue]
	c.mu.Unlock()
	if ok {
		return url, nil
	}
	name := c.PhysicalName(queue)
	out, err := c.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	var missing *types.QueueDoesNotExist
	switch {
	case errors.As(err, &missing) && c.create:
		if url, err = c.Create(ctx, queue); err != nil {
			return "", err
		}
	case errors.As(err, &missing):
		return "", fault.New(fault.NotFound,
			"queue %q (SQS name %q) does not exist: create it with `dagster-taskiq-go queue create %s`, or set create_missing_queues",
			queue, name, queue)
	case err != nil:
		return "", fault.Wrap(fault.Transport, err, "look up queue %q", name)
	default:
		url = aws.ToString(out.QueueUrl)
	}
	c.mu.Lock()
	c.urls[queue] = url
	c.mu.Unlock()
	return url, nil
}

// Create makes the logical queue and its dead-letter queue (idempotent) and
// returns the queue's URL.
func (c *Client) Create(ctx context.Context, queue string) (string, error) {
	name := c.PhysicalName(queue)
	dlq, err := c.api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + dlqSuffix)})
	if err != nil {
		return "", fault.Wrap(fault.Transport, err, "create dead-letter queue %q", name+dlqSuffix)
	}
	attrs, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", fault.Wrap(fault.Transport, err, "read ARN of %q", name+dlqSuffix)
	}
	redrive := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":%d}`,
		attrs.Attributes[string(types.QueueAttributeNameQueueArn)], MaxReceiveCountDefault)
	out, err := c.api.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name),
		Attributes: map[string]string{
			string(types.QueueAttributeNameVisibilityTimeout):             strconv.Itoa(VisibilityTimeoutDefault),
			string(types.QueueAttributeNameReceiveMessageWaitTimeSeconds): "20",
			string(types.QueueAttributeNameRedrivePolicy):                 redrive,
		},
	})
	if err != nil {
		return "", fault.Wrap(fault.Transport, err, "create queue %q", name)
	}
	return aws.ToString(out.QueueUrl), nil
}

// DLQURL resolves the dead-letter queue of a logical queue.
func (c *Client) DLQURL(ctx context.Context, queue string) (string, error) {
	return c.URL(ctx, queue+dlqSuffix)
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

// Delete removes a received message.
func (c *Client) Delete(ctx context.Context, url, receipt string) error {
	_, err := c.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: aws.String(receipt)})
	return fault.Wrap(fault.Transport, err, "delete message from %s", url)
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
