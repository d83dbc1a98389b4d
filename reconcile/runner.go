package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// Guardrails evaluates a plan's guardrails. The reconciler asks once per
// step, saying where the migration stands and since when: the evaluator
// keeps the `for` windows and consecutive failures, and starts them again
// when the epoch changes, so that readings taken at one position never
// count at another.
type Guardrails interface {
	Evaluate(ctx context.Context, p *plan.Plan, at Epoch) ([]Reading, error)
}

// Latecomers is Guardrails whose Evaluate only starts the measurements due
// and returns the readings it had (an asynchronous evaluator): Latest
// returns the readings again, with those that came in since, starting
// nothing; ok is false when it has none of that stay. A step asks once it
// has observed the driver, so that a measurement started by its Evaluate
// and done meanwhile is judged in the same step, not a step later.
type Latecomers interface {
	Latest(p *plan.Plan, at Epoch) (readings []Reading, ok bool)
}

// Epoch is a stay at one position: the position and when it was entered.
// Every move starts a new one, also back to a position held before.
type Epoch struct {
	Position plan.Position
	Since    time.Time
}

// Checker runs a verify check that is a query or an HTTP request (checks
// that are jobs run through the driver). It returns within ctx.
type Checker interface {
	Check(ctx context.Context, p *plan.Plan, name string, c plan.Check) (store.CheckResult, error)
}

// Tolerant is implemented by drivers that approximate a traffic split and
// say by how many percentage points.
type Tolerant interface {
	Tolerance() int
}

// Runner carries out Decide's actions for many plans. Each Step is
// observe → decide → record intent → act → record result; every act is
// "make it so", so repeating any of it after a crash is harmless.
type Runner struct {
	Store  store.Store
	Open   drivers.Opener
	Guards Guardrails // nil: plans have no guardrail readings
	Checks Checker    // nil: query and HTTP checks fail
	Clock  clock.PassiveClock
	// Workers bounds how many plans are worked on at once.
	Workers int
	// StepTimeout bounds one plan's step, so that one stuck plan does not
	// hold a worker for ever.
	StepTimeout time.Duration
	// OnRollback is called after a rollback or a freeze has been applied
	// and recorded, to commit the new target to Git. The members of a
	// lockstep group that rolled back in one step are handed over together
	// to OnGroupRollback instead, when it is set, so that one commit moves
	// them all.
	OnRollback      func(ctx context.Context, d *Desired, a Action)
	OnGroupRollback func(ctx context.Context, group string, ds []*Desired, as []Action)
	// OnPromote is called with the plans whose migration asks for its
	// target to move on (spec.promotion), all the members of a group at
	// once; it commits or proposes the move and must not block.
	OnPromote func(ctx context.Context, ds []*Desired, as []Action)
	// Peers, when set, tells what is known of the plans that gates name.
	// It must answer from memory or the store, never waiting on Git.
	Peers func(ctx context.Context, names []string) map[string]Peer
	// OnDecided, when set, sees every decision with what it was made on,
	// before it is carried out: the daemon keeps the latest for its API
	// and metrics. It must not block.
	OnDecided func(d *Desired, o Observed, a Action)
	// Wake, when set, is told a plan's name when something the runner
	// started in the background for it (a query or HTTP check) has
	// finished, so that the plan is stepped again without waiting for the
	// next tick. It must not block.
	Wake func(plan string)
	// OnSaved, when set, sees the events of every record saved, with the
	// record: each transition once, as the history has it. It must not
	// block (the daemon hands them to its notifications).
	OnSaved func(rec store.Record, events []store.Event)
	// Hold, when set, is asked before each unit of a Cycle (a plan alone,
	// or a lockstep group) whether this runner may step it now: when ok,
	// the unit is stepped under ctx and done is called once it has ended;
	// otherwise it is skipped, its results ErrNotHeld. Replicas that share
	// the plans (leader.Shards) make sure through it that no plan is
	// stepped by two at once.
	Hold func(ctx context.Context, ds []*Desired) (hctx context.Context, done func(), ok bool)
	Log  *slog.Logger

	mu    sync.Mutex
	plans map[string]*planState
}

// planState is what the runner keeps between cycles for one plan: the
// record as last saved (the store stays the source of truth; this saves a
// read per cycle) and the driver. A plan is worked on by one goroutine at a
// time.
type planState struct {
	mu     sync.Mutex
	loaded bool
	rec    store.Record
	drv    drivers.Driver
	drvFor *plan.Plan
	// watching is when this Runner first observed the plan: guardrails
	// are green since then at the earliest, since nothing watched them
	// before (a daemon restarted mid-soak soaks again).
	watching time.Time

	// recorded are the ids of done jobs whose outcome this step records:
	// once the record is saved, the driver may remove them
	// (drivers.JobRemover). Kept until removed, so a failed removal is
	// tried again next step.
	recorded []string

	// stale is set by ForgetPlans, without waiting for a step under way:
	// the next step loads the record again and watches anew.
	stale atomic.Bool

	// quiet is set while a group's step carries out this plan's action:
	// its rollback goes to OnGroupRollback with the other members'.
	quiet bool

	// checks are the query and HTTP checks running in the background, by
	// name, and their results once they end; under checksMu, not mu, since
	// they end while a step holds mu.
	checksMu sync.Mutex
	checks   map[string]*runningCheck
}

// runningCheck is a query or HTTP check started at a time; done once its
// result is in.
type runningCheck struct {
	at     time.Time
	done   bool
	result store.CheckResult
}

// Result is what one Step did.
type Result struct {
	Plan   string
	Action Action
	Err    error
}

func (r *Runner) state(name string) *planState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.plans == nil {
		r.plans = map[string]*planState{}
	}
	ps, ok := r.plans[name]
	if !ok {
		ps = &planState{}
		r.plans[name] = ps
	}
	return ps
}

