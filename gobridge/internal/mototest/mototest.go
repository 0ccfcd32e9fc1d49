// Package mototest gives integration tests a real SQS+S3 endpoint: the moto
// server named by MOTO_ENDPOINT, or one it starts itself as a separate
// process on a free loopback port and stops by PID.
package mototest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/routing"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/transport"
)

// Server is a running moto endpoint.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
}

// Main runs a package's tests against one moto server. Use it from TestMain:
//
//	func TestMain(m *testing.M) { mototest.Main(m) }
func Main(m *testing.M) {
	srv, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mototest:", err)
		os.Exit(1)
	}
	current = srv
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

var current *Server

// Start connects to MOTO_ENDPOINT or starts moto with the project's Python
// (MOTO_PYTHON, else .venv/bin/python at the module root, else python3).
func Start() (*Server, error) {
	if ep := os.Getenv("MOTO_ENDPOINT"); ep != "" {
		return &Server{Endpoint: ep}, waitReady(ep, 10*time.Second)
	}
	python, err := Python()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(python, "-m", "moto.server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto with %s: %w", python, err)
	}
	srv := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	if err := waitReady(srv.Endpoint, 30*time.Second); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("moto (%s -m moto.server) did not become ready: %w; is moto[server] installed?", python, err)
	}
	return srv, nil
}

// Stop ends a server this package started.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func waitReady(endpoint string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Python is the project's interpreter (MOTO_PYTHON, else .venv/bin/python
// at the module root, else python3): it has moto, dagster and the project's
// Python dependencies.
func Python() (string, error) {
	if p := os.Getenv("MOTO_PYTHON"); p != "" {
		return p, nil
	}
	if root := ModuleRoot(); root != "" {
		if p := filepath.Join(root, ".venv", "bin", "python"); fileExists(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no Python with moto found: set MOTO_ENDPOINT or MOTO_PYTHON, or run `make venv`")
}

// ModuleRoot is the directory of go.mod above the working directory, or "".
func ModuleRoot() string {
	dir, _ := os.Getwd()
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Name returns a unique lowercase name for a test's bucket or queue.
func Name(t testing.TB, prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return strings.ToLower(prefix + "-" + hex.EncodeToString(b))
}

// Transport opens a transport against the package's moto server with a fresh
// bucket and queue prefix, and creates the named logical queues.
func Transport(t testing.TB, mutate func(*config.Config), queues ...string) *transport.Transport {
	t.Helper()
	if current == nil {
		t.Fatal("mototest: call mototest.Main from TestMain")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	cfg := config.Config{RegionName: "us-east-1", EndpointURL: current.Endpoint,
		S3Bucket: Name(t, "bucket"), QueuePrefix: Name(t, "t") + "-"}.WithDefaults()
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := transport.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Store.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if err := tr.Queues.CreateBands(ctx, q, routing.DefaultLayout); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}
