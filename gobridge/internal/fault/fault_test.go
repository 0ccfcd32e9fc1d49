package fault

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEncode(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain error is internal", base, "internal: boom"},
		{"new", New(Config, "unknown key %q", "x"), `config: unknown key "x"`},
		{"wrap keeps cause", Wrap(Transport, base, "send to %s", "q"), "transport: send to q: boom"},
		{"outermost code wins", Wrap(NotFound, New(Transport, "inner"), "outer"), "not_found: outer: inner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Encode(tt.err))
		})
	}
	require.ErrorIs(t, Wrap(Transport, base, "x"), base)
	require.Nil(t, Wrap(Transport, nil, "x"))
}
