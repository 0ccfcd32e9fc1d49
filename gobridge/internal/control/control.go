// Package control carries orders to one worker through its own control
// queue: cancel a running task, or stop. Orders are signed like tasks, so
// only holders of the key can stop workers or tasks.
package control

import (
	"context"
	"encoding/json"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
)

// Ops a worker obeys.
const (
	OpCancel = "cancel" // terminate the running task TaskID
	OpStop   = "stop"   // stop gracefully, as on SIGTERM
)

// AttrSignature holds the HMAC of a control message's body.
const AttrSignature = "dagster_taskiq_sig"

// Order is one control message.
type Order struct {
	Op     string    `json:"op"`
	TaskID string    `json:"task_id,omitempty"`
	SentAt time.Time `json:"sent_at"`
}

// Send delivers an order to a worker's control queue. A nil key sends it
// unsigned (for workers running with --insecure-no-signing).
func Send(ctx context.Context, queues *sqsx.Client, url string, key []byte, o Order) error {
	o.SentAt = time.Now().UTC()
	body, err := json.Marshal(o)
	if err != nil {
		return fault.Wrap(fault.Internal, err, "encode control order")
	}
	attrs := map[string]string{}
	if key != nil {
		attrs[AttrSignature] = envelope.Sign(key, body)
	}
	_, err = queues.Send(ctx, url, string(body), attrs)
	return err
}

// Decode authenticates and parses a received order. key nil means signing is off.
func Decode(m types.Message, key []byte) (Order, error) {
	body := []byte(aws.ToString(m.Body))
	if key != nil && !envelope.Verify(key, body, sqsx.Attr(m, AttrSignature)) {
		return Order{}, fault.New(fault.Payload, "control message with a missing or invalid signature")
	}
	var o Order
	if err := json.Unmarshal(body, &o); err != nil {
		return Order{}, fault.Wrap(fault.Payload, err, "control message is not an order")
	}
	if o.Op != OpCancel && o.Op != OpStop {
		return Order{}, fault.New(fault.Payload, "unknown control op %q", o.Op)
	}
	return o, nil
}
