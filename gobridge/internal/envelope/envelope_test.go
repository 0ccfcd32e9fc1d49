package envelope

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

func TestTaskID(t *testing.T) {
	tests := []struct {
		kind    Kind
		attempt int
		want    string
	}{
		{ExecuteStep, 2, "r1/op_a/2"},
		{ExecuteRun, 0, "r1/execute"},
		{ResumeRun, 3, "r1/resume/3"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			require.Equal(t, tt.want, TaskID(tt.kind, "r1", "op_a", tt.attempt))
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, body, wantErr string
	}{
		{"ok", `{"v":1,"kind":"execute_step","task_id":"r/s/1","run_id":"r","args":"x"}`, ""},
		{"not json", `{`, "not an envelope"},
		{"version", `{"v":9,"kind":"execute_step","task_id":"t","run_id":"r","args":"x"}`, "version 9"},
		{"kind", `{"v":1,"kind":"rm -rf","task_id":"t","run_id":"r","args":"x"}`, `unknown task kind "rm -rf"`},
		{"ids", `{"v":1,"kind":"execute_run","args":"x"}`, "lacks task_id"},
		{"no args", `{"v":1,"kind":"execute_run","task_id":"t","run_id":"r"}`, "exactly one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.Equal(t, fault.Payload, fault.CodeOf(err))
		})
	}
}

func TestSignVerify(t *testing.T) {
	key := []byte("0123456789abcdef0123")
	body := []byte(`{"v":1}`)
	sig := Sign(key, body)
	require.True(t, Verify(key, body, sig))
	require.False(t, Verify(key, []byte(`{"v":2}`), sig), "tampered body")
	require.False(t, Verify([]byte("another-key-0123456"), body, sig), "other key")
	require.False(t, Verify(key, body, "zz"), "not hex")
	require.False(t, Verify(key, body, ""), "missing")
}

func TestKeyFromEnv(t *testing.T) {
	t.Setenv(KeyEnv, "")
	t.Setenv(KeyFileEnv, "")
	key, err := KeyFromEnv()
	require.NoError(t, err)
	require.Nil(t, key)

	t.Setenv(KeyEnv, "short")
	_, err = KeyFromEnv()
	require.ErrorContains(t, err, "shorter than")

	path := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(path, []byte("0123456789abcdef-from-file\n"), 0o600))
	t.Setenv(KeyEnv, "")
	t.Setenv(KeyFileEnv, path)
	key, err = KeyFromEnv()
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef-from-file", string(key))

	t.Setenv(KeyEnv, "0123456789abcdef")
	_, err = KeyFromEnv()
	require.ErrorContains(t, err, "only one of")
}

func TestVerifyFromEnv(t *testing.T) {
	const key = "0123456789abcdef-key"
	body := []byte(`{"v":1}`)
	tests := []struct {
		name, key, insecure, sig string
		want                     bool
	}{
		{"signed with the key", key, "", Sign([]byte(key), body), true},
		{"signed with another key", key, "", Sign([]byte("another-key-0123456789"), body), false},
		{"unsigned with a key", key, "1", "", false},
		{"no key, insecure deployment", "", "1", "", true},
		{"no key, signing expected", "", "", "", false},
		{"unusable key", "short", "1", Sign([]byte("short"), body), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(KeyEnv, tt.key)
			t.Setenv(KeyFileEnv, "")
			t.Setenv(InsecureEnv, tt.insecure)
			require.Equal(t, tt.want, VerifyFromEnv(body, tt.sig))
		})
	}
}
