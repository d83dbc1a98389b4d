package guardrails

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"sort"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// DefaultBacktestStep is how far apart a backtest evaluates the guardrails
// unless told otherwise: the daemon's default evaluation interval.
const DefaultBacktestStep = 30 * time.Second

// maxBacktestSteps bounds the evaluations of one backtest.
const maxBacktestSteps = 1_000_000

// BacktestOptions is the history a backtest replays.
type BacktestOptions struct {
	From, To time.Time
	// Step is how far apart the guardrails are evaluated, as the daemon's
	// evaluation interval; DefaultBacktestStep when zero.
	Step time.Duration
}

// Backtest is what a plan would have done over a stretch of history.
type Backtest struct {
	Plan   string        `json:"plan" yaml:"plan"`
	File   string        `json:"file,omitempty" yaml:"file,omitempty"`
	From   time.Time     `json:"from" yaml:"from"`
	To     time.Time     `json:"to" yaml:"to"`
	Step   plan.Duration `json:"step" yaml:"step"`
	Target plan.Position `json:"target" yaml:"target"`
	// Events are what the daemon would have done, in time order: every
	// move (Advance, Rollback, ...), and Pause and Resume when the
	// guardrails stopped and started being healthy.
	Events []BacktestEvent `json:"events" yaml:"events"`
	// Guardrails are the guardrails' readings over the whole history.
	Guardrails []GuardrailHistory `json:"guardrails" yaml:"guardrails"`
	// End is where the migration would have been at the end: at To, or at
	// the first rollback or freeze, after which the recorded history no
	// longer shows what the plan would have seen.
	End BacktestEnd `json:"end" yaml:"end"`
}

// BacktestEvent is one thing the daemon would have done.
type BacktestEvent struct {
	At time.Time `json:"at" yaml:"at"`
	// Action is an action kind of reconcile (Advance, Rollback, Freeze,
	// Checkpoint, StartJob, RunChecks, Decommission, PublishFlags), Pause
	// or Resume, or a status the migration settled in (Holding,
	// Completed, Breached).
	Action string        `json:"action" yaml:"action"`
	From   plan.Position `json:"from" yaml:"from"`
	To     plan.Position `json:"to" yaml:"to"`
	Reason string        `json:"reason" yaml:"reason"`
	// Guardrail, Value and Bound say which guardrail caused a rollback.
	Guardrail string  `json:"guardrail,omitempty" yaml:"guardrail,omitempty"`
	Value     float64 `json:"value,omitempty" yaml:"value,omitempty"`
	Bound     string  `json:"bound,omitempty" yaml:"bound,omitempty"`
	// Compare gives both sides' values when the guardrail compares the
	// candidate with stable.
	Compare *reconcile.Comparison `json:"compare,omitempty" yaml:"compare,omitempty"`
}

// GuardrailHistory is how one guardrail's health changed over the history.
type GuardrailHistory struct {
	Name  string `json:"name" yaml:"name"`
	Bound string `json:"bound" yaml:"bound"`
	// Replayed is false for a guardrail that has no history (an HTTP
	// check, whose provider is no RangeQuerier): it counts as healthy, and
	// Note says so.
	Replayed bool   `json:"replayed" yaml:"replayed"`
	Note     string `json:"note,omitempty" yaml:"note,omitempty"`
	// Changes are the readings at which its health changed.
	Changes []reconcile.Reading `json:"changes,omitempty" yaml:"changes,omitempty"`
	// Worst is the reading whose value lay furthest past the bound, or
	// nearest to it when it never passed it; nil without values.
	Worst *reconcile.Reading `json:"worst,omitempty" yaml:"worst,omitempty"`
}

// BacktestEnd is where the migration stood at the end of the range.
type BacktestEnd struct {
	At       time.Time     `json:"at" yaml:"at"`
	Position plan.Position `json:"position" yaml:"position"`
	Status   string        `json:"status" yaml:"status"`
	Reason   string        `json:"reason" yaml:"reason"`
	// RolledBack is set when the plan would have rolled back (or frozen)
	// at least once; the events say when and why.
	RolledBack bool `json:"rolledBack" yaml:"rolledBack"`
}

// backtestCommit stands for the commit of the plan in the simulated record.
const backtestCommit = "backtest"

