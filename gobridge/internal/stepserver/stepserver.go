// Package stepserver runs the warm step path: a long-lived Python process
// (dagster_taskiq_go.step_server) that has imported Dagster and the step's
// code location, and forks one child per step task. A fork saves each step
// the interpreter start and `import dagster` that a cold child pays.
//
// The server is supervised: restarted with backoff when it exits, and
// unavailable meanwhile, so that callers take the cold path rather than
// wait. It dies with the worker (parent-death signal), and its children die
// with it.
package stepserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Module is the Python entry point of the server.
const Module = "dagster_taskiq_go.step_server"

// Backoff bounds between restarts of a server that keeps exiting.
const (
	restartMin = time.Second
	restartMax = time.Minute
	// A server that lived this long is healthy again: its next restart is quick.
	healthyAfter = time.Minute
	// forkTimeout bounds the server's first answer. The first step of a
	// code location waits for its import; a server silent for longer is
	// wedged and is killed.
	forkTimeout = 3 * time.Minute
	stopTimeout = 10 * time.Second
)

// readyTimeout bounds the server's start (importing Dagster); a server that
// never says it is ready (a --python that is not a Python with Dagster, say)
// is killed and tried again later. A variable so tests can shorten it.
var readyTimeout = 2 * time.Minute

// ErrUnavailable means no server is ready: take the cold path.
var ErrUnavailable = errors.New("step server not ready")

// ColdError is the server asking for the cold path for one task.
type ColdError struct{ Reason string }

func (e *ColdError) Error() string { return "step server declined: " + e.Reason }

// Config describes the server process.
type Config struct {
	Python string   // the interpreter that runs tasks
	Env    []string // the server's environment, inherited by every step
	Log    *slog.Logger
}

// Server is one supervised step server.
type Server struct {
	cfg   Config
	dir   string
	sock  string
	ready atomic.Bool

	mu   sync.Mutex
	proc *os.Process // the running server, nil between restarts

	stop chan struct{}
	done chan struct{}
}

// Exit is how a forked child ended.
type Exit struct {
	Code int   // -1 when a signal killed it
	Err  error // the server went away before reporting
}

// Process is a child the server forked for a task.
type Process struct {
	Pid  int
	Exit <-chan Exit // receives exactly once
}

// Start launches the server in the background and returns at once; Fork
// reports ErrUnavailable until it is ready.
func Start(cfg Config) (*Server, error) {
	dir, err := os.MkdirTemp("", "dagster-taskiq-steps-")
	if err != nil {
		return nil, fmt.Errorf("step server: %w", err)
	}
	s := &Server{cfg: cfg, dir: dir, sock: filepath.Join(dir, "sock"), stop: make(chan struct{}), done: make(chan struct{})}
	go s.supervise()
	return s, nil
}

// Ready reports whether Fork can be tried now.
func (s *Server) Ready() bool { return s.ready.Load() }

// Stop ends the server once its children are gone and waits for it.
func (s *Server) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
		<-s.done
	}
	_ = os.RemoveAll(s.dir)
}

func (s *Server) supervise() {
	defer close(s.done)
	backoff := restartMin
	for {
		started := time.Now()
		err := s.runOnce()
		select {
		case <-s.stop:
			return
		default:
		}
		if time.Since(started) > healthyAfter {
			backoff = restartMin
		}
		s.cfg.Log.Warn("step server exited; steps take the cold path until it is back", "error", err, "restart_in", backoff)
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, restartMax)
	}
}

// runOnce runs one server process until it exits.
func (s *Server) runOnce() error {
	// Pdeathsig fires when the thread that forked the server exits: this
	// goroutine keeps its thread until the server is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	_ = os.Remove(s.sock)
	cmd := exec.Command(s.cfg.Python, "-m", Module, s.sock)
	cmd.Env = s.cfg.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s -m %s: %w", s.cfg.Python, Module, err)
	}
	s.mu.Lock()
	s.proc = cmd.Process
	s.mu.Unlock()

	var logged sync.WaitGroup
	logged.Go(func() { s.readOutput(out) })
	stopped := make(chan struct{})
	go func() {
		notReady := time.NewTimer(readyTimeout)
		defer notReady.Stop()
		for {
			select {
			case <-s.stop:
				stdin.Close() // the server's signal to stop
				return
			case <-notReady.C:
				if !s.ready.Load() {
					s.cfg.Log.Error("step server not ready in time; killing it", "waited", readyTimeout, "python", s.cfg.Python)
					_ = cmd.Process.Kill()
				}
			case <-stopped:
				return
			}
		}
	}()
	logged.Wait()
	err = cmd.Wait()
	close(stopped)
	s.ready.Store(false)
	s.mu.Lock()
	s.proc = nil
	s.mu.Unlock()
	return err
}

