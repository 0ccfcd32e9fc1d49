// Package routing decides from Dagster tags which logical queue a task goes
// to and which priority band of that queue carries it.
package routing

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/config"
	"github.com/dagster-taskiq-go/dagster-taskiq-go/gobridge/internal/fault"
)

// Tag names.
const (
	QueueTag             = "dagster-taskiq/queue"
	PriorityTag          = "dagster-taskiq/priority"     // step tag
	RunPriorityTag       = "dagster-taskiq/run_priority" // run tag
	DagsterPriorityTag   = "dagster/priority"            // Dagster's own (step or run)
	CeleryQueueTag       = "dagster-celery/queue"
	CeleryPriorityTag    = "dagster-celery/priority"
	CeleryRunPriorityTag = "dagster-celery/run_priority"
)

// celeryFallbackFor maps each dagster-celery tag to the tag it stands in for,
// so that jobs migrated from dagster-celery keep their routing.
var celeryFallbackFor = map[string]string{
	CeleryQueueTag:       QueueTag,
	CeleryPriorityTag:    PriorityTag,
	CeleryRunPriorityTag: RunPriorityTag,
}

const (
	onStep = "the step"
	onRun  = "the run"
)

// Decision is where a task goes.
type Decision struct {
	Queue    string   // logical queue name
	Priority int      // effective priority = step priority + run priority
	Warnings []string // e.g. a dagster-celery/* tag was used as a fallback (the caller warns once)
}

// tag is one place a setting may be read from, in precedence order.
type tag struct {
	tags  map[string]string
	where string
	name  string
}

// Route picks the queue and priority of a task. stepTags is nil for whole runs.
func Route(stepTags, runTags map[string]string, defaultQueue string) (Decision, error) {
	var d Decision
	queue, err := d.queue(stepTags, runTags, defaultQueue)
	if err != nil {
		return Decision{}, err
	}
	step, err := d.priority(
		tag{stepTags, onStep, PriorityTag}, tag{stepTags, onStep, CeleryPriorityTag}, tag{stepTags, onStep, DagsterPriorityTag})
	if err != nil {
		return Decision{}, err
	}
	run, err := d.priority(
		tag{runTags, onRun, RunPriorityTag}, tag{runTags, onRun, CeleryRunPriorityTag}, tag{runTags, onRun, DagsterPriorityTag})
	if err != nil {
		return Decision{}, err
	}
	// A wrapped sum would silently flip a task into the opposite band.
	if (run > 0 && step > math.MaxInt-run) || (run < 0 && step < math.MinInt-run) {
		return Decision{}, fault.New(fault.Config, "step priority %d plus run priority %d overflows", step, run)
	}
	d.Queue, d.Priority = queue, step+run
	return d, nil
}

func (d *Decision) queue(stepTags, runTags map[string]string, defaultQueue string) (string, error) {
	for _, t := range []tag{
		{stepTags, onStep, QueueTag}, {stepTags, onStep, CeleryQueueTag},
		{runTags, onRun, QueueTag}, {runTags, onRun, CeleryQueueTag},
	} {
		name := t.tags[t.name]
		if name == "" {
			continue
		}
		if err := config.ValidateQueueName(name); err != nil {
			return "", fault.New(fault.Config, "tag %q on %s: %w", t.name, t.where, err)
		}
		d.noteFallback(t.name)
		return name, nil
	}
	if err := config.ValidateQueueName(defaultQueue); err != nil {
		return "", fault.New(fault.Config, "default queue: %w", err)
	}
	return defaultQueue, nil
}

// priority reads the first of candidates that is present; 0 when none is.
// Unlike queue tags, an empty value is present and rejected: a priority the
// user wrote must never turn into 0 silently.
func (d *Decision) priority(candidates ...tag) (int, error) {
	for _, t := range candidates {
		raw, ok := t.tags[t.name]
		if !ok {
			continue
		}
		p, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return 0, fault.New(fault.Config, "tag %q on %s: priority %q is not an integer", t.name, t.where, raw)
		}
		d.noteFallback(t.name)
		return p, nil
	}
	return 0, nil
}

func (d *Decision) noteFallback(name string) {
	if want, ok := celeryFallbackFor[name]; ok {
		d.Warnings = append(d.Warnings, `tag "`+name+`" is read as a fallback for "`+want+`"; rename it`)
	}
}

// Band names, highest first.
const (
	BandHigh   = "high"
	BandNormal = "normal"
	BandLow    = "low"
)

// allBands is every band, highest first; unlike DefaultLayout it is not
// exported, so callers cannot change what ParseLayout accepts.
var allBands = []string{BandHigh, BandNormal, BandLow}

// Layout is a queue's band layout, highest band first, as written by `queue create`.
type Layout []string

// DefaultLayout is the layout `queue create` writes unless told otherwise.
var DefaultLayout = Layout{BandHigh, BandNormal, BandLow}

// ParseLayout parses "high,normal,low" (any non-empty subset in that order that includes normal).
func ParseLayout(s string) (Layout, error) {
	valid := strings.Join(allBands, ", ")
	var l Layout
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		rank := slices.Index(allBands, name)
		switch {
		case rank < 0:
			return nil, fault.New(fault.Config, "band layout %q: unknown band %q; valid bands, highest first: %s", s, name, valid)
		case slices.Contains(l, name):
			return nil, fault.New(fault.Config, "band layout %q: band %q appears twice; valid bands, highest first: %s", s, name, valid)
		case len(l) > 0 && rank < slices.Index(allBands, l[len(l)-1]):
			return nil, fault.New(fault.Config, "band layout %q: band %q comes after %q; valid bands, highest first: %s", s, name, l[len(l)-1], valid)
		}
		l = append(l, name)
	}
	// Priority 0, the common case, always lands in normal.
	if !slices.Contains(l, BandNormal) {
		return nil, fault.New(fault.Config, "band layout %q lacks %q; valid bands, highest first: %s", s, BandNormal, valid)
	}
	return l, nil
}

// String renders the layout as ParseLayout reads it.
func (l Layout) String() string { return strings.Join(l, ",") }

// Band picks the band of a priority: >= 1 goes to high when the layout has it, <= -1 to low when it has it, everything else to normal.
func (l Layout) Band(priority int) string {
	switch {
	case priority >= 1 && slices.Contains(l, BandHigh):
		return BandHigh
	case priority <= -1 && slices.Contains(l, BandLow):
		return BandLow
	}
	return BandNormal
}

// Rank is the band's position in the layout (0 = highest); -1 if absent.
func (l Layout) Rank(band string) int { return slices.Index(l, band) }