// RunBacktest replays p's guardrails over the history of [o.From, o.To]:
// one range query per guardrail source, through its provider's
// RangeQuerier, then the Evaluator on a simulated clock at every step. A
// guardrail whose provider reads no history counts as healthy throughout;
// one whose kind has no provider in providers is an error, as the daemon
// would not measure it either.
// Alongside, it walks p's timeline from the start to its target through
// reconcile.Decide, with a driver that does at once what it is told, jobs
// and checks taken as succeeding (the history cannot say otherwise), and
// records what the daemon would have done and why. After a rollback the
// walk goes on as the daemon does: it never advances again under the same
// commit, and a fault that persists is judged afresh at the position it
// rolled back to (the guardrails' windows start again at every move), so it
// walks down one step per `for`.
func RunBacktest(ctx context.Context, p *plan.Plan, providers Providers, o BacktestOptions) (*Backtest, error) {
	step := o.Step
	if step == 0 {
		step = DefaultBacktestStep
	}
	switch {
	case step < 0:
		return nil, fmt.Errorf("backtest step %s: want a positive duration", step)
	case !o.From.Before(o.To):
		return nil, fmt.Errorf("backtest from %s to %s: the end must come after the start", o.From.Format(time.RFC3339), o.To.Format(time.RFC3339))
	case o.To.Sub(o.From)/step > maxBacktestSteps:
		return nil, fmt.Errorf("backtest from %s to %s every %s is more than %d evaluations: use a longer step",
			o.From.Format(time.RFC3339), o.To.Format(time.RFC3339), plan.FormatDuration(step), maxBacktestSteps)
	}

	out := &Backtest{Plan: p.Metadata.Name, File: p.File, From: o.From, To: o.To, Step: plan.Duration(step)}
	history := &replay{step: step, series: map[string][]Series{}}
	replayed := Providers{}
	for _, g := range p.Spec.Guardrails {
		src := SourceOf(g.MetricSource)
		h := GuardrailHistory{Name: g.Name, Bound: Bound(g)}
		provider, err := providers.Provider(src.Kind)
		if err != nil {
			return nil, fmt.Errorf("guardrail %s: %w", g.Name, err)
		}
		rq, ok := provider.(RangeQuerier)
		if !ok {
			h.Note = describe(src.Kind).Noun + " has no history: counted as healthy"
			out.Guardrails = append(out.Guardrails, h)
			continue
		}
		h.Replayed = true
		out.Guardrails = append(out.Guardrails, h)
		replayed[src.Kind] = history
		// A comparison replays both sides, and a test the samples of its
		// window before every evaluation.
		sides, from := []plan.Side{plan.Candidate}, o.From
		if g.Compare != nil {
			sides = []plan.Side{plan.Stable, plan.Candidate}
			if g.Compare.Test != "" {
				from = o.From.Add(-g.TestWindow().Std())
			}
		}
		for _, side := range sides {
			src := src.For(p, side)
			key := replayKey(src)
			if _, ok := history.series[key]; ok && from.Equal(o.From) {
				continue
			}
			s, err := rq.Range(ctx, src, from, o.To, step)
			if err != nil && g.Compare != nil {
				return nil, fmt.Errorf("guardrail %s: %s: %w", g.Name, side, err)
			}
			if err != nil {
				return nil, fmt.Errorf("guardrail %s: %w", g.Name, err)
			}
			history.series[key] = s
		}
	}

	clk := &simClock{now: o.From}
	ev := NewEvaluator(replayed, WithClock(clk))
	w := newWalk(p)
	out.Target = w.desired.Target

	for t := o.From; !t.After(o.To); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		clk.now = t
		var until time.Time
		// A move starts the guardrails' windows again: they are measured
		// afresh at the new position, at the same instant, as the daemon
		// measures at once after a move.
		// Nothing is judged at start, where the candidate takes nothing.
		for moved := true; moved; {
			var readings []reconcile.Reading
			if !w.rec.Position.IsStart() {
				var err error
				readings, err = ev.Evaluate(ctx, p, reconcile.Epoch{Position: w.rec.Position, Since: w.rec.EnteredAt})
				if err != nil {
					return nil, err
				}
				for i, r := range readings {
					if !out.Guardrails[i].Replayed {
						// Nothing to replay it with: counted as healthy.
						r.Health, r.Detail = reconcile.Healthy, ""
						readings[i] = r
					}
					out.Guardrails[i].add(p.Spec.Guardrails[i], r)
				}
			}
			until, moved = w.decide(readings, t)
		}
		next := t.Add(step)
		if until.After(t) && until.Before(next) {
			next = until
		}
		t = next
	}
	out.Events = w.events
	out.End = w.end(o.To)
	return out, nil
}

// add records a reading if its health changed, and keeps the worst.
func (h *GuardrailHistory) add(g plan.Guardrail, r reconcile.Reading) {
	if !h.Replayed {
		return
	}
	if n := len(h.Changes); n == 0 || h.Changes[n-1].Health != r.Health {
		h.Changes = append(h.Changes, r)
	}
	if r.Health == reconcile.NoData || r.Health == reconcile.Error {
		return
	}
	if h.Worst == nil || badness(g, r) > badness(g, *h.Worst) {
		worst := r
		h.Worst = &worst
	}
}