// readOutput marks the server ready on its first line and logs the rest.
func (s *Server) readOutput(r io.Reader) {
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		var hello struct {
			Ready int `json:"ready"`
		}
		if !s.ready.Load() && json.Unmarshal(lines.Bytes(), &hello) == nil && hello.Ready > 0 {
			s.ready.Store(true)
			s.cfg.Log.Info("step server ready", "pid", hello.Ready)
			continue
		}
		s.cfg.Log.Info("step server: " + lines.Text())
	}
}

func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		_ = s.proc.Signal(syscall.SIGKILL)
	}
}

// Fork asks the server to fork a child for a task: env is added to the
// server's environment, output becomes the child's stdout and stderr. An
// error before a pid (ErrUnavailable, *ColdError, a broken server) means no
// child runs: the caller takes the cold path.
func (s *Server) Fork(ctx context.Context, taskID, args string, env map[string]string, output *os.File) (Process, error) {
	if !s.Ready() {
		return Process{}, ErrUnavailable
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.sock, Net: "unix"})
	if err != nil {
		return Process{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	request, err := json.Marshal(map[string]any{"task_id": taskID, "env": env, "args": args})
	if err != nil {
		conn.Close()
		return Process{}, err
	}
	request = append(request, '\n')
	// The request's first bytes carry the output pipe; the rest follows.
	head := request[:min(len(request), 4096)]
	if _, _, err := conn.WriteMsgUnix(head, syscall.UnixRights(int(output.Fd())), nil); err != nil {
		conn.Close()
		return Process{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// Only a non-empty rest: a server that declines at once closes the
	// connection, and even an empty write would then fail with EPIPE.
	if rest := request[len(head):]; len(rest) > 0 {
		if _, err := conn.Write(rest); err != nil {
			conn.Close()
			return Process{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}

	replies := bufio.NewReader(conn)
	answer := make(chan reply, 1)
	go func() { answer <- readReply(replies) }()
	var first reply
	select {
	case first = <-answer:
	case <-ctx.Done():
		conn.Close()
		return Process{}, ctx.Err()
	case <-time.After(forkTimeout):
		// A wedged server would hold every warm task: replace it.
		s.cfg.Log.Error("step server did not answer; killing it", "task_id", taskID, "waited", forkTimeout)
		s.kill()
		conn.Close()
		return Process{}, fmt.Errorf("%w: no answer within %s", ErrUnavailable, forkTimeout)
	}
	switch {
	case first.err != nil:
		conn.Close()
		return Process{}, fmt.Errorf("%w: %v", ErrUnavailable, first.err)
	case first.Cold != "":
		conn.Close()
		return Process{}, &ColdError{Reason: first.Cold}
	case first.Error != "":
		conn.Close()
		return Process{}, fmt.Errorf("%w: %s", ErrUnavailable, first.Error)
	case first.Pid == nil:
		conn.Close()
		return Process{}, fmt.Errorf("%w: reply without a pid", ErrUnavailable)
	}
	exit := make(chan Exit, 1)
	go func() {
		defer conn.Close()
		last := readReply(replies)
		switch {
		case last.err != nil:
			// The server died; the child died with it (parent-death signal).
			exit <- Exit{Code: -1, Err: fmt.Errorf("step server went away: %w", last.err)}
		case last.Exit == nil:
			exit <- Exit{Code: -1, Err: errors.New("step server reply without an exit code")}
		default:
			exit <- Exit{Code: *last.Exit}
		}
	}()
	return Process{Pid: *first.Pid, Exit: exit}, nil
}

type reply struct {
	Pid   *int   `json:"pid"`
	Exit  *int   `json:"exit"`
	Cold  string `json:"cold"`
	Error string `json:"error"`
	err   error
}

func readReply(r *bufio.Reader) reply {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return reply{err: err}
	}
	var rep reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return reply{err: fmt.Errorf("bad reply %q: %w", line, err)}
	}
	return rep
}