// Forget drops the records the runner keeps in memory between cycles, so
// that the next step of every plan starts from the store. Call it when a
// replica starts to lead: another replica may have moved the plans since
// this one last did, and acting on its own stale record (a drift repair
// applies before it saves) would undo that. The drivers stay open.
func (r *Runner) Forget() {
	r.mu.Lock()
	states := make([]*planState, 0, len(r.plans))
	for _, ps := range r.plans {
		states = append(states, ps)
	}
	r.mu.Unlock()
	for _, ps := range states {
		ps.mu.Lock()
		ps.loaded = false
		ps.mu.Unlock()
	}
}

// ForgetPlans is Forget for the plans match names, and it does not wait
// for their steps under way: each plan's next step starts from the store,
// and watches its guardrails anew, as a restarted daemon's would. A
// replica calls it for the plans of a shard it takes over.
func (r *Runner) ForgetPlans(match func(name string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, ps := range r.plans {
		if match(name) {
			ps.stale.Store(true)
		}
	}
}

// Release lets go of what the runner keeps for a plan this daemon no
// longer steps (its file was removed, or its shard went to another
// replica): its driver is closed, which for the Kubernetes one ends its
// place among the objects whose changes wake a plan, and its record is
// dropped from memory. The plan's entry stays, so that a step that raced
// the release, and any later one, works on the same state; the next step
// starts from the store and opens a driver again, as a restarted
// daemon's would. Release does not wait for a step under way: the state
// is let go of once that step ends.
func (r *Runner) Release(name string) {
	r.mu.Lock()
	ps := r.plans[name]
	r.mu.Unlock()
	if ps == nil {
		return
	}
	ps.stale.Store(true)
	go func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if c, ok := ps.drv.(io.Closer); ok {
			_ = c.Close()
		}
		ps.drv, ps.drvFor = nil, nil
		ps.loaded, ps.rec = false, store.Record{}
	}()
}

// ErrNotHeld is the result of a plan Cycle skipped because Hold refused
// it: another replica's to step.
var ErrNotHeld = errors.New("not held by this replica")

func (r *Runner) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Cycle takes one step for every plan, at most Workers at a time. A plan
// whose step fails or times out does not hold up the others.
func (r *Runner) Cycle(ctx context.Context, desired []*Desired) []Result {
	results := make([]Result, len(desired))
	// The members of a lockstep group are stepped together, by one
	// worker: a unit is a plan alone or a whole group.
	var units [][]int
	group := map[string]int{}
	for i, d := range desired {
		g := d.Plan.Spec.Group
		if g == "" {
			units = append(units, []int{i})
			continue
		}
		if u, ok := group[g]; ok {
			units[u] = append(units[u], i)
			continue
		}
		group[g] = len(units)
		units = append(units, []int{i})
	}
	workers := max(1, min(r.Workers, len(units)))
	next := make(chan []int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for unit := range next {
				if r.Hold != nil {
					ds := make([]*Desired, len(unit))
					for k, i := range unit {
						ds[k] = desired[i]
					}
					hctx, done, ok := r.Hold(ctx, ds)
					if !ok {
						for _, i := range unit {
							results[i] = Result{Plan: desired[i].Plan.Metadata.Name, Err: ErrNotHeld}
						}
						continue
					}
					r.stepUnit(hctx, desired, unit, results)
					done()
					continue
				}
				r.stepUnit(ctx, desired, unit, results)
			}
		})
	}
	for u, unit := range units {
		select {
		case next <- unit:
		case <-ctx.Done():
			for _, rest := range units[u:] {
				for _, j := range rest {
					results[j] = Result{Plan: desired[j].Plan.Metadata.Name, Err: ctx.Err()}
				}
			}
			close(next)
			wg.Wait()
			return results
		}
	}
	close(next)
	wg.Wait()
	return results
}

// stepUnit steps one unit of a Cycle, a plan alone or a whole group, and
// puts its results in place.
func (r *Runner) stepUnit(ctx context.Context, desired []*Desired, unit []int, results []Result) {
	if len(unit) == 1 {
		d := desired[unit[0]]
		a, err := r.Step(ctx, d)
		results[unit[0]] = Result{Plan: d.Plan.Metadata.Name, Action: a, Err: err}
		return
	}
	ds := make([]*Desired, len(unit))
	for k, i := range unit {
		ds[k] = desired[i]
	}
	for k, res := range r.StepGroup(ctx, ds) {
		results[unit[k]] = res
	}
}

// Step observes one plan, decides, and carries out the action.
func (r *Runner) Step(ctx context.Context, d *Desired) (Action, error) {
	if r.StepTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.StepTimeout)
		defer cancel()
	}
	ctx, span := startSpan(ctx, "step", attribute.String("plan", d.Plan.Metadata.Name))
	defer span.End()
	ps := r.state(d.Plan.Metadata.Name)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	v, err := r.prepare(ctx, d, ps)
	if err != nil {
		spanError(span, err)
		return Action{}, err
	}
	a, err := r.carry(ctx, v, v.a)
	if err == nil && a.Kind == Promote && r.OnPromote != nil {
		r.OnPromote(ctx, []*Desired{d}, []Action{a})
	}
	spanError(span, err)
	return a, err
}

// viewed is one plan observed and decided on, its action not yet carried
// out.
type viewed struct {
	d       *Desired
	ps      *planState
	obs     Observed
	a       Action
	changed bool
	openErr error // the driver could not be opened
	// quiet: a rollback is handed to OnGroupRollback with the group's,
	// not to OnRollback.
	quiet bool
}

// prepare loads, opens, observes and decides for d. It holds ps.mu.
func (r *Runner) prepare(ctx context.Context, d *Desired, ps *planState) (*viewed, error) {
	name := d.Plan.Metadata.Name
	if ps.stale.Swap(false) {
		ps.loaded, ps.watching = false, time.Time{}
	}
	if !ps.loaded {
		rec, err := r.Store.Load(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("load the record of %s: %w", name, err)
		}
		ps.rec, ps.loaded = rec, true
	}
	if err := r.open(ctx, ps, d); err != nil {
		// A driver that cannot be opened (its platform unreachable, or
		// the plan refused, as one outside the daemon's namespaces is)
		// leaves the workloads as unobservable as a failed Observe does:
		// the plan waits, and its record, status and view say why.
		obs := Observed{Record: ps.rec, DriverErr: err}
		return &viewed{d: d, ps: ps, obs: obs, a: r.decide(ctx, d, obs), openErr: err}, nil
	}
	obs, changed, err := r.observe(ctx, d, ps)
	if err != nil {
		return nil, err
	}
	return &viewed{d: d, ps: ps, obs: obs, a: r.decide(ctx, d, obs), changed: changed}, nil
}

// decide is Decide, in a span of its own that says what was decided and
// why: the span is around Decide, which stays pure.
func (r *Runner) decide(ctx context.Context, d *Desired, obs Observed) Action {
	_, span := startSpan(ctx, "decide", attribute.String("plan", d.Plan.Metadata.Name))
	defer span.End()
	a := Decide(d, obs, r.Clock.Now())
	actionAttributes(span, obs.Record.Position, a)
	return a
}

// actionAttributes puts what a decided on a span: its kind, reason and
// state, and the positions it moves from and to.
func actionAttributes(span trace.Span, from plan.Position, a Action) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("action.kind", string(a.Kind)), attribute.String("action.reason", a.Reason),
		attribute.String("action.status", string(a.Status)), attribute.String("action.from", from.String()))
	if a.Kind == Advance || a.Kind == MoveBack || a.Kind == Rollback || a.Kind == Apply || a.Kind == Resume {
		span.SetAttributes(attribute.String("action.to", a.To.String()))
	}
}

// carry hands a, the action decided for v, to OnDecided and carries it
// out. It holds v.ps.mu.
func (r *Runner) carry(ctx context.Context, v *viewed, a Action) (Action, error) {
	d, ps := v.d, v.ps
	ps.quiet = v.quiet
	defer func() { ps.quiet = false }()
	if r.OnDecided != nil {
		r.OnDecided(d, v.obs, a)
	}
	if v.openErr != nil {
		if serr := r.act(ctx, d, ps, a, false); serr != nil {
			if errors.Is(serr, store.ErrConflict) {
				ps.loaded = false
			}
			return a, fmt.Errorf("%w; and recording that: %w", v.openErr, serr)
		}
		return a, v.openErr
	}
	actx, span := startSpan(ctx, "apply", attribute.String("plan", d.Plan.Metadata.Name), attribute.String("action.kind", string(a.Kind)))
	err := r.act(actx, d, ps, a, v.changed)
	spanError(span, err)
	span.End()
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Another writer moved the record: start from the store again
			// next cycle.
			ps.loaded = false
		}
		return a, fmt.Errorf("%s %s: %w", a.Kind, d.Plan.Metadata.Name, err)
	}
	// act saved the record, with the outcomes observe folded in.
	r.removeJobs(ctx, ps, d.Plan.Metadata.Name)
	return a, nil
}

// StepGroup steps the members of one lockstep group together: each is
// observed and decided on alone, DecideGroup makes the actions the
// group's, and then each is carried out. Rollbacks go to OnGroupRollback
// together, after every member's has been applied and recorded. The
// results are in the order of ds.
func (r *Runner) StepGroup(ctx context.Context, ds []*Desired) []Result {
	if r.StepTimeout > 0 {
		var cancel context.CancelFunc
		// One step's time per member: they are observed and moved in turn.
		ctx, cancel = context.WithTimeout(ctx, r.StepTimeout*time.Duration(len(ds)))
		defer cancel()
	}
	// Worked on in name order; the results go back in the order asked.
	order := make([]int, len(ds))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ds[a].Plan.Metadata.Name, ds[b].Plan.Metadata.Name) })
	asked := ds
	ds = make([]*Desired, len(asked))
	for k, i := range order {
		ds[k] = asked[i]
	}
	group := ds[0].Plan.Spec.Group
	ctx, span := startSpan(ctx, "group.step", attribute.String("group", group), attribute.Int("plans", len(ds)))
	defer span.End()
	results := make([]Result, len(ds))
	// Locked in name order, so that two steps of a group never deadlock.
	states := make([]*planState, len(ds))
	for i, d := range ds {
		states[i] = r.state(d.Plan.Metadata.Name)
		states[i].mu.Lock()
		defer states[i].mu.Unlock()
	}
	views := make([]*viewed, len(ds))
	var ms []Member
	var at []int
	for i, d := range ds {
		results[i].Plan = d.Plan.Metadata.Name
		v, err := r.prepare(ctx, d, states[i])
		if err != nil {
			results[i].Err = err
			continue
		}
		views[i] = v
		ms = append(ms, Member{D: d, O: v.obs, A: v.a})
		at = append(at, i)
	}
	if len(ms) < len(ds) {
		// A member that could not be observed holds the group: the
		// others may not move without it, but a rollback still goes.
		for k := range ms {
			if ms[k].A.Kind == Advance || ms[k].A.Kind == Promote {
				ms[k].A = Action{Kind: Wait, Status: ms[k].A.Status, Reason: "group " + group + " moves as one, and a member could not be observed"}
			}
		}
	}
	_, dspan := startSpan(ctx, "decide.group", attribute.String("group", group))
	actions := DecideGroup(group, ms)
	for k, a := range actions {
		dspan.SetAttributes(attribute.String("action."+ms[k].D.Plan.Metadata.Name, string(a.Kind)))
	}
	dspan.End()
	var rolled []*Desired
	var rollActs []Action
	var promoted []*Desired
	var promoActs []Action
	for k, i := range at {
		v := views[i]
		a := actions[k]
		v.quiet = r.OnGroupRollback != nil
		a, err := r.carry(ctx, v, a)
		results[i].Action, results[i].Err = a, err
		switch {
		case err != nil:
		case a.Kind == Rollback || a.Kind == Freeze:
			rolled, rollActs = append(rolled, v.d), append(rollActs, a)
		case a.Kind == Promote:
			promoted, promoActs = append(promoted, v.d), append(promoActs, a)
		}
	}
	if len(rolled) > 0 && r.OnGroupRollback != nil {
		r.OnGroupRollback(ctx, group, rolled, rollActs)
	}
	if len(promoted) == len(ds) && r.OnPromote != nil {
		r.OnPromote(ctx, promoted, promoActs)
	}
	out := make([]Result, len(results))
	for k, i := range order {
		out[i] = results[k]
	}
	return out
}

