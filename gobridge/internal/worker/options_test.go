package worker

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

func TestParseOptionsDefaults(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	o, err := ParseOptions([]byte(`{"queues": ["dagster"], "python": "/venv/bin/python"}`))
	require.NoError(t, err)
	require.Equal(t, Options{
		Queues: []string{"dagster"}, Python: "/venv/bin/python", Name: host,
		Concurrency: ConcurrencyDefault, RunConcurrency: RunConcurrencyDefault,
		AntiStarvationWeight: AntiStarvationDefault, PollWaitSeconds: PollWaitSecondsDefault,
		HeartbeatSeconds: HeartbeatSecondsDefault, GracePeriodSeconds: GracePeriodSecondsDefault,
		StepProcess: StepProcessWarm,
	}, o)
}

func TestParseOptionsExplicit(t *testing.T) {
	o, err := ParseOptions([]byte(`{"queues": ["a", "b_2"], "concurrency": 4, "name": "w", "poll_wait_seconds": 20,
		"run_concurrency": 0, "anti_starvation_weight": 0,
		"heartbeat_seconds": 1, "grace_period_seconds": 1, "python": "py", "insecure_no_signing": true,
		"step_process": "cold"}`))
	require.NoError(t, err)
	require.Equal(t, Options{Queues: []string{"a", "b_2"}, Concurrency: 4, Name: "w", PollWaitSeconds: 20,
		HeartbeatSeconds: 1, GracePeriodSeconds: 1, Python: "py", InsecureNoSigning: true, StepProcess: StepProcessCold}, o)
}

func TestParseOptionsRejects(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []string // every one must appear in the error
	}{
		{"not an object", `["dagster"]`, []string{"not a JSON object"}},
		{"not JSON", `{`, []string{"not a JSON object"}},
		{"unknown option", `{"queues": ["a"], "python": "py", "queue": "a"}`,
			[]string{`unknown worker option "queue"`, "valid options: queues"}},
		{"wrong type", `{"queues": "a", "python": "py"}`, []string{"worker options"}},
		{"no queue", `{"python": "py"}`, []string{"--queue: name at least one queue"}},
		{"empty queue list", `{"queues": [], "python": "py"}`, []string{"name at least one queue"}},
		{"bad queue name", `{"queues": ["a b"], "python": "py"}`, []string{"--queue", `"a b"`}},
		{"reserved queue suffix", `{"queues": ["a-dlq"], "python": "py"}`, []string{"--queue", `"a-dlq"`}},
		{"concurrency", `{"queues": ["a"], "python": "py", "concurrency": -1}`, []string{"--concurrency: -1"}},
		{"explicit zero is not the default", `{"queues": ["a"], "python": "py", "concurrency": 0}`, []string{"--concurrency: 0"}},
		{"zero poll wait", `{"queues": ["a"], "python": "py", "poll_wait_seconds": 0}`, []string{"--poll-wait: 0"}},
		{"poll wait high", `{"queues": ["a"], "python": "py", "poll_wait_seconds": 21}`, []string{"--poll-wait: 21"}},
		{"poll wait low", `{"queues": ["a"], "python": "py", "poll_wait_seconds": -1}`, []string{"--poll-wait: -1"}},
		{"heartbeat", `{"queues": ["a"], "python": "py", "heartbeat_seconds": -5}`, []string{"--heartbeat-interval: -5"}},
		{"grace", `{"queues": ["a"], "python": "py", "grace_period_seconds": -1}`, []string{"--grace-period: -1"}},
		{"run slots", `{"queues": ["a"], "python": "py", "run_concurrency": -1}`, []string{"--run-concurrency: -1"}},
		{"weight", `{"queues": ["a"], "python": "py", "anti_starvation_weight": -3}`, []string{"--anti-starvation-weight: -3"}},
		{"no python", `{"queues": ["a"]}`, []string{"python: the interpreter"}},
		{"step process", `{"queues": ["a"], "python": "py", "step_process": "lukewarm"}`,
			[]string{`--step-process: "lukewarm" is not one of warm, cold`}},
		{"every problem at once", `{"concurrency": -2, "poll_wait_seconds": 30}`,
			[]string{"--queue", "--concurrency: -2", "--poll-wait: 30", "python"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOptions([]byte(tt.json))
			require.Error(t, err)
			require.Equal(t, fault.Config, fault.CodeOf(err), "%v", err)
			for _, want := range tt.want {
				require.ErrorContains(t, err, want)
			}
		})
	}
}
