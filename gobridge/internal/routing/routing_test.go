package routing

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

func fallback(celery, taskiq string) string {
	return `tag "` + celery + `" is read as a fallback for "` + taskiq + `"; rename it`
}

func TestRoute(t *testing.T) {
	tests := []struct {
		name      string
		step, run map[string]string
		want      Decision
	}{
		{"no tags uses the default queue", map[string]string{}, map[string]string{}, Decision{Queue: "dflt"}},
		{"nil maps", nil, nil, Decision{Queue: "dflt"}},

		// Queue precedence, highest first.
		{"step taskiq queue beats everything",
			map[string]string{QueueTag: "s-taskiq", CeleryQueueTag: "s-celery"},
			map[string]string{QueueTag: "r-taskiq", CeleryQueueTag: "r-celery"},
			Decision{Queue: "s-taskiq"}},
		{"step celery queue beats run tags",
			map[string]string{CeleryQueueTag: "s-celery"},
			map[string]string{QueueTag: "r-taskiq", CeleryQueueTag: "r-celery"},
			Decision{Queue: "s-celery", Warnings: []string{fallback(CeleryQueueTag, QueueTag)}}},
		{"run taskiq queue beats run celery queue",
			map[string]string{},
			map[string]string{QueueTag: "r-taskiq", CeleryQueueTag: "r-celery"},
			Decision{Queue: "r-taskiq"}},
		{"run celery queue beats the default",
			map[string]string{},
			map[string]string{CeleryQueueTag: "r-celery"},
			Decision{Queue: "r-celery", Warnings: []string{fallback(CeleryQueueTag, QueueTag)}}},
		{"empty queue values count as absent",
			map[string]string{QueueTag: "", CeleryQueueTag: ""},
			map[string]string{QueueTag: "", CeleryQueueTag: "r-celery"},
			Decision{Queue: "r-celery", Warnings: []string{fallback(CeleryQueueTag, QueueTag)}}},
		{"all empty queue values fall to the default",
			map[string]string{QueueTag: ""}, map[string]string{QueueTag: "", CeleryQueueTag: ""},
			Decision{Queue: "dflt"}},
		{"unrelated tags are ignored",
			map[string]string{"dagster/op_name": "x"}, map[string]string{"team": "data"},
			Decision{Queue: "dflt"}},

		// Step priority precedence.
		{"step taskiq priority beats celery and dagster",
			map[string]string{PriorityTag: "3", CeleryPriorityTag: "7", DagsterPriorityTag: "9"}, nil,
			Decision{Queue: "dflt", Priority: 3}},
		{"step celery priority beats dagster",
			map[string]string{CeleryPriorityTag: "7", DagsterPriorityTag: "9"}, nil,
			Decision{Queue: "dflt", Priority: 7, Warnings: []string{fallback(CeleryPriorityTag, PriorityTag)}}},
		{"step dagster priority",
			map[string]string{DagsterPriorityTag: "-4"}, nil,
			Decision{Queue: "dflt", Priority: -4}},
		{"run-only priority tags are not read from the step",
			map[string]string{RunPriorityTag: "5", CeleryRunPriorityTag: "6"}, nil,
			Decision{Queue: "dflt"}},
		{"spaces around a priority are trimmed",
			map[string]string{PriorityTag: " 2\t"}, nil,
			Decision{Queue: "dflt", Priority: 2}},
		{"explicit plus sign",
			map[string]string{PriorityTag: "+2"}, nil,
			Decision{Queue: "dflt", Priority: 2}},

		// Run priority precedence.
		{"run taskiq priority beats celery and dagster",
			nil, map[string]string{RunPriorityTag: "-1", CeleryRunPriorityTag: "7", DagsterPriorityTag: "9"},
			Decision{Queue: "dflt", Priority: -1}},
		{"run celery priority beats dagster",
			nil, map[string]string{CeleryRunPriorityTag: "7", DagsterPriorityTag: "9"},
			Decision{Queue: "dflt", Priority: 7, Warnings: []string{fallback(CeleryRunPriorityTag, RunPriorityTag)}}},
		{"run dagster priority",
			nil, map[string]string{DagsterPriorityTag: "9"},
			Decision{Queue: "dflt", Priority: 9}},
		{"step-only priority tags are not read from the run",
			nil, map[string]string{PriorityTag: "5", CeleryPriorityTag: "6"},
			Decision{Queue: "dflt"}},

		// Effective priority and combined decisions.
		{"step and run priorities add",
			map[string]string{PriorityTag: "3"}, map[string]string{RunPriorityTag: "-5"},
			Decision{Queue: "dflt", Priority: -2}},
		{"dagster priority on both step and run adds",
			map[string]string{DagsterPriorityTag: "2"}, map[string]string{DagsterPriorityTag: "2"},
			Decision{Queue: "dflt", Priority: 4}},
		{"run only (nil step tags) reads queue and priority from the run",
			nil, map[string]string{QueueTag: "runs", RunPriorityTag: "1"},
			Decision{Queue: "runs", Priority: 1}},
		{"one warning per celery tag used, in queue, step, run order",
			map[string]string{CeleryQueueTag: "gpu", CeleryPriorityTag: "1"},
			map[string]string{CeleryRunPriorityTag: "2", CeleryQueueTag: "unused"},
			Decision{Queue: "gpu", Priority: 3, Warnings: []string{
				fallback(CeleryQueueTag, QueueTag),
				fallback(CeleryPriorityTag, PriorityTag),
				fallback(CeleryRunPriorityTag, RunPriorityTag),
			}}},
		{"celery tags that lose decide nothing and warn nothing",
			map[string]string{QueueTag: "q", CeleryQueueTag: "x", PriorityTag: "1", CeleryPriorityTag: "2"},
			map[string]string{RunPriorityTag: "1", CeleryRunPriorityTag: "2"},
			Decision{Queue: "q", Priority: 2}},
		{"extreme priorities that fit",
			map[string]string{PriorityTag: strconv.Itoa(math.MaxInt)}, map[string]string{RunPriorityTag: strconv.Itoa(math.MinInt)},
			Decision{Queue: "dflt", Priority: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Route(tt.step, tt.run, "dflt")
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestRouteErrors(t *testing.T) {
	tests := []struct {
		name      string
		step, run map[string]string
		dflt      string
		want      []string // each must appear in the message
	}{
		{"bad step taskiq queue", map[string]string{QueueTag: "a b"}, nil, "dflt",
			[]string{`tag "dagster-taskiq/queue" on the step: queue name "a b" must be 1 to 64`}},
		{"bad step celery queue", map[string]string{CeleryQueueTag: "a.b"}, nil, "dflt",
			[]string{`tag "dagster-celery/queue" on the step: queue name "a.b"`}},
		{"bad run taskiq queue", nil, map[string]string{QueueTag: "x/y"}, "dflt",
			[]string{`tag "dagster-taskiq/queue" on the run: queue name "x/y"`}},
		{"bad run celery queue", nil, map[string]string{CeleryQueueTag: "é"}, "dflt",
			[]string{`tag "dagster-celery/queue" on the run: queue name "é"`}},
		{"queue name too long", map[string]string{QueueTag: strings.Repeat("q", 65)}, nil, "dflt",
			[]string{`tag "dagster-taskiq/queue" on the step`}},
		{"winning bad queue is reported even when a lower tag is valid",
			map[string]string{QueueTag: "a b"}, map[string]string{QueueTag: "ok"}, "dflt",
			[]string{`tag "dagster-taskiq/queue" on the step`}},
		{"bad default queue", nil, nil, "a b", []string{`default queue: queue name "a b"`}},
		{"empty default queue", nil, nil, "", []string{`default queue: queue name ""`}},

		{"non-integer step taskiq priority", map[string]string{PriorityTag: "high"}, nil, "dflt",
			[]string{`tag "dagster-taskiq/priority" on the step: priority "high" is not an integer`}},
		{"non-integer step celery priority", map[string]string{CeleryPriorityTag: "1.5"}, nil, "dflt",
			[]string{`tag "dagster-celery/priority" on the step: priority "1.5"`}},
		{"non-integer step dagster priority", map[string]string{DagsterPriorityTag: "1e3"}, nil, "dflt",
			[]string{`tag "dagster/priority" on the step: priority "1e3"`}},
		{"empty step priority is not 0", map[string]string{PriorityTag: "", DagsterPriorityTag: "1"}, nil, "dflt",
			[]string{`tag "dagster-taskiq/priority" on the step: priority ""`}},
		{"non-integer run taskiq priority", nil, map[string]string{RunPriorityTag: "x"}, "dflt",
			[]string{`tag "dagster-taskiq/run_priority" on the run: priority "x" is not an integer`}},
		{"non-integer run celery priority", nil, map[string]string{CeleryRunPriorityTag: "ten"}, "dflt",
			[]string{`tag "dagster-celery/run_priority" on the run: priority "ten"`}},
		{"non-integer run dagster priority", nil, map[string]string{DagsterPriorityTag: " "}, "dflt",
			[]string{`tag "dagster/priority" on the run: priority " "`}},
		{"priority out of int range", map[string]string{PriorityTag: "99999999999999999999"}, nil, "dflt",
			[]string{`tag "dagster-taskiq/priority" on the step: priority "99999999999999999999"`}},
		{"sum overflows upward",
			map[string]string{PriorityTag: strconv.Itoa(math.MaxInt)}, map[string]string{RunPriorityTag: "1"}, "dflt",
			[]string{"overflows"}},
		{"sum overflows downward",
			map[string]string{PriorityTag: strconv.Itoa(math.MinInt)}, map[string]string{RunPriorityTag: "-1"}, "dflt",
			[]string{"overflows"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Route(tt.step, tt.run, tt.dflt)
			require.Error(t, err)
			require.Equal(t, fault.Config, fault.CodeOf(err))
			require.Equal(t, Decision{}, got)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParseLayout(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Layout
	}{
		{"all bands", "high,normal,low", Layout{BandHigh, BandNormal, BandLow}},
		{"normal only", "normal", Layout{BandNormal}},
		{"high and normal", "high,normal", Layout{BandHigh, BandNormal}},
		{"normal and low", "normal,low", Layout{BandNormal, BandLow}},
		{"spaces around names", " high , normal,low ", Layout{BandHigh, BandNormal, BandLow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLayout(tt.input)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseLayoutErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"empty", "", `band layout "": unknown band ""`},
		{"empty element", "high,,normal", `band layout "high,,normal": unknown band ""`},
		{"unknown name", "high,medium", `band layout "high,medium": unknown band "medium"`},
		{"wrong case", "Normal", `unknown band "Normal"`},
		{"duplicate", "normal,normal", `band layout "normal,normal": band "normal" appears twice`},
		{"wrong order", "low,normal", `band layout "low,normal": band "normal" comes after "low"`},
		{"wrong order at the top", "normal,high", `band "high" comes after "normal"`},
		{"no normal", "high,low", `band layout "high,low" lacks "normal"`},
		{"low only", "low", `band layout "low" lacks "normal"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLayout(tt.input)
			require.Error(t, err)
			require.Equal(t, fault.Config, fault.CodeOf(err))
			require.Contains(t, err.Error(), tt.want)
			require.Contains(t, err.Error(), "valid bands, highest first: high, normal, low")
		})
	}
}

func TestLayoutStringRoundTrips(t *testing.T) {
	for _, s := range []string{"high,normal,low", "high,normal", "normal,low", "normal"} {
		t.Run(s, func(t *testing.T) {
			l, err := ParseLayout(s)
			require.NoError(t, err)
			require.Equal(t, s, l.String())
		})
	}
	require.Equal(t, "high,normal,low", DefaultLayout.String())
}

func TestLayoutBand(t *testing.T) {
	tests := []struct {
		name     string
		layout   Layout
		priority int
		want     string
	}{
		{"default layout, positive", DefaultLayout, 1, BandHigh},
		{"default layout, large positive", DefaultLayout, math.MaxInt, BandHigh},
		{"default layout, zero", DefaultLayout, 0, BandNormal},
		{"default layout, negative", DefaultLayout, -1, BandLow},
		{"default layout, large negative", DefaultLayout, math.MinInt, BandLow},
		{"no high band, positive", Layout{BandNormal, BandLow}, 5, BandNormal},
		{"no high band, negative", Layout{BandNormal, BandLow}, -5, BandLow},
		{"no low band, negative", Layout{BandHigh, BandNormal}, -5, BandNormal},
		{"no low band, positive", Layout{BandHigh, BandNormal}, 5, BandHigh},
		{"normal only, positive", Layout{BandNormal}, 5, BandNormal},
		{"normal only, negative", Layout{BandNormal}, -5, BandNormal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.layout.Band(tt.priority))
		})
	}
}

func TestLayoutRank(t *testing.T) {
	tests := []struct {
		name   string
		layout Layout
		band   string
		want   int
	}{
		{"default high", DefaultLayout, BandHigh, 0},
		{"default normal", DefaultLayout, BandNormal, 1},
		{"default low", DefaultLayout, BandLow, 2},
		{"normal first without high", Layout{BandNormal, BandLow}, BandNormal, 0},
		{"low second without high", Layout{BandNormal, BandLow}, BandLow, 1},
		{"absent band", Layout{BandHigh, BandNormal}, BandLow, -1},
		{"unknown band", DefaultLayout, "urgent", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.layout.Rank(tt.band))
		})
	}
}