// badness orders readings by how far they lie towards or past a
// guardrail's bounds, in units of the bound, so that max and min compare;
// a comparison's by how much worse than stable the candidate is.
func badness(g plan.Guardrail, r reconcile.Reading) float64 {
	if c := r.Compare; c != nil && g.Compare != nil {
		worse := c.Delta()
		if c.Shift != nil {
			worse = *c.Shift
		}
		if g.Compare.HigherIsBetter() {
			worse = -worse
		}
		if c.Stable != 0 {
			worse /= math.Abs(c.Stable)
		}
		return worse
	}
	v := r.Value
	b := math.Inf(-1)
	if g.Max != nil {
		b = max(b, v-*g.Max)
	}
	if g.Min != nil {
		b = max(b, *g.Min-v)
	}
	return b
}

// walk is the simulated daemon: a record, a driver that shows whatever it
// was last told, and the events so far.
type walk struct {
	p          *plan.Plan
	desired    *reconcile.Desired
	steps      []plan.Step
	rec        store.Record
	driver     drivers.State
	paused     bool
	rolledBack bool
	events     []BacktestEvent
}

func newWalk(p *plan.Plan) *walk {
	return &walk{
		p:       p,
		desired: reconcile.NewDesired(p, backtestCommit),
		steps:   p.Timeline(plan.Last),
		rec:     store.Record{Plan: p.Metadata.Name},
	}
}

// maxActions bounds the actions taken at one instant: a checkpoint, a job,
// checks and a move can follow each other, nothing loops.
const maxActions = 16

// decide takes the daemon's actions at t given the readings, as the runner
// does (one per cycle, the cycles here taking no time), up to the first move,
// and returns when the decision may change on its own and whether it moved:
// readings taken before a move say nothing of the new position.
func (w *walk) decide(readings []reconcile.Reading, t time.Time) (time.Time, bool) {
	noData := w.p.Spec.Rollback.NoData()
	for range maxActions {
		o := reconcile.Observed{Record: w.rec, Driver: w.driver}
		green := true
		if !w.rec.Position.IsStart() {
			o.Guardrails = readings
			for _, r := range readings {
				if r.Health.Under(noData) != reconcile.Healthy {
					green = false
				}
			}
		}
		// The soak counts from when the guardrails were last all green,
		// as the runner keeps it.
		switch {
		case green && w.rec.GreenSince.IsZero():
			w.rec.GreenSince = t
		case !green:
			w.rec.GreenSince = time.Time{}
		}
		o.Record = w.rec
		a := reconcile.Decide(w.desired, o, t)
		w.note(a, green, t)
		if a.Kind == reconcile.Wait {
			return a.Until, false
		}
		w.act(a, t)
		switch a.Kind {
		case reconcile.Freeze:
			w.rolledBack = true
		case reconcile.Rollback:
			w.rolledBack = true
			return time.Time{}, true
		case reconcile.Advance, reconcile.MoveBack, reconcile.Apply:
			return time.Time{}, true
		}
	}
	return time.Time{}, false
}

// note records the event an action is, if it is one: every move, and for a
// wait a pause, a resume or a new status.
func (w *walk) note(a reconcile.Action, green bool, t time.Time) {
	from := w.rec.Position
	e := BacktestEvent{At: t, Action: string(a.Kind), From: from, To: a.To, Reason: a.Reason}
	if f := a.Failure; f != nil {
		e.Guardrail, e.Value, e.Bound, e.Compare = f.Guardrail, f.Value, f.Bound, f.Compare
	}
	if a.Kind != reconcile.Wait {
		if a.Kind == reconcile.Freeze || a.Kind == reconcile.Checkpoint || a.Kind == reconcile.StartJob ||
			a.Kind == reconcile.RunChecks || a.Kind == reconcile.PublishFlags {
			e.To = from
		}
		w.paused = false
		w.events = append(w.events, e)
		return
	}
	e.To = from
	paused := a.Status == reconcile.StatusProgressing && !green && !from.IsStart()
	switch {
	case paused && !w.paused:
		e.Action = "Pause"
	case !paused && w.paused:
		e.Action = "Resume"
		e.Reason = "every guardrail is healthy again at " + from.String() + "; " + a.Reason
	case a.Status != w.rec.Status && a.Status != reconcile.StatusProgressing:
		e.Action = a.Status
	default:
		w.rec.Status, w.rec.Reason = a.Status, a.Reason
		return
	}
	w.paused = paused
	w.rec.Status, w.rec.Reason = a.Status, a.Reason
	w.events = append(w.events, e)
}

