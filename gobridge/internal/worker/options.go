package worker

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// Defaults of the worker options.
const (
	ConcurrencyDefault        = 1
	RunConcurrencyDefault     = 1
	AntiStarvationDefault     = 10
	PollWaitSecondsDefault    = 20
	HeartbeatSecondsDefault   = 5
	GracePeriodSecondsDefault = 30
	StepProcessDefault        = StepProcessWarm
)

// Step processes: how a step task's child process is made.
const (
	// StepProcessWarm forks steps from a step server that has imported
	// Dagster and the code location; the cold path stands in while it is not ready.
	StepProcessWarm = "warm"
	// StepProcessCold starts a fresh interpreter for every step.
	StepProcessCold = "cold"
)

var stepProcesses = []string{StepProcessWarm, StepProcessCold}

// Options configure one worker process. They are set by `worker start`.
type Options struct {
	// Queues are the logical queues to serve. Required.
	Queues []string `json:"queues"`
	// Concurrency is the number of step slots. Default 1.
	Concurrency int `json:"concurrency"`
	// RunConcurrency is the number of run slots, a pool apart from the step
	// slots so that runs cannot starve their own steps. 0 takes no runs. Default 1.
	RunConcurrency int `json:"run_concurrency"`
	// AntiStarvationWeight: after this many tasks in a row from a queue's top
	// band, a lower band is polled first once. 0 means strict priority. Default 10.
	AntiStarvationWeight int `json:"anti_starvation_weight"`
	// Name prefixes the worker id. Default: the host name.
	Name string `json:"name"`
	// PollWaitSeconds is the SQS long-poll wait (1..20). Default 20.
	PollWaitSeconds int `json:"poll_wait_seconds"`
	// HeartbeatSeconds is how often leases are renewed and cancel markers read. Default 5.
	HeartbeatSeconds int `json:"heartbeat_seconds"`
	// GracePeriodSeconds is how long a task may run after SIGTERM before SIGKILL,
	// and how long a graceful stop waits for running tasks. Default 30.
	GracePeriodSeconds int `json:"grace_period_seconds"`
	// Python is the interpreter that runs tasks (the worker's own). Required.
	Python string `json:"python"`
	// InsecureNoSigning accepts unsigned messages. Default false.
	InsecureNoSigning bool `json:"insecure_no_signing"`
	// StepProcess is how step children are made: "warm" or "cold". Runs are
	// always cold. Default "warm".
	StepProcess string `json:"step_process"`
}

var optionKeys = []string{"queues", "concurrency", "run_concurrency", "anti_starvation_weight", "name", "poll_wait_seconds", "heartbeat_seconds",
	"grace_period_seconds", "python", "insecure_no_signing", "step_process"}

// ParseOptions decodes and validates worker options.
func ParseOptions(data []byte) (Options, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Options{}, fault.Wrap(fault.Config, err, "worker options are not a JSON object")
	}
	for key := range raw {
		if !slices.Contains(optionKeys, key) {
			return Options{}, fault.New(fault.Config, "unknown worker option %q; valid options: %s", key, strings.Join(optionKeys, ", "))
		}
	}
	// Defaults first, then what was given: an explicit 0 stays 0 and is judged by validate.
	o := Options{RunConcurrency: RunConcurrencyDefault, AntiStarvationWeight: AntiStarvationDefault}.WithDefaults()
	if err := json.Unmarshal(data, &o); err != nil {
		return Options{}, fault.Wrap(fault.Config, err, "worker options")
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	if err := o.validate(); err != nil {
		return Options{}, fault.Wrap(fault.Config, err, "invalid worker options")
	}
	return o, nil
}

// WithDefaults fills unset options.
func (o Options) WithDefaults() Options {
	o.Concurrency = cmp.Or(o.Concurrency, ConcurrencyDefault)
	o.PollWaitSeconds = cmp.Or(o.PollWaitSeconds, PollWaitSecondsDefault)
	o.HeartbeatSeconds = cmp.Or(o.HeartbeatSeconds, HeartbeatSecondsDefault)
	o.GracePeriodSeconds = cmp.Or(o.GracePeriodSeconds, GracePeriodSecondsDefault)
	o.StepProcess = cmp.Or(o.StepProcess, StepProcessDefault)
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if len(o.Queues) == 0 {
		errs = append(errs, errors.New("--queue: name at least one queue"))
	}
	for _, q := range o.Queues {
		if err := config.ValidateQueueName(q); err != nil {
			errs = append(errs, fmt.Errorf("--queue: %w", err))
		}
	}
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency: %d must be at least 1", o.Concurrency))
	}
	if o.RunConcurrency < 0 {
		errs = append(errs, fmt.Errorf("--run-concurrency: %d must be at least 0", o.RunConcurrency))
	}
	if o.AntiStarvationWeight < 0 {
		errs = append(errs, fmt.Errorf("--anti-starvation-weight: %d must be at least 0", o.AntiStarvationWeight))
	}
	if o.PollWaitSeconds < 1 || o.PollWaitSeconds > 20 {
		errs = append(errs, fmt.Errorf("--poll-wait: %d is outside 1..20 seconds", o.PollWaitSeconds))
	}
	if o.HeartbeatSeconds < 1 {
		errs = append(errs, fmt.Errorf("--heartbeat-interval: %d must be at least 1 second", o.HeartbeatSeconds))
	}
	if o.GracePeriodSeconds < 1 {
		errs = append(errs, fmt.Errorf("--grace-period: %d must be at least 1 second", o.GracePeriodSeconds))
	}
	if !slices.Contains(stepProcesses, o.StepProcess) {
		errs = append(errs, fmt.Errorf("--step-process: %q is not one of %s", o.StepProcess, strings.Join(stepProcesses, ", ")))
	}
	if o.Python == "" {
		errs = append(errs, errors.New("python: the interpreter that runs tasks is required"))
	}
	return errors.Join(errs...)
}
