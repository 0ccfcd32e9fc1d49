package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/envelope"
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
	Args   string   // written to the child's stdin
	Env    []string // added to the worker's environment
	Grace  time.Duration
	Output io.Writer // receives the child's output, each line tagged with the task id
}

// outputDrainDelay is how long the output pipe is still read after the child
// exits, while a process it left behind holds the pipe open.
const outputDrainDelay = 2 * time.Second

// childResult is how a child ended.
type childResult struct {
	ExitCode int
	Signaled bool // stopped by us (cancel or shutdown)
}

// runChild starts the child in its own process group with a parent-death
// signal, feeds it its args, and waits. When stop is closed the group gets
// SIGTERM, then SIGKILL after the grace period. started receives the pid.
func runChild(ctx context.Context, spec childSpec, stop <-chan struct{}, started func(pid int)) (childResult, error) {
	// Pdeathsig fires when the *thread* that forked the child exits, so the
	// forking goroutine keeps its thread for the child's whole life.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

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
		return childResult{}, fmt.Errorf("start %s: %w", spec.Python, err)
	}
	started(cmd.Process.Pid)

	var copied sync.WaitGroup
	copied.Go(func() { tagLines(spec.Output, spec.TaskID, pr) })

	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		copied.Wait() // every line is out before the outcome is recorded
		done <- err
	}()

	var res childResult
	var waitErr error
	select {
	case waitErr = <-done:
	case <-stop:
		res.Signaled = true
		waitErr = terminateGroup(cmd.Process.Pid, spec.Grace, done)
	case <-ctx.Done():
		res.Signaled = true
		waitErr = terminateGroup(cmd.Process.Pid, spec.Grace, done)
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil, errors.Is(waitErr, exec.ErrWaitDelay): // exited 0; a leftover process held the pipe
		res.ExitCode = 0
	case errors.As(waitErr, &exitErr):
		res.ExitCode = exitErr.ExitCode() // -1 when killed by a signal
	default:
		return res, waitErr
	}
	return res, nil
}

// terminateGroup sends SIGTERM to the child's process group, then SIGKILL
// after grace, and returns the child's wait error.
func terminateGroup(pid int, grace time.Duration, done <-chan error) error {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
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
