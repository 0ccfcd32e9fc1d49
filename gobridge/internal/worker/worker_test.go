package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/awsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/sqsx"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/store"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/submit"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/transport"
)

const (
	testKey   = "0123456789abcdef-test-key"
	testQueue = "dagster"
	// deadline bounds every wait for an outcome; tests normally finish far sooner.
	deadline = 30 * time.Second
	tick     = 50 * time.Millisecond
)

func TestMain(m *testing.M) { mototest.Main(m) }

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeChild is an executable shell script that stands in for
// `python -m dagster_taskiq_go.child KIND`. For each task it appends the task
// id to <dir>/runs and writes <id>.stdin, <id>.env and <id>.argv, then
// <id>.pid (last, atomically), then runs body. In file names the task id's
// slashes become underscores; body can use $d (the directory) and $id.
type fakeChild struct {
	dir  string
	path string
}

func newFakeChild(t *testing.T, body string) *fakeChild {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		"d='" + dir + "'\n" +
		`id=$(printf '%s' "$DAGSTER_TASKIQ_TASK_ID" | tr / _)` + "\n" +
		`echo "$id" >> "$d/runs"` + "\n" +
		`cat > "$d/$id.stdin"` + "\n" +
		`env > "$d/$id.env"` + "\n" +
		`printf '%s\n' "$@" > "$d/$id.argv"` + "\n" +
		`echo $$ > "$d/$id.pid.tmp" && mv "$d/$id.pid.tmp" "$d/$id.pid"` + "\n" +
		body + "\n"
	path := filepath.Join(dir, "fake-python")
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return &fakeChild{dir: dir, path: path}
}

func (c *fakeChild) file(taskID, ext string) string {
	return filepath.Join(c.dir, strings.ReplaceAll(taskID, "/", "_")+"."+ext)
}

func (c *fakeChild) read(t *testing.T, taskID, ext string) string {
	t.Helper()
	data, err := os.ReadFile(c.file(taskID, ext))
	require.NoError(t, err)
	return string(data)
}

// waitFile waits until the child has written <taskID>.<ext>.
func (c *fakeChild) waitFile(t *testing.T, taskID, ext string) string {
	t.Helper()
	require.Eventually(t, func() bool { _, err := os.Stat(c.file(taskID, ext)); return err == nil },
		deadline, tick, "the child never wrote %s", c.file(taskID, ext))
	return c.read(t, taskID, ext)
}

func (c *fakeChild) pid(t *testing.T, taskID string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(c.waitFile(t, taskID, "pid")))
	require.NoError(t, err)
	return pid
}

// runs lists the task ids (slashes as underscores) of every child started.
func (c *fakeChild) runs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Fields(string(data))
}

// release creates <dir>/release, which the waitForRelease body waits for.
func (c *fakeChild) release(t *testing.T) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, "release"), nil, 0o644))
}

const waitForRelease = `while [ ! -e "$d/release" ]; do sleep 0.05; done`

// setKey makes the test a holder of the signing key (submitter and worker).
func setKey(t *testing.T) {
	t.Setenv(envelope.KeyEnv, testKey)
	t.Setenv(envelope.KeyFileEnv, "")
	t.Setenv(envelope.InsecureEnv, "")
}

type testWorker struct {
	*Worker
	out *syncBuffer // the children's tagged output
	log *syncBuffer // the worker's log, shown when the test fails
}

// startWorker starts a worker on testQueue that runs child, with fast
// timings; zero fields of opts get test defaults. Cleanup stops it at once
// and waits for it.
func startWorker(t *testing.T, tr *transport.Transport, child *fakeChild, opts Options) *testWorker {
	t.Helper()
	tw := newTestWorker(t, tr, child, opts)
	tw.start(t)
	return tw
}