// act carries out an action on the simulated record and driver, as
// reconcile.Runner does on the real ones.
func (w *walk) act(a reconcile.Action, t time.Time) {
	rec := &w.rec
	from := rec.Position
	rec.Status, rec.Reason, rec.Commit = a.Status, a.Reason, backtestCommit
	switch a.Kind {
	case reconcile.Advance, reconcile.MoveBack, reconcile.Rollback, reconcile.Apply:
		if a.Kind == reconcile.Advance {
			for _, s := range w.steps {
				if s.Position == from && s.Irreversible {
					pos := from
					rec.NoReturn = &pos
				}
			}
		}
		if a.Kind == reconcile.Rollback {
			rec.Failed = append(rec.Failed, store.Failure{Position: from, Commit: backtestCommit, Reason: a.Failure.What, At: t})
		}
		w.driver.Traffic, w.driver.Mirror, w.driver.Decommissioned = a.Target.Traffic, a.Target.Mirror, a.Target.Decommission
		rec.Position, rec.EnteredAt, rec.GreenSince = a.To, t, t
		rec.Job, rec.Checks = nil, nil
		rec.Decommissioned = a.Target.Decommission
	case reconcile.Freeze:
		rec.Failed = append(rec.Failed, store.Failure{Position: from, Commit: backtestCommit, Reason: a.Failure.What, At: t})
	case reconcile.Checkpoint:
		rec.Checkpoints = maps.Clone(rec.Checkpoints)
		if rec.Checkpoints == nil {
			rec.Checkpoints = map[string]store.Checkpoint{}
		}
		rec.Checkpoints[a.Checkpoint] = store.Checkpoint{Name: a.Checkpoint, Position: from, At: t}
	case reconcile.StartJob:
		rec.Job = &store.Job{ID: a.JobID, Phase: from.Phase, StartedAt: t, Done: true, Succeeded: true,
			Message: "taken as succeeded: a backtest runs no jobs"}
	case reconcile.RunChecks:
		rec.Checks = maps.Clone(rec.Checks)
		if rec.Checks == nil {
			rec.Checks = map[string]store.CheckResult{}
		}
		for _, name := range a.Checks {
			rec.Checks[name] = store.CheckResult{Passed: true, At: t, Message: "taken as passed: a backtest runs no checks"}
		}
	case reconcile.Decommission:
		rec.Decommissioned, w.driver.Decommissioned = true, true
	case reconcile.PublishFlags:
		rec.Flags = maps.Clone(w.p.Spec.Features)
		if rec.Flags == nil {
			rec.Flags = map[string]int{}
		}
		w.driver.Flags = rec.Flags
	}
}

func (w *walk) end(to time.Time) BacktestEnd {
	return BacktestEnd{At: to, Position: w.rec.Position, Status: w.rec.Status, Reason: w.rec.Reason, RolledBack: w.rolledBack}
}

// replay is a Provider that answers from range-query results, at the
// simulated time: the latest point at or before it, within one step.
type replay struct {
	step time.Duration
	// series are the results by replayKey.
	series map[string][]Series
}

// replayKey tells sources apart: two guardrails with the same source share
// its history.
func replayKey(src Source) string {
	b, _ := json.Marshal(src.Block)
	return src.Kind + " " + string(src.side()) + " " + src.fill(string(b))
}

// Samples returns the recorded values of src in [from, to].
func (r *replay) Samples(_ context.Context, src Source, from, to time.Time, _ time.Duration) ([]float64, error) {
	var out []float64
	for _, s := range r.series[replayKey(src)] {
		i := sort.Search(len(s.Points), func(i int) bool { return !s.Points[i].At.Before(from) })
		for ; i < len(s.Points) && !s.Points[i].At.After(to); i++ {
			if v := s.Points[i].Value; !math.IsNaN(v) {
				out = append(out, v)
			}
		}
	}
	return thin(out), nil
}

func (r *replay) Measure(_ context.Context, src Source, at time.Time) Measurement {
	var found []string
	var v float64
	for _, s := range r.series[replayKey(src)] {
		// The first point after at; the one before it is the latest.
		i := sort.Search(len(s.Points), func(i int) bool { return s.Points[i].At.After(at) })
		if i == 0 || at.Sub(s.Points[i-1].At) >= r.step {
			continue
		}
		p := s.Points[i-1]
		if math.IsNaN(p.Value) {
			continue
		}
		found = append(found, s.Labels)
		v = p.Value
	}
	switch len(found) {
	case 0:
		return Measurement{Err: fmt.Errorf("no sample at %s: %w", at.UTC().Format(time.RFC3339), ErrNoData)}
	case 1:
		return Measurement{Value: v}
	}
	return Measurement{Err: seriesError(found)}
}

// simClock is the backtest's clock: it shows the time being replayed.
type simClock struct{ now time.Time }

func (c *simClock) Now() time.Time                  { return c.now }
func (c *simClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }
