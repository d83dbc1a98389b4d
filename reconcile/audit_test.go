package reconcile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// The audit tables check Decide against the Semantics of the design with
// plans and positions the main table does not cover: capped waypoints
// that stop being the target, run phases as targets, named rollback
// targets at or after the breach, first phases with steps, single-phase
// plans and 0% targets. Unless a case says otherwise its plan is
// plan/testdata/base.yaml, edited.

// singlePhase is a plan with one phase that goes all the way.
const singlePhase = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: base
spec:
  target:
    phase: rollout
  driver:
    kubernetes:
      traffic: {httpRoute: shop}
      stable: {deployment: shop-v1}
      candidate: {deployment: shop-v2}
  phases:
    - name: rollout
      steps: [10, 50, 100]
      soak: 1h
      checkpoint: pre-rollout
      decommission: {after: 1h}
  guardrails:
    - name: errors
      prometheus: {query: 'sum(rate(errors[1m]))'}
      max: 0.05
      for: 5m
    - name: health
      http: {url: 'http://shop-v2/health'}
      failures: 3
  features:
    new_cart: 10
`

// Edits of base.yaml used below.
var (
	targetFull    = []string{"    phase: canary\n    percentage: 10", "    phase: full"}
	targetMigrate = []string{"    phase: canary\n    percentage: 10", "    phase: migrate"}
	targetShadow  = []string{"    phase: canary\n    percentage: 10", "    phase: shadow"}
	noShadow      = []string{"    - name: shadow\n      mirror: 100\n      soak: 1h\n", ""}
)

func edits(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func TestDecideAudit(t *testing.T) {
	type tc = decideCase
	p := func(phase string, pct int) *plan.Position { x := pos(phase, pct); return &x }
	tests := []tc{
		// Forward.
		{name: "a mirror phase sends no live traffic", rec: fresh(),
			kind: Advance, to: p("shadow", 0), target: &drivers.Target{Mirror: 100}},
		{name: "a run phase keeps the traffic of the phase before it", edits: targetFull,
			rec: at(pos("canary", 25)), now: 2 * time.Hour, kind: Advance, to: p("migrate", 25), target: &drivers.Target{Traffic: 25}},
		{name: "steps [5,10,25,35] target 20: 10 advances to 20", edits: []string{"steps: [5, 10, 25]", "steps: [5, 10, 25, 35]", "percentage: 10", "percentage: 20"},
			rec: at(pos("canary", 10)), now: 2 * time.Hour, kind: Advance, to: p("canary", 20), target: &drivers.Target{Traffic: 20}},
		{name: "steps [5,10,25,35] target 20: 20 is the end", edits: []string{"steps: [5, 10, 25]", "steps: [5, 10, 25, 35]", "percentage: 10", "percentage: 20"},
			rec: at(pos("canary", 20)), now: 100 * time.Hour, kind: Wait, status: StatusHolding, reason: "holding at the target, canary 20%"},
		// A capped waypoint that stops being the target (the target is
		// raised) is a step like any other: it soaks before it is left.
		{name: "a former capped target soaks before the raised target", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 20)), now: time.Minute, kind: Wait, status: StatusProgressing, reason: "soaking at canary 20% for 2h", until: 2 * time.Hour},
		{name: "a former capped target waits for green guardrails", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 20)), now: 3 * time.Hour, obs: func(o *Observed) { o.Guardrails = reading("errors", Pending, 0.07) },
			kind: Wait, reason: "waiting for every guardrail to be healthy at canary 20%"},
		{name: "a former capped target, soaked, advances", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 20)), now: 2 * time.Hour, kind: Advance, to: p("canary", 25)},
		// ... and a breach there rolls back to the step before it, as
		// previous-step says, not to start.
		{name: "a breach at a former capped target rolls back one step", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 20)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: p("canary", 10), status: StatusRolledBack},
		{name: "a first phase with steps and a checkpoint: checkpoint at start", edits: noShadow,
			rec: fresh(), kind: Checkpoint, reason: "taking checkpoint pre-canary before canary"},
		{name: "a first phase with steps: start advances to its first step", edits: noShadow,
			rec: fresh(func(r *store.Record) {
				r.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", At: t0}}
			}),
			kind: Advance, to: p("canary", 5), target: &drivers.Target{Traffic: 5}, reason: "starting the migration at canary 5%"},
		{name: "a first phase with steps: a breach at its first step goes to start", edits: noShadow,
			rec: at(pos("canary", 5)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: &plan.Start, target: &drivers.Target{}},
		{name: "a 0% target in a steps phase takes no traffic", edits: []string{"percentage: 10", "percentage: 0"},
			rec: at(pos("shadow", 0)), now: time.Hour, obs: func(o *Observed) {
				o.Record.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", Position: pos("shadow", 0), At: t0.Add(time.Hour)}}
			}, kind: Advance, to: p("canary", 0), target: &drivers.Target{}},
		{name: "a 0% target holds there", edits: []string{"percentage: 10", "percentage: 0"},
			rec: at(pos("canary", 0)), now: 100 * time.Hour, kind: Wait, status: StatusHolding},

		// A run phase as the target: its job runs to completion there too,
		// and its checks run; then it holds.
		{name: "a run phase as the target starts its job", edits: targetMigrate,
			rec: at(pos("migrate", 25)), kind: StartJob, reason: "starting the job of migrate"},
		{name: "a run phase as the target: the job times out", edits: targetMigrate,
			rec: at(pos("migrate", 25), withJob(false, false)), obs: func(o *Observed) { o.Job = &drivers.JobStatus{} },
			now: 30 * time.Minute, kind: Rollback, to: p("canary", 25), reason: "timed out after 30m"},
		{name: "a run phase as the target: the job succeeded, its checks run", edits: targetMigrate,
			rec: at(pos("migrate", 25), withJob(true, true)), kind: RunChecks},
		{name: "a run phase as the target: done, it holds", edits: targetMigrate,
			rec:  at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Passed: true, At: t0})),
			kind: Wait, status: StatusHolding, reason: "holding at the target, migrate 25%"},
		// The job of an irreversible phase has run and been verified: the
		// point of no return is passed even though the phase was never
		// left, so a lowered target does not cross it without --force.
		{name: "an irreversible run phase done at the target is a point of no return", edits: targetShadow,
			rec:  at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Passed: true, At: t0})),
			kind: Wait, status: StatusFrozen, reason: "needs rollback --force"},
		{name: "an irreversible run phase whose job has not run can be left backward", edits: targetShadow,
			rec: at(pos("migrate", 25), withJob(false, false)), kind: MoveBack, to: p("shadow", 0)},

		// Backward.
		{name: "a lowered target moves back without waiting for the soak", edits: []string{"percentage: 10", "percentage: 5"},
			rec: at(pos("canary", 25)), now: time.Minute, kind: MoveBack, to: p("canary", 5), target: &drivers.Target{Traffic: 5}},
		{name: "a lowered target moves back even while a guardrail is pending", edits: []string{"percentage: 10", "percentage: 5"},
			rec: at(pos("canary", 25)), obs: func(o *Observed) { o.Guardrails = reading("errors", Pending, 0.07) },
			kind: MoveBack, to: p("canary", 5)},
		{name: "a lowered target stops at the recorded point of no return", edits: targetShadow,
			rec: at(pos("full", 100), noReturn), kind: MoveBack, to: p("migrate", 25)},
		{name: "a target lowered to start-ish shadow from canary", edits: targetShadow,
			rec: at(pos("canary", 10)), kind: MoveBack, to: p("shadow", 0), target: &drivers.Target{Mirror: 100}},

		// Breach.
		{name: "rollback to a named phase behind: its first step", edits: []string{"to: previous-step", "to: canary", "percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 25)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: p("canary", 5)},
		// A named phase that the breach happens at the first step of, or
		// before, is not behind: there is no going back to it. The design
		// does not say; the step before is the nearest position that is
		// behind, and what an operator who named a phase to fall back to
		// (not start) means.
		{name: "rollback to the named phase at its first step: the step before", edits: []string{"to: previous-step", "to: canary"},
			rec: at(pos("canary", 5)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: p("shadow", 0)},
		{name: "rollback to a named phase ahead: the step before", edits: []string{"to: previous-step", "to: full"},
			rec: at(pos("canary", 10)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: p("canary", 5)},
		// With the named phase right after the point of no return, a breach
		// at its first step goes to the previous step, which is the point
		// of no return: it freezes in place, as any breach past it does.
		{name: "rollback to a named phase after a point of no return, at its first step", edits: edits(targetFull, []string{"to: previous-step", "to: full"}),
			rec: at(pos("full", 100), noReturn), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Freeze},
		{name: "rollback to an irreversible phase that completed is allowed", edits: edits(targetFull, []string{"to: previous-step", "to: migrate"}),
			rec: at(pos("full", 100), noReturn), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Rollback, to: p("migrate", 25)},
		{name: "a breach in a mirror phase rolls back to start", rec: at(pos("shadow", 0)),
			obs:  func(o *Observed) { o.Guardrails = reading("health", Breached, 0) },
			kind: Rollback, to: &plan.Start, target: &drivers.Target{}},
		{name: "no breach is judged at start", rec: fresh(),
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Advance, to: p("shadow", 0)},
		{name: "a query error rolls back with onNoData rollback", edits: []string{"onNoData: hold", "onNoData: rollback"},
			rec: at(pos("canary", 10)), obs: func(o *Observed) { o.Guardrails = reading("errors", Error, 0) },
			kind: Rollback, to: p("canary", 5), reason: "cannot be evaluated (onNoData: rollback)"},
		{name: "a breach past the point of no return freezes, automatic rollback or not", edits: edits(targetFull, []string{"to: previous-step", "to: start"}),
			rec: at(pos("full", 100), noReturn), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Freeze, status: StatusFrozen},
		{name: "frozen, a newer commit with healthy guardrails holds at the target", edits: targetFull, commit: "c2",
			rec:  at(pos("full", 100), noReturn, func(r *store.Record) { r.Status, r.Reason, r.Decommissioned = StatusFrozen, "frozen", true }),
			obs:  func(o *Observed) { o.Driver.Decommissioned = true },
			kind: Wait, status: StatusCompleted},
		{name: "a failed position is entered again under a newer commit", commit: "c2", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 10), func(r *store.Record) {
				r.Status = StatusRolledBack
				r.Failed = []store.Failure{{Position: pos("canary", 25), Commit: "c1", Reason: "breach"}}
			}), now: 2 * time.Hour, kind: Advance, to: p("canary", 25)},
		{name: "a failed position is not entered under the same commit, even after the status moved on", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 10), func(r *store.Record) {
				r.Failed = []store.Failure{{Position: pos("canary", 25), Commit: "c1", Reason: "breach"}}
			}), now: 20 * time.Hour, kind: Wait, status: StatusWaiting},

		// Decommission.
		{name: "decommission waits for green guardrails", edits: targetFull,
			rec: at(pos("full", 100), noReturn), now: 2 * time.Hour, obs: func(o *Observed) { o.Guardrails = reading("errors", Pending, 0.07) },
			kind: Wait, status: StatusHolding},

		// A rollback from a decommissioned full 100% interrupted between
		// its record and its apply is finished with stable scaled up: the
		// record still says decommissioned until the move is applied.
		{name: "an interrupted rollback from a decommissioned position scales stable up", edits: targetFull,
			rec: at(pos("full", 100), noReturn, func(r *store.Record) {
				r.Decommissioned = true
				to := pos("migrate", 25)
				r.Pending = &to
			}),
			kind: Apply, to: p("migrate", 25), target: &drivers.Target{Traffic: 25}},

		// A single-phase plan.
		{name: "single phase: start enters the first step after the checkpoint", src: singlePhase,
			rec: fresh(func(r *store.Record) {
				r.Checkpoints = map[string]store.Checkpoint{"pre-rollout": {Name: "pre-rollout", At: t0}}
			}),
			kind: Advance, to: p("rollout", 10), target: &drivers.Target{Traffic: 10}},
		{name: "single phase: a breach at the first step goes to start", src: singlePhase,
			rec: at(pos("rollout", 10)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Rollback, to: &plan.Start},
		{name: "single phase: steps soak", src: singlePhase, rec: at(pos("rollout", 50)), now: 59 * time.Minute,
			kind: Wait, status: StatusProgressing, until: time.Hour},
		{name: "single phase: decommission at its end", src: singlePhase, rec: at(pos("rollout", 100)), now: time.Hour,
			kind: Decommission, status: StatusCompleted, target: &drivers.Target{Traffic: 100, Decommission: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// planFrom validates a whole plan source, edited: each pair of edits
// replaces the first occurrence of its old text with its new.
func planFrom(t testing.TB, src string, edits ...string) *plan.Plan {
	t.Helper()
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(src, edits[i]) {
			t.Fatalf("plan has no %q", edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	pl, err := v.ValidateOne(plan.Source{Path: "base.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// TestSoakRestartsAfterABlip: a guardrail that goes over its bound for
// a while (Pending) during a soak, then back, restarts the soak: the step
// holds `soak` with every guardrail green, without a break.
func TestSoakRestartsAfterABlip(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 5) && r.Pending == nil })
	entered, _ := e.store.Load(context.Background(), "base")

	e.clock.SetTime(entered.EnteredAt.Add(90 * time.Minute))
	e.guards.readings = reading("errors", Pending, 0.07)
	if a, err := e.run.Step(context.Background(), d); err != nil || a.Kind != Wait {
		t.Fatalf("pending: %s %v", a.Kind, err)
	}
	e.clock.Step(time.Minute)
	e.guards.readings = healthy()
	greenAgain := e.clock.Now()
	for _, after := range []time.Duration{0, 30 * time.Minute, 2*time.Hour - time.Second} {
		e.clock.SetTime(greenAgain.Add(after))
		a, err := e.run.Step(context.Background(), d)
		if err != nil || a.Kind != Wait {
			t.Fatalf("%v after the blip: %s %s %v", after, a.Kind, a.Reason, err)
		}
		if !a.Until.Equal(greenAgain.Add(2 * time.Hour)) {
			t.Errorf("%v after the blip: soak ends %v, want %v", after, a.Until, greenAgain.Add(2*time.Hour))
		}
	}
	e.clock.SetTime(greenAgain.Add(2 * time.Hour))
	if a, err := e.run.Step(context.Background(), d); err != nil || a.Kind != Advance || a.To != pos("canary", 10) {
		t.Fatalf("soaked again: %s %s %v", a.Kind, a.Reason, err)
	}
}

// TestBreachHeldWithoutAutomaticRollback: with rollback.automatic false a
// breach holds the position with status Breached; once the guardrail is
// healthy again the migration still waits for a newer commit, even when the
// record was last moved under an older one (the human commit that
// followed changed nothing the record tracks).
func TestBreachHeldWithoutAutomaticRollback(t *testing.T) {
	e := newEngine(t)
	manual := []string{"    to: previous-step", "    automatic: false\n    to: previous-step", "percentage: 10", "percentage: 25"}
	d1 := NewDesired(loadPlan(t, manual...), "c1")
	e.until(t, d1, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 5) && r.Pending == nil })

	d2 := NewDesired(loadPlan(t, manual...), "c2") // a human commit elsewhere
	e.guards.readings = reading("errors", Breached, 0.2)
	a, err := e.run.Step(context.Background(), d2)
	if err != nil || a.Kind != Wait || a.Status != StatusBreached {
		t.Fatalf("breach: %s %s %s %v", a.Kind, a.Status, a.Reason, err)
	}
	e.guards.readings = healthy()
	e.clock.Step(10 * time.Hour)
	for range 3 {
		a, err = e.run.Step(context.Background(), d2)
		if err != nil || a.Kind != Wait || a.Status != StatusBreached {
			t.Fatalf("healthy again under the same commit: %s %s %s %v", a.Kind, a.Status, a.Reason, err)
		}
	}
	// A newer commit moves on once the step has soaked again.
	e.clock.Step(2 * time.Hour)
	d3 := NewDesired(loadPlan(t, manual...), "c3")
	if a, err = e.run.Step(context.Background(), d3); err != nil || a.Kind != Advance {
		t.Fatalf("a newer commit: %s %s %v", a.Kind, a.Reason, err)
	}
}

// TestRunTargetReachesItsPointOfNoReturn walks a plan whose target is its
// irreversible run phase: the job runs, its checks pass, and a revert of the
// target afterwards stops at the point of no return.
func TestRunTargetReachesItsPointOfNoReturn(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t, targetMigrate...), "c1")
	rec := e.until(t, d, 10*time.Minute, 400, func(r store.Record) bool {
		return r.Position == pos("migrate", 25) && r.Status == StatusHolding
	})
	if rec.Job == nil || !rec.Job.Done || !rec.Job.Succeeded {
		t.Fatalf("holding at the run phase without its job done: %+v", rec.Job)
	}
	if c, ok := rec.Checks["integrity"]; !ok || !c.Passed {
		t.Fatalf("holding at the run phase without its checks: %+v", rec.Checks)
	}
	back := NewDesired(loadPlan(t, targetShadow...), "c2")
	a, err := e.run.Step(context.Background(), back)
	if err != nil || a.Kind != Wait || a.Status != StatusFrozen {
		t.Fatalf("revert past the completed migration: %s %s %v", a.Kind, a.Reason, err)
	}
	if s := e.fake.Driver("base").State(); s.Traffic != 25 {
		t.Errorf("traffic %d after the revert, want 25", s.Traffic)
	}
}