// newTestWorker builds the worker startWorker starts, for a test to change
// before it starts it.
func newTestWorker(t *testing.T, tr *transport.Transport, child *fakeChild, opts Options) *testWorker {
	t.Helper()
	if child != nil {
		opts.Python = child.path
	}
	if len(opts.Queues) == 0 {
		opts.Queues = []string{testQueue}
	}
	if opts.Name == "" {
		opts.Name = "test"
	}
	if opts.PollWaitSeconds == 0 {
		opts.PollWaitSeconds = 1
	}
	if opts.HeartbeatSeconds == 0 {
		opts.HeartbeatSeconds = 1
	}
	if opts.GracePeriodSeconds == 0 {
		opts.GracePeriodSeconds = 2
	}
	if opts.StepProcess == "" {
		opts.StepProcess = StepProcessCold // a fake child cannot be a step server
	}
	opts = opts.WithDefaults()
	tw := &testWorker{out: &syncBuffer{}, log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(tw.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := New(opts, tr, logger, tw.out)
	require.NoError(t, err)
	tw.Worker = w
	return tw
}

// start starts the worker; cleanup stops it at once and waits for it.
func (tw *testWorker) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	require.NoError(t, tw.Start(ctx))
	t.Cleanup(func() {
		tw.Stop(false)
		stopped := tw.Wait(deadline)
		if t.Failed() || !stopped {
			t.Logf("worker log:\n%s\nchild output:\n%s", tw.log.String(), tw.out.String())
		}
		require.True(t, stopped, "the worker did not stop")
	})
}

func newTransport(t *testing.T, mutate func(*config.Config)) *transport.Transport {
	t.Helper()
	return mototest.Transport(t, mutate, testQueue)
}

func stepRequest(stepKey, args string) submit.Request {
	return submit.Request{Kind: envelope.ExecuteStep, RunID: "run1", StepKey: stepKey, Attempt: 1, Args: args}
}

func submitStep(t *testing.T, tr *transport.Transport, stepKey, args string) submit.Result {
	t.Helper()
	res, err := submit.Submit(context.Background(), tr, stepRequest(stepKey, args))
	require.NoError(t, err)
	return res
}

// waitState waits until the task's record is in state and returns it.
func waitState(t *testing.T, tr *transport.Transport, taskID string, state store.State) store.Record {
	t.Helper()
	ctx := context.Background()
	ok := assert.Eventually(t, func() bool {
		rec, err := tr.Store.GetTask(ctx, taskID)
		return err == nil && rec.State == state
	}, deadline, tick)
	rec, err := tr.Store.GetTask(ctx, taskID)
	require.NoError(t, err)
	require.True(t, ok, "task %s never reached %s; last record: %+v", taskID, state, rec)
	require.Equal(t, state, rec.State)
	return rec
}

// stepEnvelope is what submit.Submit would send for a step.
func stepEnvelope(stepKey, args string) envelope.Envelope {
	return envelope.Envelope{Version: envelope.Version, Kind: envelope.ExecuteStep,
		TaskID: envelope.TaskID(envelope.ExecuteStep, "run1", stepKey, 1), RunID: "run1", StepKey: stepKey,
		Attempt: 1, Queue: testQueue, SentAt: time.Now().UTC(), Args: args}
}

func marshal(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return string(data)
}

// putQueued writes the QUEUED record submit.Submit would write for env.
func putQueued(t *testing.T, tr *transport.Transport, env envelope.Envelope) {
	t.Helper()
	require.NoError(t, tr.Store.PutTask(context.Background(), store.Record{TaskID: env.TaskID, Kind: string(env.Kind),
		RunID: env.RunID, StepKey: env.StepKey, Attempt: env.Attempt, Queue: env.Queue, State: store.Queued, QueuedAt: env.SentAt,
		BodyDigest: envelope.Digest([]byte(marshal(t, env)))}))
}

// send puts a raw body on the queue with the given attributes.
func send(t *testing.T, tr *transport.Transport, queue, body string, attrs map[string]string) {
	t.Helper()
	ctx := context.Background()
	url, err := tr.Queues.URL(ctx, queue)
	require.NoError(t, err)
	_, err = tr.Queues.Send(ctx, url, body, attrs)
	require.NoError(t, err)
}

func signed(body, taskID string) map[string]string {
	attrs := map[string]string{submit.AttrSignature: envelope.Sign([]byte(testKey), []byte(body))}
	if taskID != "" {
		attrs[submit.AttrTaskID] = taskID
	}
	return attrs
}

// queued counts the messages on a queue: visible, in flight and delayed.
func queued(ctx context.Context, tr *transport.Transport, queue string) (int, error) {
	clients, err := awsx.New(ctx, tr.Config)
	if err != nil {
		return 0, err
	}
	url, err := tr.Queues.URL(ctx, queue)
	if err != nil {
		return 0, err
	}
	names := []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
		sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed}
	out, err := clients.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url), AttributeNames: names})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, name := range names {
		n, err := strconv.Atoi(out.Attributes[string(name)])
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// waitQueueEmpty waits until every message on the queue has been deleted.
func waitQueueEmpty(t *testing.T, tr *transport.Transport, queue string) {
	t.Helper()
	require.Eventually(t, func() bool {
		n, err := queued(context.Background(), tr, queue)
		return err == nil && n == 0
	}, deadline, tick, "queue %s was never emptied", queue)
}

// receiveAll receives from url until n messages have arrived.
func receiveAll(t *testing.T, tr *transport.Transport, url string, n int) []sqstypes.Message {
	t.Helper()
	var got []sqstypes.Message
	var mu sync.Mutex
	ok := assert.Eventually(t, func() bool {
		msgs, err := tr.Queues.Receive(context.Background(), url, 10, 1)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			got = append(got, msgs...)
		}
		return len(got) >= n
	}, deadline, tick)
	mu.Lock()
	defer mu.Unlock()
	require.True(t, ok, "received %d of %d messages from %s", len(got), n, url)
	require.Len(t, got, n)
	return got
}

func envLines(env string) map[string]string {
	vars := map[string]string{}
	for line := range strings.Lines(env) {
		if k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestWorkerRunsSubmittedStep(t *testing.T) {
	setKey(t)
	t.Setenv("DAGSTER_TASKIQ_TEST_MARKER", "passed")
	tr := newTransport(t, nil)
	child := newFakeChild(t, `echo "hello from $id"; echo "to stderr" >&2; printf 'no newline'`)
	w := startWorker(t, tr, child, Options{})

	res := submitStep(t, tr, "op_a", "the-args\nsecond line")
	rec := waitState(t, tr, res.TaskID, store.Success)

	require.Equal(t, []string{"run1_op_a_1"}, child.runs(t))
	require.Equal(t, "the-args\nsecond line", child.read(t, res.TaskID, "stdin"))
	require.Equal(t, "-m\ndagster_taskiq_go.child\nexecute_step\n", child.read(t, res.TaskID, "argv"))
	env := envLines(child.read(t, res.TaskID, "env"))
	require.Equal(t, res.TaskID, env["DAGSTER_TASKIQ_TASK_ID"])
	require.Equal(t, w.ID(), env["DAGSTER_TASKIQ_WORKER_ID"])
	require.Equal(t, testQueue, env["DAGSTER_TASKIQ_QUEUE"])
	require.NotContains(t, env, envelope.KeyEnv, "the signing key must not reach user code")
	require.NotContains(t, child.read(t, res.TaskID, "env"), testKey)
	require.Equal(t, "passed", env["DAGSTER_TASKIQ_TEST_MARKER"], "the rest of the environment passes")

	require.NotNil(t, rec.ExitCode)
	require.Equal(t, 0, *rec.ExitCode)
	require.Empty(t, rec.Reason)
	require.Equal(t, w.ID(), rec.WorkerID)
	require.True(t, strings.HasPrefix(rec.WorkerID, "test-"), rec.WorkerID)
	require.Equal(t, child.pid(t, res.TaskID), rec.PID)
	require.NotNil(t, rec.StartedAt)
	require.NotNil(t, rec.FinishedAt)
	require.Nil(t, rec.LeaseUntil)
	require.False(t, rec.FinishedAt.Before(*rec.StartedAt))
	require.Equal(t, "op_a", rec.StepKey)
	require.Equal(t, testQueue, rec.Queue)

	out := w.out.String()
	prefix := "[" + res.TaskID + "] "
	require.Contains(t, out, prefix+"hello from run1_op_a_1\n")
	require.Contains(t, out, prefix+"to stderr\n")
	require.Contains(t, out, prefix+"no newline\n")
	for line := range strings.Lines(out) {
		require.True(t, strings.HasPrefix(line, prefix), "untagged output line %q", line)
	}
	waitQueueEmpty(t, tr, testQueue)
	require.Equal(t, int64(1), w.Summary().TasksRun)
}

func TestWorkerKeyFileIsNotPassedToChild(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600))
	t.Setenv(envelope.KeyEnv, "")
	t.Setenv(envelope.KeyFileEnv, keyFile)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	startWorker(t, tr, child, Options{})

	res := submitStep(t, tr, "op_a", "args")
	waitState(t, tr, res.TaskID, store.Success)
	env := envLines(child.read(t, res.TaskID, "env"))
	require.NotContains(t, env, envelope.KeyFileEnv)
	require.NotContains(t, env, envelope.KeyEnv)
}

func TestWorkerRecordsNonZeroExit(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `echo failing; exit 3`)
	startWorker(t, tr, child, Options{})

	res := submitStep(t, tr, "op_a", "args")
	rec := waitState(t, tr, res.TaskID, store.Failed)
	require.NotNil(t, rec.ExitCode)
	require.Equal(t, 3, *rec.ExitCode)
	require.Contains(t, rec.Reason, "code 3")
	require.NotNil(t, rec.FinishedAt)
}

func TestWorkerRecordsChildThatCannotStart(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	startWorker(t, tr, nil, Options{Python: filepath.Join(t.TempDir(), "no-such-python")})

	res := submitStep(t, tr, "op_a", "args")
	rec := waitState(t, tr, res.TaskID, store.Failed)
	require.Contains(t, rec.Reason, "could not run the task")
	require.Contains(t, rec.Reason, "no-such-python")
	require.Nil(t, rec.ExitCode, "a child that never started has no exit code")
	require.Zero(t, rec.PID)
	require.Nil(t, rec.StartedAt)
}

func TestWorkerDuplicateDeliveryRunsOnce(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	w := startWorker(t, tr, child, Options{})

	env := stepEnvelope("op_a", "args")
	putQueued(t, tr, env)
	body := marshal(t, env)
	send(t, tr, testQueue, body, signed(body, env.TaskID))
	first := waitState(t, tr, env.TaskID, store.Success)

	send(t, tr, testQueue, body, signed(body, env.TaskID))
	waitQueueEmpty(t, tr, testQueue)
	w.Stop(true)
	require.True(t, w.Wait(deadline))

	require.Equal(t, []string{"run1_op_a_1"}, child.runs(t), "the duplicate must not run")
	require.Equal(t, int64(1), w.Summary().TasksRun)
	again := waitState(t, tr, env.TaskID, store.Success)
	require.Equal(t, first, again, "the duplicate must not touch the record")
	n, err := queued(context.Background(), tr, testQueue)
	require.NoError(t, err)
	require.Zero(t, n)
}

// atomicClaims stands in for the S3 claim where the claim race is tested:
// moto's conditional put, unlike S3's, is not atomic under concurrency. A
// claim waits until racers claims of its task have arrived, so that every
// delivery has reached the claim before any wins.
type atomicClaims struct {
	racers int
	mu     sync.Mutex
	races  map[string]*claimRace // task id → its race
}

type claimRace struct {
	arrived int
	allIn   chan struct{}
	winner  string // the worker holding the claim
}

func newAtomicClaims(racers int) *atomicClaims {
	return &atomicClaims{racers: racers, races: map[string]*claimRace{}}
}

func (a *atomicClaims) Claim(ctx context.Context, c store.Claim) (bool, error) {
	a.mu.Lock()
	race, ok := a.races[c.TaskID]
	if !ok {
		race = &claimRace{allIn: make(chan struct{})}
		a.races[c.TaskID] = race
	}
	if race.arrived++; race.arrived == a.racers {
		close(race.allIn)
	}
	a.mu.Unlock()
	select {
	case <-race.allIn:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if race.winner != "" {
		return false, nil
	}
	race.winner = c.WorkerID
	return true, nil
}

func (a *atomicClaims) winner(taskID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.races[taskID].winner
}

// Several workers get one task at the same moment: exactly one runs it, and
// every other delivery is deleted unrun.
func TestWorkerClaimRaceRunsTaskOnce(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	const racers, rounds = 3, 50
	claims := newAtomicClaims(racers)
	workers := make([]*testWorker, racers)
	for i := range workers {
		// One slot each: a worker waiting in its claim cannot take another
		// delivery, so the deliveries of a round reach different workers.
		workers[i] = newTestWorker(t, tr, child, Options{Concurrency: 1})
		workers[i].claims = claims
		workers[i].start(t)
	}

	for i := range rounds {
		env := stepEnvelope(fmt.Sprintf("op_%d", i), "args")
		putQueued(t, tr, env)
		body := marshal(t, env)
		for range racers {
			send(t, tr, testQueue, body, signed(body, env.TaskID))
		}
		rec := waitState(t, tr, env.TaskID, store.Success)
		waitQueueEmpty(t, tr, testQueue) // every delivery got past its claim
		require.Equal(t, claims.winner(env.TaskID), rec.WorkerID, "the claim's holder ran the task")
		runs := child.runs(t)
		require.Len(t, runs, i+1, "round %d: exactly one child runs", i)
		require.Equal(t, strings.ReplaceAll(env.TaskID, "/", "_"), runs[i])
	}
	var tasksRun int64
	for _, w := range workers {
		w.Stop(true)
		require.True(t, w.Wait(deadline))
		tasksRun += w.Summary().TasksRun
	}
	require.Equal(t, int64(rounds), tasksRun)
}

func TestWorkerDeadLettersBadMessages(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	ctx := context.Background()

	// An unsigned forgery naming a queued task: the task id is not authenticated,
	// so the task's record must not change.
	victim := stepEnvelope("victim", "args")
	putQueued(t, tr, victim)
	forged := victim
	forged.Args = "forged-args"
	unsigned := marshal(t, forged)
	send(t, tr, testQueue, unsigned, map[string]string{submit.AttrTaskID: victim.TaskID})

	// The submitted body, signed with another key: the record vouches for the
	// body, so the keys differ and the task fails, saying so.
	missigned := stepEnvelope("op_other_key", "args")
	putQueued(t, tr, missigned)
	missignedBody := marshal(t, missigned)
	send(t, tr, testQueue, missignedBody, map[string]string{submit.AttrTaskID: missigned.TaskID,
		submit.AttrSignature: envelope.Sign([]byte("another-deployment's-key"), []byte(missignedBody))})

	// A body altered after signing: the signature is valid, but of another body.
	orig := stepEnvelope("op_tampered", "args")
	putQueued(t, tr, orig)
	tampered := orig
	tampered.Args = "evil-args"
	send(t, tr, testQueue, marshal(t, tampered), signed(marshal(t, orig), orig.TaskID))

	// Signed, but not JSON.
	malformed := `{"v": 1, "kind": "execute_step", "task_id": `
	send(t, tr, testQueue, malformed, signed(malformed, ""))

	// Signed, known task id, unknown kind: the record becomes FAILED.
	unknown := stepEnvelope("op_unknown", "args")
	putQueued(t, tr, unknown)
	unknown.Kind = "shell"
	unknownBody := marshal(t, unknown)
	send(t, tr, testQueue, unknownBody, signed(unknownBody, unknown.TaskID))

	startWorker(t, tr, child, Options{})

	failed := waitState(t, tr, unknown.TaskID, store.Failed)
	require.Contains(t, failed.Reason, "dead-lettered")
	require.Contains(t, failed.Reason, `unknown task kind "shell"`)
	require.Nil(t, failed.ExitCode)
	mismatch := waitState(t, tr, missigned.TaskID, store.Failed)
	require.Contains(t, mismatch.Reason, "share one signing key")

	dlq, err := tr.Queues.DLQURL(ctx, testQueue)
	require.NoError(t, err)
	reasons := map[string]string{} // body → dead-letter reason
	for _, m := range receiveAll(t, tr, dlq, 5) {
		reasons[aws.ToString(m.Body)] = sqsx.Attr(m, "dagster_taskiq_dead_letter_reason")
		if aws.ToString(m.Body) == unknownBody {
			require.NotEmpty(t, sqsx.Attr(m, submit.AttrSignature), "a signed message keeps its signature in the DLQ")
		}
	}
	require.Contains(t, reasons[unsigned], "signature")
	require.Contains(t, reasons[missignedBody], "signing key")
	require.Contains(t, reasons[marshal(t, tampered)], "signature")
	require.Contains(t, reasons[malformed], "not an envelope")
	require.Contains(t, reasons[unknownBody], "unknown task kind")
	waitQueueEmpty(t, tr, testQueue)

	// The worker keeps serving.
	good := submitStep(t, tr, "op_good", "args")
	waitState(t, tr, good.TaskID, store.Success)
	require.Equal(t, []string{"run1_op_good_1"}, child.runs(t), "no bad message may run")

	for _, id := range []string{victim.TaskID, orig.TaskID} {
		rec, err := tr.Store.GetTask(ctx, id)
		require.NoError(t, err)
		require.Equal(t, store.Queued, rec.State,
			"an unauthenticated message must not change task %s: %+v", id, rec)
	}
}

func TestWorkerInsecureNoSigningRunsUnsignedTasks(t *testing.T) {
	t.Setenv(envelope.KeyEnv, "")
	t.Setenv(envelope.KeyFileEnv, "")
	t.Setenv(envelope.InsecureEnv, "1")
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	startWorker(t, tr, child, Options{InsecureNoSigning: true})

	env := stepEnvelope("op_a", "unsigned-args")
	putQueued(t, tr, env)
	send(t, tr, testQueue, marshal(t, env), nil)
	waitState(t, tr, env.TaskID, store.Success)

	res := submitStep(t, tr, "op_b", "args-b") // submit without a key sends unsigned too
	waitState(t, tr, res.TaskID, store.Success)
	require.ElementsMatch(t, []string{"run1_op_a_1", "run1_op_b_1"}, child.runs(t))
	require.Equal(t, "unsigned-args", child.read(t, env.TaskID, "stdin"))
}

func TestWorkerNewRequiresSigningKey(t *testing.T) {
	t.Setenv(envelope.KeyEnv, "")
	t.Setenv(envelope.KeyFileEnv, "")
	tr := newTransport(t, nil)
	opts := Options{Queues: []string{testQueue}, Python: "/bin/false"}.WithDefaults()

	_, err := New(opts, tr, slog.New(slog.DiscardHandler), &bytes.Buffer{})
	require.Error(t, err)
	require.Equal(t, fault.Config, fault.CodeOf(err))
	require.ErrorContains(t, err, envelope.KeyEnv)
	require.ErrorContains(t, err, "--insecure-no-signing")

	t.Setenv(envelope.KeyEnv, "too-short")
	_, err = New(opts, tr, slog.New(slog.DiscardHandler), &bytes.Buffer{})
	require.Equal(t, fault.Config, fault.CodeOf(err))
	require.ErrorContains(t, err, "shorter than")
}

func TestWorkerSkipsTaskCanceledWhileQueued(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	ctx := context.Background()

	res := submitStep(t, tr, "op_a", "args")
	out, err := submit.Cancel(ctx, tr, res.TaskID)
	require.NoError(t, err)
	require.True(t, out.Requested)

	w := startWorker(t, tr, child, Options{})
	waitQueueEmpty(t, tr, testQueue) // the worker took the message and dropped it
	w.Stop(true)
	require.True(t, w.Wait(deadline))

	require.Empty(t, child.runs(t), "a canceled task must never start")
	rec := waitState(t, tr, res.TaskID, store.Canceled)
	require.Nil(t, rec.ExitCode)
	require.Zero(t, rec.PID)
	require.Zero(t, w.Summary().TasksRun)
}

func TestWorkerCancelsRunningTask(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `trap 'echo term > "$d/$id.term"; exit 143' TERM
sleep 30 &
wait $!`)
	startWorker(t, tr, child, Options{})

	res := submitStep(t, tr, "op_a", "args")
	pid := child.pid(t, res.TaskID)
	waitState(t, tr, res.TaskID, store.Running)

	start := time.Now()
	out, err := submit.Cancel(context.Background(), tr, res.TaskID)
	require.NoError(t, err)
	require.True(t, out.Requested)
	require.Equal(t, store.Running, out.State)
	rec := waitState(t, tr, res.TaskID, store.Canceled)
	t.Logf("cancel of a running task took %s (heartbeat 1s)", time.Since(start).Round(time.Millisecond))

	require.Equal(t, "term\n", child.read(t, res.TaskID, "term"), "the child must get SIGTERM")
	require.NotNil(t, rec.ExitCode)
	require.Equal(t, 143, *rec.ExitCode)
	require.Contains(t, rec.Reason, "canceled")
	require.Equal(t, pid, rec.PID)
	require.True(t, processGone(pid))
}

