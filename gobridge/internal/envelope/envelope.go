// Package envelope defines the SQS message body that carries one task, and
// its HMAC-SHA256 signature. The worker never interprets the Dagster args it
// carries; it only checks that the message came from a holder of the key.
package envelope

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// Version is the envelope format this build writes and reads.
const Version = 1

// Message attribute names. The signature covers the body only; the others
// let operators and the dead-letter paths identify a message without parsing
// it, and are as unauthenticated as an unsigned body.
const (
	AttrSignature = "dagster_taskiq_sig"
	AttrTaskID    = "dagster_taskiq_task_id"
	// AttrDeadLetterReason marks a copy a worker moved to the dead-letter
	// queue itself (and recorded), as opposed to one SQS's redrive moved.
	AttrDeadLetterReason = "dagster_taskiq_dead_letter_reason"
)

// Kind says what the worker runs for a task.
type Kind string

const (
	ExecuteStep Kind = "execute_step"
	ExecuteRun  Kind = "execute_run"
	ResumeRun   Kind = "resume_run"
)

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == ExecuteStep || k == ExecuteRun || k == ResumeRun }

// IsRun reports whether the task is a whole run (it takes a run slot).
func (k Kind) IsRun() bool { return k == ExecuteRun || k == ResumeRun }

// Envelope is the message body.
type Envelope struct {
	Version int       `json:"v"`
	Kind    Kind      `json:"kind"`
	TaskID  string    `json:"task_id"`
	RunID   string    `json:"run_id"`
	StepKey string    `json:"step_key,omitempty"`
	Attempt int       `json:"attempt"`
	Queue   string    `json:"queue"`
	Band    string    `json:"band"`
	SentAt  time.Time `json:"sent_at"`
	// Args holds the serialized Dagster args (compressed for steps) inline...
	Args string `json:"args,omitempty"`
	// ...or ArgsKey names the S3 object that holds them.
	ArgsKey string `json:"args_s3_key,omitempty"`
}

// TaskID returns the deterministic task id for a kind.
func TaskID(kind Kind, runID, stepKey string, attempt int) string {
	switch kind {
	case ExecuteStep:
		return fmt.Sprintf("%s/%s/%d", runID, stepKey, attempt)
	case ResumeRun:
		return fmt.Sprintf("%s/resume/%d", runID, attempt)
	default:
		return runID + "/execute"
	}
}

// Decode parses and checks a message body.
func Decode(body []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return Envelope{}, fault.Wrap(fault.Payload, err, "message body is not an envelope")
	}
	switch {
	case e.Version != Version:
		return e, fault.New(fault.Payload, "envelope version %d is not supported (this worker reads %d)", e.Version, Version)
	case !e.Kind.Valid():
		return e, fault.New(fault.Payload, "unknown task kind %q", e.Kind)
	case e.TaskID == "" || e.RunID == "":
		return e, fault.New(fault.Payload, "envelope lacks task_id or run_id")
	case (e.Args == "") == (e.ArgsKey == ""):
		return e, fault.New(fault.Payload, "envelope must carry exactly one of args and args_s3_key")
	}
	return e, nil
}

// Key environment variables. The key never travels in configuration: run
// config is stored with every run and shown in the UI.
const (
	KeyEnv     = "DAGSTER_TASKIQ_SIGNING_KEY"
	KeyFileEnv = "DAGSTER_TASKIQ_SIGNING_KEY_FILE"
	// InsecureEnv lets a submitter send unsigned messages to workers that
	// run with --insecure-no-signing.
	InsecureEnv = "DAGSTER_TASKIQ_INSECURE_NO_SIGNING"
	minKeyBytes = 16
)

// KeyFromEnv reads the signing key from DAGSTER_TASKIQ_SIGNING_KEY or the
// file named by DAGSTER_TASKIQ_SIGNING_KEY_FILE. It returns nil when neither is set.
func KeyFromEnv() ([]byte, error) {
	key := os.Getenv(KeyEnv)
	if path := os.Getenv(KeyFileEnv); path != "" {
		if key != "" {
			return nil, fault.New(fault.Config, "set only one of %s and %s", KeyEnv, KeyFileEnv)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fault.Wrap(fault.Config, err, "read signing key file named by %s", KeyFileEnv)
		}
		key = strings.TrimSpace(string(data))
	}
	if key == "" {
		return nil, nil
	}
	if len(key) < minKeyBytes {
		return nil, fault.New(fault.Config, "the signing key is shorter than %d bytes", minKeyBytes)
	}
	return []byte(key), nil
}

// Sign returns the hex HMAC-SHA256 of body.
func Sign(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Digest is the hex SHA-256 of a message body. The submitter keeps it in the
// task record, which only submitters and workers can write: a body whose
// signature fails but whose digest matches is the one submitted.
func Digest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// VerifyFromEnv checks sig against body with the key from the environment
// (see KeyFromEnv). Without a key, every message is authentic only when
// InsecureEnv=1 says the deployment runs unsigned; otherwise none is.
func VerifyFromEnv(body []byte, sig string) bool {
	key, err := KeyFromEnv()
	switch {
	case err != nil:
		return false
	case key == nil:
		return os.Getenv(InsecureEnv) == "1"
	}
	return Verify(key, body, sig)
}

// Verify checks sig against body in constant time.
func Verify(key, body []byte, sig string) bool {
	want, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return hmac.Equal(mac.Sum(nil), want)
}
