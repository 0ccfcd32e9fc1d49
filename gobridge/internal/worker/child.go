package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/stepserver"
)

// childModule is the Python entry point every task runs under. The worker
// builds the command from the task kind alone; nothing in a message becomes
// part of a command line.
const childModule = "dagster_taskiq_go.child"

// childSpec describes one child process.
type childSpec struct {
	Python string
	Kind   envelope.Kind
	TaskID string
	Args   string   // the task's Dagster args
	Env    []string // added to the worker's environment
	Grace  time.Duration
	Output io.Writer          // receives the child's output, each line tagged with the task id
	Warm   *stepserver.Server // forks step children when ready; nil: always cold
	Log    *slog.Logger
}

// outputDrainDelay is how long the output pipe is still read after the child
// exits, while a process it left behind holds the pipe open.
const outputDrainDelay = 2 * time.Second

// childResult is how a child ended.
type childResult struct {
	ExitCode int
	Signaled bool // stopped by us (cancel or shutdown)
}

// childExit is what waiting for a child yields: its exit code (-1 when a
// signal killed it), or why waiting failed.
type childExit struct {
	code int
	err  error
}

// runChild runs the task's child process and waits for it. A step goes to
// the warm step server when one is ready, else (and for runs) a fresh
// interpreter starts. Either way the child leads its own process group and
// dies with the worker. When stop is closed the group gets SIGTERM, then
// SIGKILL after the grace period. started receives the pid.
func runChild(ctx context.Context, spec childSpec, stop <-chan struct{}, started func(pid int)) (childResult, error) {
	// Pdeathsig fires when the *thread* that forked the child exits, so the
	// forking goroutine keeps its thread for the child's whole life.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	pid, done, err := startWarm(ctx, spec)
	if pid == 0 && err == nil {
		pid, done, err = startCold(spec)
	}
	if err != nil {
		return childResult{}, err
	}
	started(pid)

	var res childResult
	var exit childExit
	select {
	case exit = <-done:
	case <-stop:
		res.Signaled = true
		exit = terminateGroup(pid, spec.Grace, done)
	case <-ctx.Done():
		res.Signaled = true
		exit = terminateGroup(pid, spec.Grace, done)
	}
	res.ExitCode = exit.code
	return res, exit.err
}

// startCold starts a fresh interpreter on the child module, its args on stdin.
func startCold(spec childSpec) (int, <-chan childExit, error) {
	cmd := exec.Command(spec.Python, "-m", childModule, string(spec.Kind))
	cmd.Env = append(childEnviron(spec.Kind.IsRun()), spec.Env...)
	cmd.Stdin = strings.NewReader(spec.Args)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Stdout and stderr share one pipe, copied by os/exec into pw. A process
	// the child leaves behind may keep that pipe open: the task ends when
	// the child exits, and WaitDelay later the pipe is closed regardless.
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = outputDrainDelay
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", spec.Python, err)
	}
	var copied sync.WaitGroup
	copied.Go(func() { tagLines(spec.Output, spec.TaskID, pr) })
	done := make(chan childExit, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		copied.Wait() // every line is out before the outcome is recorded
		var exitErr *exec.ExitError
		switch {
		case err == nil, errors.Is(err, exec.ErrWaitDelay): // exited 0; a leftover process held the pipe
			done <- childExit{}
		case errors.As(err, &exitErr):
			done <- childExit{code: exitErr.ExitCode()} // -1 when killed by a signal
		default:
			done <- childExit{err: err}
		}
	}()
	return cmd.Process.Pid, done, nil
}

// startWarm hands a step to the step server. A zero pid without an error
// means no child was forked: the caller starts a cold one.
func startWarm(ctx context.Context, spec childSpec) (int, <-chan childExit, error) {
	if spec.Warm == nil || spec.Kind != envelope.ExecuteStep || !spec.Warm.Ready() {
		return 0, nil, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, nil
	}
	env := make(map[string]string, len(spec.Env))
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	proc, err := spec.Warm.Fork(ctx, spec.TaskID, spec.Args, env, pw)
	pw.Close() // the child holds its own copy
	if err != nil {
		pr.Close()
		spec.Log.Info("step takes the cold path", "reason", err)
		return 0, nil, nil
	}
	var copied sync.WaitGroup
	copied.Go(func() { tagLines(spec.Output, spec.TaskID, pr) })
	done := make(chan childExit, 1)
	go func() {
		exit := <-proc.Exit
		// As on the cold path: a process the child left behind may hold the pipe.
		drained := make(chan struct{})
		go func() { copied.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(outputDrainDelay):
		}
		pr.Close()
		copied.Wait()
		done <- childExit{code: exit.Code, err: exit.Err}
	}()
	return proc.Pid, done, nil
}

// terminateGroup sends SIGTERM to the child's process group, then SIGKILL
// after grace, and returns how the child ended.
func terminateGroup(pid int, grace time.Duration, done <-chan childExit) childExit {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case exit := <-done:
		return exit
	case <-timer.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return <-done
	}
}

// childEnviron is the worker's environment without the signing key: user
// code has no business reading it.
// A run task keeps the key: its run worker signs the step tasks it submits.
func childEnviron(keepKey bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !keepKey && (strings.HasPrefix(kv, envelope.KeyEnv+"=") || strings.HasPrefix(kv, envelope.KeyFileEnv+"=")) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

var outputMu sync.Mutex

func tagLines(w io.Writer, taskID string, r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			outputMu.Lock()
			fmt.Fprintf(w, "[%s] %s", taskID, strings.TrimSuffix(line, "\n")+"\n")
			outputMu.Unlock()
		}
		if err != nil {
			return
		}
	}
}