func TestWorkerKillsChildIgnoringSigterm(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	// The trap records when SIGTERM arrived and carries on.
	child := newFakeChild(t, `trap 'date +%s%N > "$d/$id.term"' TERM
while true; do sleep 0.1; done`)
	const grace = 2 * time.Second
	startWorker(t, tr, child, Options{GracePeriodSeconds: int(grace / time.Second)})

	res := submitStep(t, tr, "op_a", "args")
	pid := child.pid(t, res.TaskID)
	waitState(t, tr, res.TaskID, store.Running)

	_, err := submit.Cancel(context.Background(), tr, res.TaskID)
	require.NoError(t, err)
	rec := waitState(t, tr, res.TaskID, store.Canceled)

	ns, err := strconv.ParseInt(strings.TrimSpace(child.read(t, res.TaskID, "term")), 10, 64)
	require.NoError(t, err, "the child must get SIGTERM first")
	termAt := time.Unix(0, ns)
	require.NotNil(t, rec.FinishedAt)
	t.Logf("SIGTERM to end of task: %s", rec.FinishedAt.Sub(termAt).Round(time.Millisecond))
	require.GreaterOrEqual(t, rec.FinishedAt.Sub(termAt), grace-300*time.Millisecond,
		"SIGKILL must wait for the grace period")
	require.NotNil(t, rec.ExitCode)
	require.Equal(t, -1, *rec.ExitCode, "the child must die of a signal, not exit")
	require.True(t, processGone(pid))
	// The child's own children were killed too; as orphans they are reaped by
	// init, not by the worker, so their group may linger a moment as zombies.
	require.Eventually(t, func() bool { return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH) },
		deadline, tick, "the whole process group must be gone")
}

