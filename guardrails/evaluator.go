package guardrails

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// DefaultTimeout bounds the evaluation of one guardrail.
const DefaultTimeout = 15 * time.Second

// Evaluator evaluates the guardrails of plans and keeps, per plan and
// guardrail, what their `for` windows and failure counts need between
// evaluations. It implements reconcile.Guardrails and is safe for concurrent
// use. Create one with NewEvaluator.
//
// The states follow Prometheus's alerting rules: a value within its bound is
// Healthy (inactive); a value past it is Pending from that evaluation on,
// and Breached (firing) once it has been past it for the guardrail's `for`
// and, when it sets `failures`, that many evaluations in a row. A value back
// within its bound resets the window, and so does no data (as an alert whose
// expression returns nothing resolves). A query that fails leaves the window
// as it was, as a failing rule evaluation leaves its alerts, and reads Error.
//
// A guardrail is judged where the migration stands: Evaluate is told when
// the current position was entered, and a move starts every window and
// count again (the guardrail reads Measuring until its first measurement
// there). Measurements started before the move never count after it, so a
// fault that persists is judged afresh at each position, one `for` each.
// A guardrail with `settle` is not measured at all until that long after
// the move: its query's range selector reaches back across it until then.
//
// With WithNotify the evaluator is asynchronous, as the daemon runs it:
// Evaluate never waits on a provider. It starts the measurements that are
// due in the background, each bounded by the timeout, returns the latest
// readings at once, and calls the notify function with the plan's name when
// a measurement has been folded in, so that the caller evaluates again
// without waiting for its next tick. A guardrail is measured at most once
// per interval (its own, else WithInterval's) however often Evaluate is
// called. Without WithNotify, Evaluate measures what is due and waits for it
// (plan backtest, and the tests).
type Evaluator struct {
	providers Providers
	clock     clock.PassiveClock
	timeout   time.Duration
	interval  time.Duration
	notify    func(plan string)

	mu    sync.Mutex
	plans map[string]*planState
}

var _ reconcile.Guardrails = (*Evaluator)(nil)

// Option configures an Evaluator or a Checker.
type Option func(*options)

type options struct {
	clock    clock.PassiveClock
	timeout  time.Duration
	interval time.Duration
	notify   func(string)
}

// WithClock sets the clock that times `for` windows, intervals and
// Reading.Since (the real clock by default).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithTimeout bounds the evaluation of one guardrail or check (DefaultTimeout
// by default). A guardrail that takes longer reads Error.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithInterval sets how often a guardrail without an interval of its own is
// measured when the evaluator is asynchronous (DefaultInterval by default):
// the daemon passes its evaluation interval, so that a guardrail counts
// once per interval however often the loop is woken.
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithNotify makes the evaluator asynchronous (see Evaluator) and names the
// function told, with the plan's name, when a measurement has been folded
// in. It must not block.
func WithNotify(f func(plan string)) Option { return func(o *options) { o.notify = f } }

// DefaultInterval is how often an asynchronous evaluator measures a
// guardrail that sets no interval, unless WithInterval says otherwise: the
// daemon's default evaluation interval.
const DefaultInterval = 30 * time.Second

func newOptions(opts []Option) options {
	o := options{clock: clock.RealClock{}, timeout: DefaultTimeout, interval: DefaultInterval}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// NewEvaluator returns an evaluator measuring each guardrail with the
// provider of its source's kind. A guardrail whose kind has no provider
// (nothing is configured for it) reads Error.
func NewEvaluator(providers Providers, opts ...Option) *Evaluator {
	o := newOptions(opts)
	return &Evaluator{providers: providers, clock: o.clock, timeout: o.timeout,
		interval: o.interval, notify: o.notify, plans: map[string]*planState{}}
}

// planState is the state of one plan's guardrails, by name.
type planState struct {
	mu     sync.Mutex
	guards map[string]*state
}

// state is one guardrail's evaluation state at one position.
type state struct {
	// def is the guardrail's definition as JSON: a changed definition
	// starts afresh.
	def string
	// epoch is the stay being judged; gen counts the fresh starts, so
	// that a measurement started before one is dropped.
	epoch reconcile.Epoch
	gen   int
	// health and since are the last reading's health and when it last
	// changed.
	health reconcile.Health
	since  time.Time
	// activeAt is when the value went past its bound (zero while within),
	// streak how many evaluations in a row it has been past it.
	activeAt time.Time
	streak   int
	// last and at are the last reading and when its measurement was taken
	// (zero: none at this position yet).
	last reconcile.Reading
	at   time.Time
	// started is when the latest measurement started, busyGen the gen it
	// was started in, and busy whether it is still running (asynchronous
	// evaluators only).
	started time.Time
	busyGen int
	busy    bool
}

// Evaluate returns the latest reading of every guardrail of p, in the
// plan's order, judging the stay at. It fails only when ctx has ended.
//
// Asynchronous (WithNotify): it starts the measurements that are due and
// returns without waiting for them. Otherwise it measures every guardrail
// that is due concurrently, each within the evaluator's timeout, and waits;
// a guardrail with an interval is measured at most once per interval, its
// last reading returned in between. When ctx ends during the wait no state
// changes that the cancelled measurements would have changed.
func (e *Evaluator) Evaluate(ctx context.Context, p *plan.Plan, at reconcile.Epoch) ([]reconcile.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("evaluate the guardrails of %s: %w", p.Metadata.Name, err)
	}
	ps := e.plan(p.Metadata.Name)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	states := ps.sync(p.Spec.Guardrails)

	now := e.clock.Now()
	out := make([]reconcile.Reading, len(p.Spec.Guardrails))
	var wg sync.WaitGroup
	for i, g := range p.Spec.Guardrails {
		st := states[i]
		if st.epoch != at || st.health == "" {
			st.restart(g, at)
		}
		if settling(g, at, now) {
			// Settling: a query's range still reaches back across the
			// move. Nothing is measured, so nothing from before counts.
			out[i] = settlingReading(g, st)
			continue
		}
		if e.notify != nil {
			if e.due(g, st, now) {
				e.start(ctx, ps, p, g, at, st, now)
			}
			out[i] = st.last
			continue
		}
		if g.Interval > 0 && !st.at.IsZero() && now.Sub(st.at) < g.Interval.Std() {
			out[i] = st.last
			continue
		}
		wg.Go(func() {
			mctx, cancel := context.WithTimeout(ctx, e.timeout)
			m := e.measure(mctx, p, g, at, now)
			cancel()
			if ctx.Err() != nil {
				return // shutting down: this measurement says nothing
			}
			out[i] = st.observe(g, m, now)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("evaluate the guardrails of %s: %w", p.Metadata.Name, err)
	}
	return out, nil
}

// Latest returns, for an asynchronous evaluator, the readings Evaluate
// would return now without starting any measurement: those of the
// measurements done since it was called too. ok is false for a synchronous
// evaluator, and when p's guardrails changed or a stay other than at is
// being judged.
func (e *Evaluator) Latest(p *plan.Plan, at reconcile.Epoch) ([]reconcile.Reading, bool) {
	if e.notify == nil {
		return nil, false
	}
	ps := e.plan(p.Metadata.Name)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := e.clock.Now()
	out := make([]reconcile.Reading, len(p.Spec.Guardrails))
	for i, g := range p.Spec.Guardrails {
		st, ok := ps.guards[g.Name]
		if !ok || st.epoch != at || st.health == "" {
			return nil, false
		}
		if def, _ := json.Marshal(g); st.def != string(def) {
			return nil, false
		}
		if settling(g, at, now) {
			out[i] = settlingReading(g, st)
			continue
		}
		out[i] = st.last
	}
	return out, true
}

// settling reports whether g is still settling after the move that began
// the stay at.
func settling(g plan.Guardrail, at reconcile.Epoch, now time.Time) bool {
	return g.Settle > 0 && now.Before(at.Since.Add(g.Settle.Std()))
}

// settlingReading is g's reading while it settles: nothing is judged.
func settlingReading(g plan.Guardrail, st *state) reconcile.Reading {
	r := st.last
	r.Detail = fmt.Sprintf("settling: not judged until %s after the move (settle)", g.Settle)
	return r
}

// due reports whether an asynchronous evaluator should start measuring g
// now: not while a measurement of this position runs, at once after a move,
// and then once per interval. A tenth of the interval is forgiven, so that
// a loop ticking at the interval does not skip every other tick.
func (e *Evaluator) due(g plan.Guardrail, st *state, now time.Time) bool {
	if st.busyGen != st.gen {
		return true // nothing started at this position yet
	}
	if st.busy {
		return false
	}
	every := e.interval
	if g.Interval > 0 {
		every = g.Interval.Std()
	}
	return now.Sub(st.started) >= every-every/10
}

// start measures g in the background and folds the measurement into st
// unless the position moved meanwhile. It holds ps.mu.
func (e *Evaluator) start(ctx context.Context, ps *planState, p *plan.Plan, g plan.Guardrail, at reconcile.Epoch, st *state, now time.Time) {
	name := p.Metadata.Name
	caller := trace.SpanFromContext(ctx)
	st.started, st.busy, st.busyGen = now, true, st.gen
	gen := st.gen
	go func() {
		// Not the caller's context: it ends with the caller's step, and
		// the measurement is bounded by the timeout anyway. Its span is
		// the caller's evaluate span's child all the same.
		ctx, cancel := context.WithTimeout(trace.ContextWithSpan(context.Background(), caller), e.timeout)
		m := e.measure(ctx, p, g, at, now)
		cancel()
		ps.mu.Lock()
		if st.busyGen == gen {
			st.busy = false
		}
		folded := st.gen == gen
		if folded {
			st.observe(g, m, now)
		}
		ps.mu.Unlock()
		if folded {
			e.notify(name)
		}
	}()
}

// Forget drops the state of a plan, once it is gone from the repository.
func (e *Evaluator) Forget(planName string) {
	e.mu.Lock()
	delete(e.plans, planName)
	e.mu.Unlock()
}

func (e *Evaluator) plan(name string) *planState {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps, ok := e.plans[name]
	if !ok {
		ps = &planState{guards: map[string]*state{}}
		e.plans[name] = ps
	}
	return ps
}

// sync returns the states of gs in order: kept for a guardrail whose
// definition is unchanged, new for a changed or added one. States of
// guardrails the plan no longer has are dropped.
func (ps *planState) sync(gs []plan.Guardrail) []*state {
	out := make([]*state, len(gs))
	seen := make(map[string]bool, len(gs))
	for i, g := range gs {
		def, _ := json.Marshal(g)
		st, ok := ps.guards[g.Name]
		if !ok || st.def != string(def) {
			gen := 0
			if ok {
				gen = st.gen + 1 // a measurement of the old definition is dropped
			}
			st = &state{def: string(def), gen: gen, busyGen: -1}
			ps.guards[g.Name] = st
		}
		out[i] = st
		seen[g.Name] = true
	}
	for name := range ps.guards {
		if !seen[name] {
			delete(ps.guards, name)
		}
	}
	return out
}

// restart starts judging g afresh for the stay at.
func (st *state) restart(g plan.Guardrail, at reconcile.Epoch) {
	since := at.Since
	st.epoch = at
	st.gen++
	st.activeAt, st.streak = time.Time{}, 0
	st.health, st.since = reconcile.Measuring, since
	st.at = time.Time{}
	st.last = reconcile.Reading{Name: g.Name, Health: reconcile.Measuring, Bound: Bound(g), Since: since,
		Detail: "not measured at this position yet"}
}

// measure measures g for the stay at of p, as of now: the candidate's
// value, or, for a comparison, both sides'.
func (e *Evaluator) measure(ctx context.Context, p *plan.Plan, g plan.Guardrail, at reconcile.Epoch, now time.Time) (m Measurement) {
	ctx, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/hal9ai/hal9-migrate/guardrails").Start(ctx,
		"guardrail.measure", trace.WithAttributes(attribute.String("plan", p.Metadata.Name), attribute.String("guardrail", g.Name),
			attribute.String("source", SourceOf(g.MetricSource).Kind)))
	defer func() {
		span.SetAttributes(attribute.Float64("value", m.Value), attribute.Bool("failed", m.Failed))
		if m.Err != nil {
			span.SetStatus(codes.Error, m.Err.Error())
		}
		span.End()
	}()
	if g.Compare != nil {
		return e.compare(ctx, p, g, at, now)
	}
	return e.providers.Measure(ctx, SourceOf(g.MetricSource).For(p, plan.Candidate), now)
}

// observe folds a measurement taken at now into the state and returns the
// reading.
func (st *state) observe(g plan.Guardrail, m Measurement, now time.Time) reconcile.Reading {
	r := reconcile.Reading{Name: g.Name, Value: m.Value, Bound: Bound(g), Compare: m.Compare}
	switch {
	case errors.Is(m.Err, ErrNoData):
		st.activeAt, st.streak = time.Time{}, 0
		r.Health, r.Detail = reconcile.NoData, m.Err.Error()
	case m.Err != nil:
		r.Health, r.Detail = reconcile.Error, m.Err.Error()
	case !m.Failed && !outside(m.Value, g.Min, g.Max):
		st.activeAt, st.streak = time.Time{}, 0
		r.Health, r.Detail = reconcile.Healthy, m.Detail
	default:
		if st.streak == 0 {
			st.activeAt = now
		}
		st.streak++
		need := max(g.Failures, 1)
		held := now.Sub(st.activeAt)
		r.Detail = past(m, g.Min, g.Max)
		if st.streak >= need && held >= g.For.Std() {
			r.Health = reconcile.Breached
		} else {
			r.Health = reconcile.Pending
		}
		if g.For > 0 {
			r.Detail += fmt.Sprintf("; past its bound for %s of %s", plan.FormatDuration(held.Round(time.Millisecond)), g.For)
		}
		if need > 1 {
			r.Detail += fmt.Sprintf("; %d of %d in a row", min(st.streak, need), need)
		}
	}
	if r.Health != st.health || st.since.IsZero() {
		st.health, st.since = r.Health, now
	}
	r.Since = st.since
	st.last, st.at = r, now
	return r
}