// removeJobs asks the driver to remove the done jobs whose outcome is
// recorded, when it can; one it fails to remove is tried again next step.
func (r *Runner) removeJobs(ctx context.Context, ps *planState, name string) {
	rm, ok := ps.drv.(drivers.JobRemover)
	if !ok {
		ps.recorded = nil
		return
	}
	var left []string
	for _, id := range ps.recorded {
		if err := rm.RemoveJob(ctx, id); err != nil {
			r.log().WarnContext(ctx, "cannot remove a done job", "plan", name, "job", id, "err", err)
			left = append(left, id)
		}
	}
	ps.recorded = left
}

func sameDriver(a, b *plan.Plan) bool {
	if a == nil || b == nil {
		return false
	}
	x, _ := json.Marshal(a.Spec.Driver)
	y, _ := json.Marshal(b.Spec.Driver)
	return string(x) == string(y)
}

// observe gathers what Decide needs and folds finished jobs and checks into
// the record; changed says whether the record needs saving even if Decide
// only waits.
func (r *Runner) observe(ctx context.Context, d *Desired, ps *planState) (Observed, bool, error) {
	rec := ps.rec
	obs := Observed{}
	changed := false
	// The guardrails first: an asynchronous evaluator starts the
	// measurements due now, so that their cadence, and how soon a breach is
	// seen, does not vary with how long the driver takes to answer.
	// The evaluate span lasts until the readings that came in meanwhile
	// are folded in (Latest, below); the measurements are its children.
	var evaluating trace.Span
	if r.Guards != nil && !rec.Position.IsStart() {
		var ectx context.Context
		ectx, evaluating = startSpan(ctx, "evaluate", attribute.String("plan", d.Plan.Metadata.Name),
			attribute.String("position", rec.Position.String()), attribute.Int("guardrails", len(d.Plan.Spec.Guardrails)))
		readings, err := r.Guards.Evaluate(ectx, d.Plan, Epoch{Position: rec.Position, Since: rec.EnteredAt})
		if err != nil {
			// The evaluator could not run at all: every guardrail is
			// unknown, which onNoData decides about.
			for _, g := range d.Plan.Spec.Guardrails {
				readings = append(readings, Reading{Name: g.Name, Health: Error, Detail: err.Error()})
			}
		}
		obs.Guardrails = readings
	}
	if r.Peers != nil {
		if gs := d.Plan.Gates(); len(gs) > 0 {
			names := make([]string, 0, len(gs))
			for _, g := range gs {
				if !slices.Contains(names, g.Plan) {
					names = append(names, g.Plan)
				}
			}
			obs.Peers = r.Peers(ctx, names)
		}
	}
	octx, ospan := startSpan(ctx, "driver.observe", attribute.String("plan", d.Plan.Metadata.Name))
	state, err := ps.drv.Observe(octx)
	spanError(ospan, err)
	ospan.End()
	obs.Driver, obs.DriverErr = state, err
	if t, ok := ps.drv.(Tolerant); ok {
		obs.Tolerance = t.Tolerance()
	}
	if l, ok := r.Guards.(Latecomers); ok && obs.Guardrails != nil {
		if readings, ok := l.Latest(d.Plan, Epoch{Position: rec.Position, Since: rec.EnteredAt}); ok {
			obs.Guardrails = readings
		}
	}
	if evaluating != nil {
		readingAttributes(evaluating, obs.Guardrails)
		evaluating.End()
	}
	now := r.Clock.Now()

	if job := rec.Job; job != nil && !job.Done && err == nil {
		st, jerr := ps.drv.JobStatus(ctx, job.ID)
		switch {
		case errors.Is(jerr, drivers.ErrJobNotFound):
			// Recorded but never started (a crash in between): start it.
			if step, _, ok := d.step(rec.Position); ok && step.Run != nil {
				if err := ps.drv.StartJob(ctx, job.ID, *step.Run); err != nil {
					return obs, false, fmt.Errorf("restart job %s: %w", job.ID, err)
				}
			}
			obs.Job = &drivers.JobStatus{}
		case jerr != nil:
			return obs, false, fmt.Errorf("status of job %s: %w", job.ID, jerr)
		default:
			obs.Job = &st
			if st.Done {
				j := *job
				j.Done, j.Succeeded, j.Message, j.Logs = true, st.Succeeded, st.Message, st.Logs
				rec.Job, changed = &j, true
				ps.recorded = append(ps.recorded, job.ID)
			}
		}
	}
	for name, c := range rec.Checks {
		if !c.Pending {
			continue
		}
		if c.JobID == "" {
			// A query or HTTP check: its result, once in; started again if
			// this process is not running it (it was started before a
			// restart).
			res, done := r.checkResult(ps, d, name, c.At)
			if done {
				rec.Checks = maps.Clone(rec.Checks)
				rec.Checks[name] = res
				changed = true
			}
			continue
		}
		st, jerr := ps.drv.JobStatus(ctx, c.JobID)
		if jerr != nil || !st.Done {
			continue
		}
		rec.Checks = maps.Clone(rec.Checks)
		rec.Checks[name] = store.CheckResult{Passed: st.Succeeded, Message: st.Message, JobID: c.JobID, At: c.At}
		changed = true
		ps.recorded = append(ps.recorded, c.JobID)
	}

	// Guardrails green without a break since when: the soak counts from
	// the later of this and the time the position was entered.
	green := obs.DriverErr == nil
	for _, g := range obs.Guardrails {
		if g.Health.Under(d.Plan.Spec.Rollback.NoData()) != Healthy {
			green = false
		}
	}
	if ps.watching.IsZero() {
		ps.watching = now
	}
	switch {
	case green && (rec.GreenSince.IsZero() || rec.GreenSince.Before(ps.watching)):
		rec.GreenSince, changed = now, true
	case !green && !rec.GreenSince.IsZero():
		rec.GreenSince, changed = time.Time{}, true
	}
	ps.rec = rec
	obs.Record = rec
	return obs, changed, nil
}

// act carries out a, recording the intent before and the result after any
// change to the workloads.
func (r *Runner) act(ctx context.Context, d *Desired, ps *planState, a Action, changed bool) error {
	x := &acting{d: d, ps: ps, a: a, rec: ps.rec, from: ps.rec.Position, now: r.Clock.Now()}
	if x.rec.Plan == "" {
		x.rec.Plan = d.Plan.Metadata.Name
	}
	switch a.Kind {
	case Wait, Promote:
		// A promotion is the daemon's to commit (OnPromote); the
		// record says the migration holds, and why.
		return r.actWait(ctx, x, changed)
	case Advance, MoveBack, Rollback, Apply:
		return r.actMove(ctx, x)
	case Freeze:
		return r.actFreeze(ctx, x)
	case Checkpoint:
		return r.actCheckpoint(ctx, x)
	case StartJob:
		return r.actStartJob(ctx, x)
	case RunChecks:
		return r.actRunChecks(ctx, x)
	case Decommission:
		return r.actDecommission(ctx, x)
	case Resume:
		return r.actResume(ctx, x)
	case PublishFlags:
		return r.actPublishFlags(ctx, x)
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

// acting is an action being carried out: the plan, its state, the action,
// the record before it and when it began.
type acting struct {
	d   *Desired
	ps  *planState
	a   Action
	rec store.Record // a copy, changed and saved by the action
	// from is where the action began, now when.
	from plan.Position
	now  time.Time
}

// event is an event of the action, from the position it began at to to,
// with data (if any) as JSON.
func (x *acting) event(kind string, to plan.Position, data any) store.Event {
	e := store.Event{Plan: x.rec.Plan, At: x.now, Kind: kind, From: x.from, To: to, Commit: x.d.Commit, Reason: x.a.Reason}
	if data != nil {
		e.Data, _ = json.Marshal(data)
	}
	return e
}

// actWait records a change of state, not every evaluation.
func (r *Runner) actWait(ctx context.Context, x *acting, changed bool) error {
	var events []store.Event
	if x.a.Status != x.rec.Status || x.a.Reason != x.rec.Reason && x.a.Status != StatusProgressing {
		// Record a change of state, not every evaluation.
		if x.a.Status != x.rec.Status {
			events = append(events, x.event(string(Wait), x.from, x.a.Failure))
		}
		// The commit too: a breach held with automatic rollback off
		// waits for a commit newer than the one it happened under,
		// not than the one of the record's last move.
		x.rec.Status, x.rec.Reason, x.rec.Commit, changed = x.a.Status, x.a.Reason, x.d.Commit, true
	}
	if !changed {
		return nil
	}
	return r.save(ctx, x.ps, x.rec, events...)
}

// actMove moves to a.To (or applies it again, after drift), recording the
// intent before the apply and the position entered after.
func (r *Runner) actMove(ctx context.Context, x *acting) error {
	to := x.a.To
	intent := x.rec
	intent.Pending = &to
	intent.Status, intent.Reason, intent.Commit = x.a.Status, x.a.Reason, x.d.Commit
	var events []store.Event
	if x.a.Kind != Apply || x.rec.Pending == nil && to != x.rec.Position {
		events = append(events, x.event(string(x.a.Kind), to, x.a.Failure))
	}
	if x.a.Kind == Advance {
		if step, _, ok := x.d.step(x.from); ok && step.Irreversible {
			intent.NoReturn = &x.from
		}
	}
	if x.a.Kind == MoveBack && x.d.Force && intent.NoReturn != nil && x.d.Plan.Compare(to, *intent.NoReturn) < 0 {
		intent.NoReturn = nil
	}
	if x.a.Kind == Rollback {
		intent.Failed = append(append([]store.Failure(nil), intent.Failed...),
			store.Failure{Position: x.from, Commit: x.d.Commit, Reason: x.a.Failure.What, At: x.now})
	}
	if x.a.Kind == Apply && x.rec.Pending == nil {
		// Drift at the recorded position: apply without moving. Nothing
		// is pending: a crash before the apply repairs again next cycle.
		if err := x.ps.drv.Apply(ctx, x.a.Target); err != nil {
			return fmt.Errorf("apply %s: %w", to, err)
		}
		return r.save(ctx, x.ps, x.rec, x.event("Repair", to, nil))
	}
	if err := r.save(ctx, x.ps, intent, events...); err != nil {
		return err
	}
	if x.a.Restore != "" {
		if err := r.restore(ctx, x.ps, x.a.Restore); err != nil {
			return err
		}
	}
	actx, span := startSpan(ctx, "driver.apply", attribute.String("plan", x.rec.Plan), attribute.String("to", to.String()))
	err := x.ps.drv.Apply(actx, x.a.Target)
	spanError(span, err)
	span.End()
	if err != nil {
		return fmt.Errorf("apply %s: %w", to, err)
	}
	done := x.ps.rec
	entered := r.Clock.Now()
	done.Position, done.Pending, done.EnteredAt = to, nil, entered
	done.Reached = Climb(x.d.Plan, done.Reached, to, entered)
	done.GreenSince = entered
	done.Job, done.Checks = nil, nil
	if done.Decommissioned && !x.a.Target.Decommission {
		done.Decommissioned = false
	}
	entry := []store.Event{{Plan: x.rec.Plan, At: entered, Kind: "Entered", From: x.from, To: to, Commit: x.d.Commit,
		Reason: "entered " + to.String()}}
	if cp, ok := done.Checkpoints[x.a.Restore]; ok {
		done.Checkpoints = maps.Clone(done.Checkpoints)
		cp.RestoredAt = entered
		done.Checkpoints[x.a.Restore] = cp
		entry = append(entry, store.Event{Plan: x.rec.Plan, At: entered, Kind: Restored, From: x.from, To: to, Commit: x.d.Commit,
			Reason: fmt.Sprintf("restored checkpoint %s, taken at %s on %s", cp.Name, cp.Position, cp.At.UTC().Format(time.RFC3339))})
	}
	if err := r.save(ctx, x.ps, done, entry...); err != nil {
		return err
	}
	if x.a.Kind == Rollback && r.OnRollback != nil && !x.ps.quiet {
		r.OnRollback(ctx, x.d, x.a)
	}
	return nil
}

// actFreeze holds the position after a breach past a point of no return.
func (r *Runner) actFreeze(ctx context.Context, x *acting) error {
	x.rec.Status, x.rec.Reason, x.rec.Commit = x.a.Status, x.a.Reason, x.d.Commit
	x.rec.Failed = append(append([]store.Failure(nil), x.rec.Failed...),
		store.Failure{Position: x.from, Commit: x.d.Commit, Reason: x.a.Failure.What, At: x.now})
	if err := r.save(ctx, x.ps, x.rec, x.event(string(Freeze), x.from, x.a.Failure)); err != nil {
		return err
	}
	if r.OnRollback != nil && !x.ps.quiet {
		r.OnRollback(ctx, x.d, x.a)
	}
	return nil
}

// actCheckpoint takes the checkpoint a.Checkpoint of the workloads where
// they stand.
func (r *Runner) actCheckpoint(ctx context.Context, x *acting) error {
	cp, note, err := r.snapshot(ctx, x.ps, x.a.Checkpoint, x.now)
	if err != nil {
		return err
	}
	x.rec.Checkpoints = maps.Clone(x.rec.Checkpoints)
	if x.rec.Checkpoints == nil {
		x.rec.Checkpoints = map[string]store.Checkpoint{}
	}
	x.rec.Checkpoints[x.a.Checkpoint] = cp
	x.rec.Status, x.rec.Reason, x.rec.Commit = x.a.Status, x.a.Reason, x.d.Commit
	ev := x.event(string(Checkpoint), x.from, map[string]string{"checkpoint": x.a.Checkpoint})
	ev.Reason += note
	return r.save(ctx, x.ps, x.rec, ev)
}

// actStartJob records a step's job, then starts it.
func (r *Runner) actStartJob(ctx context.Context, x *acting) error {
	// Record first: if the daemon dies before the job starts, the next
	// cycle finds the id unknown to the driver and starts it.
	x.rec.Job = &store.Job{ID: x.a.JobID, Phase: x.from.Phase, StartedAt: x.now}
	x.rec.Status, x.rec.Reason, x.rec.Commit = x.a.Status, x.a.Reason, x.d.Commit
	if err := r.save(ctx, x.ps, x.rec, x.event(string(StartJob), x.from, map[string]string{"job": x.a.JobID})); err != nil {
		return err
	}
	if err := x.ps.drv.StartJob(ctx, x.a.JobID, *x.a.Run); err != nil {
		return fmt.Errorf("start job %s: %w", x.a.JobID, err)
	}
	return nil
}

// actRunChecks records the step's checks as pending and starts them.
func (r *Runner) actRunChecks(ctx context.Context, x *acting) error {
	x.rec.Checks = maps.Clone(x.rec.Checks)
	if x.rec.Checks == nil {
		x.rec.Checks = map[string]store.CheckResult{}
	}
	var jobs []string
	for _, name := range x.a.Checks {
		c := x.d.Plan.Spec.Verify[name]
		switch {
		case c.Run != nil:
			id := fmt.Sprintf("check-%s-%s-%d", x.rec.Plan, name, x.rec.EnteredAt.Unix())
			x.rec.Checks[name] = store.CheckResult{Pending: true, JobID: id, At: x.now}
			jobs = append(jobs, name)
		case r.Checks == nil:
			x.rec.Checks[name] = store.CheckResult{Message: "no checker for query and HTTP checks is configured", At: x.now}
		default:
			// Run beside the step, never in it: the plan's guardrails
			// go on being judged while the check waits on its source.
			x.rec.Checks[name] = store.CheckResult{Pending: true, At: x.now}
		}
	}
	x.rec.Status, x.rec.Reason, x.rec.Commit = x.a.Status, x.a.Reason, x.d.Commit
	if err := r.save(ctx, x.ps, x.rec, x.event(string(RunChecks), x.from, map[string]any{"checks": x.a.Checks})); err != nil {
		return err
	}
	for _, name := range x.a.Checks {
		if c := x.rec.Checks[name]; c.Pending && c.JobID == "" {
			r.checkResult(x.ps, x.d, name, c.At)
		}
	}
	for _, name := range jobs {
		if err := x.ps.drv.StartJob(ctx, x.rec.Checks[name].JobID, *x.d.Plan.Spec.Verify[name].Run); err != nil {
			return fmt.Errorf("start check %s: %w", name, err)
		}
	}
	return nil
}

// actDecommission records stable decommissioned, then scales it to zero.
func (r *Runner) actDecommission(ctx context.Context, x *acting) error {
	// Record first: a crash after the save finds the workloads short of
	// the recorded state and repairs them forward; a crash after the
	// apply but before a save would find them past it.
	x.rec.Decommissioned = true
	x.rec.Status, x.rec.Reason, x.rec.Commit = x.a.Status, x.a.Reason, x.d.Commit
	if err := r.save(ctx, x.ps, x.rec, x.event(string(Decommission), x.from, nil)); err != nil {
		return err
	}
	if err := x.ps.drv.Apply(ctx, x.a.Target); err != nil {
		return fmt.Errorf("decommission: %w", err)
	}
	return nil
}

// actResume carries a migration on from where its status file says it
// stood.
func (r *Runner) actResume(ctx context.Context, x *acting) error {
	// The record the status file gives, where it stood; the rest of
	// this record (its version, its plan) is the store's. Checkpoints
	// and jobs are not in a status file: they start empty.
	res := *x.d.Resume
	res.Plan, res.Version, res.UpdatedAt = x.rec.Plan, x.rec.Version, time.Time{}
	res.Position, res.Pending = x.a.To, nil
	if len(res.Reached) == 0 {
		res.Reached = Climb(x.d.Plan, nil, x.a.To, res.EnteredAt)
	}
	res.GreenSince = x.now
	res.Reason = x.a.Reason
	// Its state and commit stand: a migration that had rolled back
	// or frozen under a commit still waits for a newer one.
	if res.Status == "" {
		res.Status = x.a.Status
	}
	if res.Commit == "" {
		res.Commit = x.d.Commit
	}
	return r.save(ctx, x.ps, res, x.event(string(Resume), x.a.To, nil))
}

// actPublishFlags publishes the plan's feature flags.
func (r *Runner) actPublishFlags(ctx context.Context, x *acting) error {
	flags := maps.Clone(x.d.Plan.Spec.Features)
	if flags == nil {
		flags = map[string]int{}
	}
	if err := x.ps.drv.PublishFlags(ctx, flags); err != nil {
		return fmt.Errorf("publish flags: %w", err)
	}
	x.rec.Flags = flags
	return r.save(ctx, x.ps, x.rec, x.event(string(PublishFlags), x.from, flags))
}

// checkResult returns the result of the query or HTTP check name started
// at, once it is in, and starts it in the background when it is not
// running. The check is bounded by the Checker's own timeout; its end wakes
// the plan.
func (r *Runner) checkResult(ps *planState, d *Desired, name string, at time.Time) (store.CheckResult, bool) {
	ps.checksMu.Lock()
	defer ps.checksMu.Unlock()
	if c, ok := ps.checks[name]; ok && c.at.Equal(at) {
		if c.done {
			delete(ps.checks, name)
		}
		return c.result, c.done
	}
	chk, ok := d.Plan.Spec.Verify[name]
	if !ok || r.Checks == nil {
		return store.CheckResult{Message: fmt.Sprintf("check %s is no longer in the plan", name), At: at}, true
	}
	if ps.checks == nil {
		ps.checks = map[string]*runningCheck{}
	}
	c := &runningCheck{at: at}
	ps.checks[name] = c
	p, plan := d.Plan, d.Plan.Metadata.Name
	go func() {
		res, err := r.Checks.Check(context.Background(), p, name, chk)
		if err != nil {
			res = store.CheckResult{Message: err.Error()}
		}
		res.Pending, res.At = false, at
		ps.checksMu.Lock()
		c.result, c.done = res, true
		ps.checksMu.Unlock()
		if r.Wake != nil {
			r.Wake(plan)
		}
	}()
	return store.CheckResult{}, false
}

// Restored is the kind of the event that records a checkpoint's snapshot
// restored on a move.
const Restored = "Restored"

// snapshot takes checkpoint name of ps's workloads at now: the driver's
// snapshot, the position and the flags published. A driver that keeps no
// snapshots gives a checkpoint of the position and flags alone; note then
// says so, for the event's reason.
func (r *Runner) snapshot(ctx context.Context, ps *planState, name string, now time.Time) (cp store.Checkpoint, note string, err error) {
	cp = store.Checkpoint{Name: name, Position: ps.rec.Position, At: now, Flags: maps.Clone(ps.rec.Flags)}
	c, ok := ps.drv.(drivers.Checkpointer)
	if !ok {
		return cp, " (the driver keeps no snapshot of the workloads: position and flags only)", nil
	}
	if cp.Data, err = c.Snapshot(ctx); err != nil {
		return store.Checkpoint{}, "", fmt.Errorf("snapshot for checkpoint %s: %w", name, err)
	}
	return cp, "", nil
}

func (r *Runner) restore(ctx context.Context, ps *planState, name string) error {
	cp, ok := ps.rec.Checkpoints[name]
	if !ok {
		return fmt.Errorf("restore checkpoint %s: it was never taken", name)
	}
	c, ok := ps.drv.(drivers.Checkpointer)
	if !ok || len(cp.Data) == 0 {
		return nil // position and flags only: the move and the plan bring them back
	}
	if err := c.Restore(ctx, cp.Data); err != nil {
		return fmt.Errorf("restore checkpoint %s: %w", name, err)
	}
	return nil
}

// save writes rec and events and keeps the saved record.
func (r *Runner) save(ctx context.Context, ps *planState, rec store.Record, events ...store.Event) error {
	rec.UpdatedAt = r.Clock.Now()
	v, err := r.Store.Save(ctx, rec, events...)
	if err != nil {
		return fmt.Errorf("save the record of %s: %w", rec.Plan, err)
	}
	rec.Version = v
	ps.rec = rec
	for _, e := range events {
		r.log().InfoContext(ctx, e.Reason, "plan", rec.Plan, "action", e.Kind, "from", e.From.String(), "to", e.To.String())
	}
	if r.OnSaved != nil && len(events) > 0 {
		r.OnSaved(rec, events)
	}
	return nil
}

// Run steps every plan that source returns, every interval, until ctx ends.
func (r *Runner) Run(ctx context.Context, source func(context.Context) ([]*Desired, error), interval time.Duration, tick clock.Clock) error {
	for {
		desired, err := source(ctx)
		if err != nil {
			r.log().Error("read desired plans", "err", err)
		} else {
			for _, res := range r.Cycle(ctx, desired) {
				if res.Err != nil && ctx.Err() == nil {
					r.log().Error("reconcile", "plan", res.Plan, "err", res.Err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.After(interval):
		}
	}
}

// Checkpoint takes a named snapshot of d's workloads now, between two
// steps of the plan, and records it with description, as a phase's
// checkpoint is taken; a checkpoint of the same name is replaced. It is
// what `state checkpoint` asks the daemon for.
func (r *Runner) Checkpoint(ctx context.Context, d *Desired, name, description string) (store.Checkpoint, error) {
	plan := d.Plan.Metadata.Name
	ps := r.state(plan)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	rec, err := r.Store.Load(ctx, plan)
	if err != nil {
		return store.Checkpoint{}, fmt.Errorf("load the record of %s: %w", plan, err)
	}
	ps.rec, ps.loaded = rec, true
	if err := r.open(ctx, ps, d); err != nil {
		return store.Checkpoint{}, err
	}
	now := r.Clock.Now()
	c, note, err := r.snapshot(ctx, ps, name, now)
	if err != nil {
		return store.Checkpoint{}, fmt.Errorf("checkpoint %s of %s: %w", name, plan, err)
	}
	c.Description = description
	if rec.Plan == "" {
		rec.Plan = plan
	}
	rec.Checkpoints = maps.Clone(rec.Checkpoints)
	if rec.Checkpoints == nil {
		rec.Checkpoints = map[string]store.Checkpoint{}
	}
	rec.Checkpoints[name] = c
	reason := "checkpoint " + name + " taken on request"
	if description != "" {
		reason += ": " + description
	}
	reason += note
	err = r.save(ctx, ps, rec, store.Event{Plan: plan, At: now, Kind: string(Checkpoint), From: rec.Position, To: rec.Position,
		Commit: d.Commit, Reason: reason})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			ps.loaded = false
		}
		return store.Checkpoint{}, err
	}
	return c, nil
}

// Verification is the outcome of one check run on request.
type Verification struct {
	Name    string        `json:"name"`
	Kind    string        `json:"kind"` // run, prometheus or http
	Passed  bool          `json:"passed"`
	Message string        `json:"message,omitempty"`
	Logs    string        `json:"logs,omitempty"`
	Took    time.Duration `json:"took"`
}

// Verify runs the named checks of d's plan now, outside the plan's steps:
// query and HTTP checks through the Checker, jobs through the driver, each
// job waited for up to its run.timeout (or timeout when it sets none),
// polling every poll. It records nothing: it is what `hal9-migrate verify`
// asks for. Unknown names are an error before anything runs.
func (r *Runner) Verify(ctx context.Context, d *Desired, names []string, timeout, poll time.Duration) ([]Verification, error) {
	for _, n := range names {
		if _, ok := d.Plan.Spec.Verify[n]; !ok {
			known := slices.Sorted(maps.Keys(d.Plan.Spec.Verify))
			return nil, fmt.Errorf("%s has no check %q; its checks are %s", d.Plan.Metadata.Name, n, strings.Join(known, ", "))
		}
	}
	drv, err := r.Driver(ctx, d)
	if err != nil {
		return nil, err
	}
	out := make([]Verification, 0, len(names))
	for _, n := range names {
		c := d.Plan.Spec.Verify[n]
		start := r.Clock.Now()
		v := Verification{Name: n}
		switch {
		case c.Run != nil:
			v.Kind = "run"
			v.Passed, v.Message, v.Logs = r.verifyJob(ctx, drv, d, n, *c.Run, timeout, poll)
		case r.Checks == nil:
			v.Kind, v.Message = checkKind(c), "no checker for query and HTTP checks is configured"
		default:
			v.Kind = checkKind(c)
			res, err := r.Checks.Check(ctx, d.Plan, n, c)
			if err != nil {
				v.Message = err.Error()
			} else {
				v.Passed, v.Message = res.Passed, res.Message
			}
		}
		v.Took = r.Clock.Since(start)
		out = append(out, v)
	}
	return out, nil
}

func checkKind(c plan.Check) string {
	if c.Prometheus != nil {
		return "prometheus"
	}
	return "http"
}

// verifyJob runs one job check to completion.
func (r *Runner) verifyJob(ctx context.Context, drv drivers.Driver, d *Desired, name string, run plan.Run, timeout, poll time.Duration) (bool, string, string) {
	if run.Timeout > 0 {
		timeout = run.Timeout.Std()
	}
	id := fmt.Sprintf("verify-%s-%s-%d", d.Plan.Metadata.Name, name, r.Clock.Now().UnixNano())
	if err := drv.StartJob(ctx, id, run); err != nil {
		return false, "start job: " + err.Error(), ""
	}
	if rm, ok := drv.(drivers.JobRemover); ok {
		// The outcome goes back to the caller, and no one asks for this
		// id again: a done job goes once read (a running one stays).
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := rm.RemoveJob(ctx, id); err != nil {
				r.log().Warn("cannot remove a done job", "plan", d.Plan.Metadata.Name, "job", id, "err", err)
			}
		}()
	}
	deadline := r.Clock.Now().Add(timeout)
	for {
		st, err := drv.JobStatus(ctx, id)
		switch {
		case err != nil:
			return false, "job status: " + err.Error(), ""
		case st.Done && st.Succeeded:
			return true, "job " + id + " succeeded", st.Logs
		case st.Done:
			msg := fmt.Sprintf("job %s failed with exit code %d", id, st.ExitCode)
			if st.Message != "" {
				msg += ": " + st.Message
			}
			return false, msg, st.Logs
		case !r.Clock.Now().Before(deadline):
			return false, fmt.Sprintf("job %s did not finish within %s", id, timeout), st.Logs
		}
		select {
		case <-ctx.Done():
			return false, "job " + id + ": " + ctx.Err().Error(), st.Logs
		case <-time.After(poll):
		}
	}
}

// Driver returns d's driver, opening it if need be, without holding the
// plan's lock past that.
func (r *Runner) Driver(ctx context.Context, d *Desired) (drivers.Driver, error) {
	ps := r.state(d.Plan.Metadata.Name)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := r.open(ctx, ps, d); err != nil {
		return nil, err
	}
	return ps.drv, nil
}

// open opens d's driver into ps unless the one it has drives the same
// workloads. It holds ps.mu.
func (r *Runner) open(ctx context.Context, ps *planState, d *Desired) error {
	if ps.drv != nil && (ps.drvFor == d.Plan || sameDriver(ps.drvFor, d.Plan)) {
		return nil
	}
	drv, err := r.Open(ctx, d.Plan)
	if err != nil {
		return fmt.Errorf("open the %s driver of %s: %w", d.Plan.Spec.Driver.Name(), d.Plan.Metadata.Name, err)
	}
	// A driver that holds something for its plan (the Kubernetes one,
	// its place among the objects whose changes wake the plan) lets go of
	// it when replaced.
	if c, ok := ps.drv.(io.Closer); ok {
		_ = c.Close()
	}
	ps.drv, ps.drvFor = drv, d.Plan
	return nil
}