func TestWorkerGracefulStopFinishesRunningTask(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, waitForRelease+`
echo finished`)
	ctx := context.Background()
	w := startWorker(t, tr, child, Options{GracePeriodSeconds: 10})

	first := submitStep(t, tr, "op_a", "args")
	child.pid(t, first.TaskID)
	waitState(t, tr, first.TaskID, store.Running)

	w.Stop(true)
	second := submitStep(t, tr, "op_b", "args")
	require.False(t, w.Wait(200*time.Millisecond), "a graceful stop waits for the running task")
	child.release(t)
	require.True(t, w.Wait(deadline))

	rec := waitState(t, tr, first.TaskID, store.Success)
	require.Equal(t, 0, *rec.ExitCode)
	require.Contains(t, w.out.String(), "["+first.TaskID+"] finished\n")
	require.Equal(t, []string{"run1_op_a_1"}, child.runs(t))
	require.Equal(t, int64(1), w.Summary().TasksRun)

	queued, err := tr.Store.GetTask(ctx, second.TaskID)
	require.NoError(t, err)
	require.Equal(t, store.Queued, queued.State)
	claimed, err := tr.Store.IsClaimed(ctx, second.TaskID)
	require.NoError(t, err)
	require.False(t, claimed)
	msgs := receiveAll(t, tr, second.QueueURL, 1)
	require.Equal(t, second.TaskID, sqsx.Attr(msgs[0], submit.AttrTaskID))
}

func TestWorkerImmediateStopTerminatesRunningTask(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `trap 'echo term > "$d/$id.term"; exit 143' TERM
sleep 30 &
wait $!`)
	w := startWorker(t, tr, child, Options{GracePeriodSeconds: 10})

	res := submitStep(t, tr, "op_a", "args")
	pid := child.pid(t, res.TaskID)
	waitState(t, tr, res.TaskID, store.Running)

	w.Stop(false)
	require.True(t, w.Wait(deadline))
	rec := waitState(t, tr, res.TaskID, store.Failed)
	require.Contains(t, rec.Reason, "shut down")
	require.Equal(t, "term\n", child.read(t, res.TaskID, "term"))
	require.True(t, processGone(pid))
}

