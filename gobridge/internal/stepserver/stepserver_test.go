package stepserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/mototest"
)

// startServer runs the real Python step server from the source tree.
func startServer(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	python, err := mototest.Python()
	require.NoError(t, err)
	logs := &syncBuffer{}
	s, err := Start(Config{
		Python: python,
		Env:    append(os.Environ(), "PYTHONPATH="+mototest.ModuleRoot()),
		Log:    slog.New(slog.NewTextHandler(logs, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	return s, logs
}

func waitReady(t *testing.T, s *Server, logs *syncBuffer) {
	t.Helper()
	require.Eventually(t, s.Ready, 60*time.Second, 20*time.Millisecond, "server not ready: %s", logs)
}

func pipe(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	return w
}

func TestForkBeforeReadyIsUnavailable(t *testing.T) {
	s := &Server{}
	_, err := s.Fork(context.Background(), "t", "args", nil, nil)
	require.ErrorIs(t, err, ErrUnavailable)
}

func TestServerDeclinesArgsItCannotRead(t *testing.T) {
	s, logs := startServer(t)
	waitReady(t, s, logs)
	_, err := s.Fork(context.Background(), "t", "not dagster args", map[string]string{"X": "1"}, pipe(t))
	var cold *ColdError
	require.ErrorAs(t, err, &cold, "%v", err)
	require.Contains(t, cold.Reason, "could not import the step's code location")
	require.True(t, s.Ready(), "a declined task leaves the server serving")
}

func TestKilledServerIsRestarted(t *testing.T) {
	s, logs := startServer(t)
	waitReady(t, s, logs)
	first := s.pid()
	require.NoError(t, syscall.Kill(first, syscall.SIGKILL))
	require.Eventually(t, func() bool { return !s.Ready() }, 10*time.Second, 10*time.Millisecond)
	_, err := s.Fork(context.Background(), "t", "x", nil, pipe(t))
	require.True(t, errors.Is(err, ErrUnavailable), "while it is down, callers take the cold path: %v", err)
	waitReady(t, s, logs)
	require.NotEqual(t, first, s.pid())
	require.Contains(t, logs.String(), "step server exited")
}

func TestServerNeverReadyIsKilled(t *testing.T) {
	defer func(d time.Duration) { readyTimeout = d }(readyTimeout)
	readyTimeout = 500 * time.Millisecond
	silent := filepath.Join(t.TempDir(), "silent-python")
	require.NoError(t, os.WriteFile(silent, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755))
	logs := &syncBuffer{}
	s, err := Start(Config{Python: silent, Env: os.Environ(), Log: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "step server exited") }, 10*time.Second,
		20*time.Millisecond, "a server that never says it is ready is killed: %s", logs)
	require.Contains(t, logs.String(), "not ready in time")
	require.False(t, s.Ready())
}

func TestStopEndsTheServer(t *testing.T) {
	s, logs := startServer(t)
	waitReady(t, s, logs)
	pid := s.pid()
	s.Stop()
	require.False(t, s.Ready())
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the server process is gone")
}

func (s *Server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.Pid
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