func TestWorkerFetchesLargePayloadAndDeletesIt(t *testing.T) {
	setKey(t)
	tr := newTransport(t, func(c *config.Config) { c.Source.PayloadThresholdBytes = 1024 })
	child := newFakeChild(t, "")
	startWorker(t, tr, child, Options{})
	ctx := context.Background()

	args := strings.Repeat("0123456789abcdef", 256) // 4 KiB
	res := submitStep(t, tr, "op_a", args)
	require.True(t, res.Offloaded)
	key := tr.Store.PayloadKey(res.TaskID)
	_, err := tr.Store.Get(ctx, key)
	require.NoError(t, err, "submit stores the payload")

	waitState(t, tr, res.TaskID, store.Success)
	require.Equal(t, args, child.read(t, res.TaskID, "stdin"))
	require.Eventually(t, func() bool {
		_, err := tr.Store.Get(ctx, key)
		return fault.CodeOf(err) == fault.NotFound
	}, deadline, tick, "the payload must be deleted once the task is done")
}

func TestWorkerFailsTaskWithMissingPayload(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, "")
	startWorker(t, tr, child, Options{})

	env := stepEnvelope("op_a", "")
	env.ArgsKey = tr.Store.PayloadKey(env.TaskID) // never written
	putQueued(t, tr, env)
	body := marshal(t, env)
	send(t, tr, testQueue, body, signed(body, env.TaskID))

	rec := waitState(t, tr, env.TaskID, store.Failed)
	require.Contains(t, rec.Reason, "payload")
	require.Contains(t, rec.Reason, env.ArgsKey)
	require.Nil(t, rec.ExitCode)
	waitQueueEmpty(t, tr, testQueue)
	require.Empty(t, child.runs(t))
}

// A task may run far longer than the bound on the worker's final writes: the
// outcome and the payload cleanup must still be written when it ends.
func TestWorkerRecordsOutcomeOfTaskOutlastingWriteTimeout(t *testing.T) {
	setKey(t)
	saved := writeTimeout
	writeTimeout = 2 * time.Second
	t.Cleanup(func() { writeTimeout = saved })
	tr := newTransport(t, func(c *config.Config) { c.Source.PayloadThresholdBytes = 1024 })
	child := newFakeChild(t, `sleep 3`)
	startWorker(t, tr, child, Options{})
	ctx := context.Background()

	res := submitStep(t, tr, "op_a", strings.Repeat("x", 4096))
	child.pid(t, res.TaskID)
	rec := waitState(t, tr, res.TaskID, store.Success)
	require.Equal(t, 0, *rec.ExitCode)
	require.Eventually(t, func() bool {
		_, err := tr.Store.Get(ctx, tr.Store.PayloadKey(res.TaskID))
		return fault.CodeOf(err) == fault.NotFound
	}, deadline, tick, "the payload must be deleted once the task is done")
}

// A task ends when its child exits, even if a process the child left behind
// still holds the output pipe open.
func TestWorkerTaskEndsWhenChildExitsDespiteLeftoverProcess(t *testing.T) {
	setKey(t)
	tr := newTransport(t, nil)
	child := newFakeChild(t, `sleep 120 &
echo $! > "$d/orphan"
echo bye
exit 0`)
	w := startWorker(t, tr, child, Options{})

	res := submitStep(t, tr, "op_a", "args")
	child.pid(t, res.TaskID)
	start := time.Now()
	require.Eventually(t, func() bool { _, err := os.Stat(filepath.Join(child.dir, "orphan")); return err == nil },
		deadline, tick)
	data, err := os.ReadFile(filepath.Join(child.dir, "orphan"))
	require.NoError(t, err)
	orphan, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })

	rec := waitState(t, tr, res.TaskID, store.Success)
	elapsed := time.Since(start)
	t.Logf("SUCCESS recorded %s after the child started", elapsed.Round(time.Millisecond))
	require.Less(t, elapsed, outputDrainDelay+5*time.Second, "the leftover process must not hold the task")
	require.Equal(t, 0, *rec.ExitCode)
	require.Contains(t, w.out.String(), "["+res.TaskID+"] bye\n")
	require.False(t, processGone(orphan), "the worker leaves the leftover process alone")
}
