package reconcile

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// The plan of these tests (plan/testdata/base.yaml): shadow (mirror 100,
// soak 1h); canary [5, 10, 25] (soak 2h, checkpoint pre-canary); migrate
// (a job, timeout 30m, verify integrity, irreversible); full [100]
// (decommission after 1h). Guardrails errors and health; rollback to the
// previous step, onNoData hold. Target canary 10.

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func loadPlan(t testing.TB, edits ...string) *plan.Plan {
	t.Helper()
	b, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return planFrom(t, string(b), edits...)
}

func pos(phase string, pct int) plan.Position { return plan.Position{Phase: phase, Percentage: pct} }

// fresh is the record of a plan that never moved, its flags published.
func fresh(mutate ...func(*store.Record)) store.Record {
	rec := store.Record{Plan: "base", Flags: map[string]int{"new_cart": 10}}
	for _, m := range mutate {
		m(&rec)
	}
	return rec
}

// at returns a record at p, entered at t0, with the plan's flags published
// and the driver in step, under commit c1.
func at(p plan.Position, mutate ...func(*store.Record)) store.Record {
	rec := store.Record{Plan: "base", Position: p, EnteredAt: t0, GreenSince: t0, Commit: "c1",
		Status: StatusProgressing, Flags: map[string]int{"new_cart": 10}}
	for _, m := range mutate {
		m(&rec)
	}
	return rec
}

func healthy() []Reading {
	return []Reading{{Name: "errors", Health: Healthy, Value: 0.01}, {Name: "health", Health: Healthy}}
}

func reading(name string, h Health, v float64) []Reading {
	rs := healthy()
	for i := range rs {
		if rs[i].Name == name {
			rs[i].Health, rs[i].Value, rs[i].Bound = h, v, "> 0.05 for 5m"
		}
	}
	return rs
}

func TestDecide(t *testing.T) {
	type tc = decideCase
	canary := func(p int) *plan.Position { x := pos("canary", p); return &x }
	tests := []tc{
		{name: "a new plan publishes its flags before anything else", rec: store.Record{Plan: "base"},
			kind: PublishFlags, reason: "publishing the plan's feature flags"},
		{name: "a new plan starts at its first step", rec: fresh(),
			kind: Advance, to: &plan.Position{Phase: "shadow"}, reason: "starting the migration at shadow 0%"},
		{name: "no record, the workloads where the status file says: resume there", rec: store.Record{Plan: "base"},
			resume: &store.Record{Position: pos("canary", 10), EnteredAt: t0.Add(-time.Hour), Status: StatusHolding},
			obs:    func(o *Observed) { o.Driver.Traffic = 10 },
			kind:   Resume, to: canary(10), reason: "the workloads stand at canary 10% where it last reported itself"},
		{name: "only waits saved while the workloads were out of sight: resume still", rec: store.Record{Plan: "base", Version: 2, Status: StatusWaiting},
			resume: &store.Record{Position: pos("canary", 10), EnteredAt: t0.Add(-time.Hour), Status: StatusHolding},
			obs:    func(o *Observed) { o.Driver.Traffic = 10 },
			kind:   Resume, to: canary(10)},
		{name: "no record, the workloads elsewhere than the status file says: start", rec: fresh(),
			resume: &store.Record{Position: pos("canary", 10), EnteredAt: t0.Add(-time.Hour)},
			kind:   Advance, to: &plan.Position{Phase: "shadow"}},
		{name: "a record: the status file is not read", rec: at(pos("canary", 5), func(r *store.Record) { r.Version = 3 }),
			resume: &store.Record{Position: pos("canary", 10), EnteredAt: t0.Add(-time.Hour)},
			obs:    func(o *Observed) { o.Driver.Traffic = 10 },
			kind:   Apply, to: canary(5), reason: "the workloads drifted"},
		{name: "soak not over", rec: at(pos("shadow", 0)), now: time.Hour - time.Nanosecond,
			kind: Wait, status: StatusProgressing, reason: "soaking at shadow 0% for 1h", until: time.Hour},
		{name: "soak over: checkpoint before the phase that declares one", rec: at(pos("shadow", 0)), now: time.Hour,
			kind: Checkpoint, reason: "taking checkpoint pre-canary before canary"},
		{name: "checkpoint taken for this entry: advance", rec: at(pos("shadow", 0), func(r *store.Record) {
			r.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", Position: pos("shadow", 0), At: t0.Add(time.Hour)}}
		}), now: time.Hour, kind: Advance, to: canary(5), reason: "shadow 0% held for 1h with every guardrail healthy; advancing to canary 5%"},
		{name: "inside the phase at 0% its checkpoint is not taken again", edits: []string{"percentage: 10", "percentage: 25"},
			rec: at(pos("canary", 0), func(r *store.Record) {
				r.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", Position: pos("shadow", 0), At: t0.Add(-time.Hour)}}
			}), now: 2 * time.Hour, kind: Advance, to: canary(5)},
		{name: "an old checkpoint is taken again", rec: at(pos("shadow", 0), func(r *store.Record) {
			r.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", Position: pos("shadow", 0), At: t0.Add(-time.Hour)}}
		}), now: time.Hour, kind: Checkpoint},
		{name: "guardrails green only since later: the soak counts from then", rec: at(pos("canary", 5), func(r *store.Record) {
			r.GreenSince = t0.Add(30 * time.Minute)
		}), now: 2 * time.Hour, kind: Wait, reason: "soaking at canary 5% for 2h", until: 150 * time.Minute},
		{name: "soak over within a phase", rec: at(pos("canary", 5)), now: 2 * time.Hour, kind: Advance, to: canary(10)},
		{name: "a pending guardrail holds", rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Pending, 0.07) },
			kind: Wait, reason: "waiting for every guardrail to be healthy at canary 5% (errors Pending)"},
		{name: "a breach rolls back to the previous step", rec: at(pos("canary", 10)), now: time.Minute,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: canary(5), status: StatusRolledBack,
			reason: "guardrail errors is 0.07, > 0.05 for 5m at canary 10%; rolling back to canary 5%"},
		{name: "a breach's value reads in four digits", rec: at(pos("canary", 10)), now: time.Minute,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.4430379746835443) },
			kind: Rollback, to: canary(5), status: StatusRolledBack,
			reason: "guardrail errors is 0.443, > 0.05 for 5m at canary 10%; rolling back to canary 5%"},
		{name: "no data holds with onNoData hold", rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", NoData, 0) },
			kind: Wait, reason: "errors NoData"},
		{name: "a query error holds with onNoData hold", rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Error, 0) },
			kind: Wait, reason: "errors Error"},
		{name: "no data rolls back with onNoData rollback", edits: []string{"onNoData: hold", "onNoData: rollback"},
			rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", NoData, 0) },
			kind: Rollback, to: &plan.Position{Phase: "shadow"}, reason: "guardrail errors has no data"},
		{name: "no data is ignored with onNoData ignore", edits: []string{"onNoData: hold", "onNoData: ignore"},
			rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", NoData, 0) },
			kind: Advance, to: canary(10)},
		{name: "automatic rollback off: a breach holds", edits: []string{"    to: previous-step", "    automatic: false\n    to: previous-step"},
			rec: at(pos("canary", 10)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Wait, status: StatusBreached, reason: "automatic rollback is off"},
		{name: "rollback to start", edits: []string{"to: previous-step", "to: start"},
			rec: at(pos("canary", 10)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.07) },
			kind: Rollback, to: &plan.Start},
		{name: "rolled back: hold until a newer commit", rec: at(pos("canary", 5), func(r *store.Record) {
			r.Status, r.Reason = StatusRolledBack, "guardrail errors breached"
		}), now: 10 * time.Hour, kind: Wait, status: StatusRolledBack, reason: "guardrail errors breached"},
		{name: "rolled back: a newer commit moves on", commit: "c2", rec: at(pos("canary", 5), func(r *store.Record) {
			r.Status = StatusRolledBack
			r.Failed = []store.Failure{{Position: pos("canary", 10), Commit: "c1", Reason: "breach"}}
		}), now: 10 * time.Hour, kind: Advance, to: canary(10)},
		{name: "a failed position is not entered again under the same commit", rec: at(pos("canary", 5), func(r *store.Record) {
			r.Failed = []store.Failure{{Position: pos("canary", 10), Commit: "c1", Reason: "breach"}}
		}), now: 10 * time.Hour, kind: Wait, reason: "canary 10% failed under commit c1 (breach); waiting for a newer commit"},
		{name: "a lowered target moves straight back", edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"},
			rec: at(pos("canary", 25)), kind: MoveBack, to: &plan.Position{Phase: "shadow"}, reason: "rollback by commit c1: target lowered to shadow 0%"},
		{name: "a lowered target stops at a completed point of no return", edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"},
			rec: at(pos("full", 100)), kind: MoveBack, to: &plan.Position{Phase: "migrate", Percentage: 25}},
		{name: "at the point of no return a lower target waits for --force", edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"},
			rec: at(pos("migrate", 25), noReturn), kind: Wait, status: StatusFrozen, reason: "needs rollback --force"},
		{name: "an irreversible phase not completed yet can be left backward", edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"},
			rec: at(pos("migrate", 25)), kind: MoveBack, to: &plan.Position{Phase: "shadow"}},
		{name: "back at a completed point of no return, a breach freezes", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), noReturn), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Freeze},
		{name: "back at a completed point of no return, its job is not run again", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), noReturn), kind: Advance, to: &plan.Position{Phase: "full", Percentage: 100}},
		{name: "forced past the point of no return", edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"}, force: true,
			rec: at(pos("full", 100)), kind: MoveBack, to: &plan.Position{Phase: "shadow"}, reason: "forced past the point of no return migrate"},
		{name: "a breach past the point of no return freezes", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full", "to: previous-step", "to: start"},
			rec: at(pos("full", 100)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Freeze, status: StatusFrozen, reason: "past the point of no return: holding the position"},
		{name: "past the point of no return a breach freezes in place, not back to it", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("full", 100)), obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Freeze, status: StatusFrozen},
		{name: "frozen stays frozen", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full", "to: previous-step", "to: start"},
			rec:  at(pos("full", 100), func(r *store.Record) { r.Status, r.Reason = StatusFrozen, "frozen" }),
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Wait, status: StatusFrozen},
		{name: "entering a run phase starts its job", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25)), kind: StartJob, reason: "starting the job of migrate (migrator:1)"},
		{name: "the job runs", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(false, false)), obs: func(o *Observed) { o.Job = &drivers.JobStatus{} },
			now: 29 * time.Minute, kind: Wait, reason: "waiting for the job of migrate"},
		{name: "the job timed out", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(false, false)), obs: func(o *Observed) { o.Job = &drivers.JobStatus{} },
			now: 30 * time.Minute, kind: Rollback, to: canary(25), reason: "the job of migrate timed out after 30m"},
		{name: "the job failed", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(false, false)), obs: func(o *Observed) { o.Job = &drivers.JobStatus{Done: true, Message: "exit 3"} },
			kind: Rollback, to: canary(25), reason: "the job of migrate failed: exit 3"},
		{name: "the job succeeded: run the checks", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(true, true)), kind: RunChecks, reason: "running checks integrity before leaving migrate 25%"},
		{name: "checks from before the step do not count", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Passed: true, At: t0.Add(-time.Minute)})), kind: RunChecks},
		{name: "a pending check holds", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Pending: true, At: t0})), kind: Wait, reason: "waiting for the checks"},
		{name: "a failed check rolls back", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec:  at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Message: "3 rows differ", At: t0})),
			kind: Rollback, to: canary(25), reason: "check integrity failed: 3 rows differ"},
		{name: "checks passed: advance past the run phase", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec:  at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Passed: true, At: t0})),
			kind: Advance, to: &plan.Position{Phase: "full", Percentage: 100}},
		{name: "the target caps the phase's steps", edits: []string{"percentage: 10", "percentage: 20"},
			rec: at(pos("canary", 10)), now: 2 * time.Hour, kind: Advance, to: canary(20)},
		{name: "at target", rec: at(pos("canary", 10)), now: 100 * time.Hour, kind: Wait, status: StatusHolding, reason: "holding at the target, canary 10%"},
		{name: "at target with flags to publish", rec: at(pos("canary", 10), func(r *store.Record) { r.Flags = nil }), kind: PublishFlags},
		{name: "flags follow their commit while a step soaks", rec: at(pos("canary", 5), func(r *store.Record) { r.Flags = map[string]int{"new_cart": 50} }),
			now: time.Hour, kind: PublishFlags},
		{name: "flags follow their commit after a rollback", rec: at(pos("canary", 5), func(r *store.Record) {
			r.Status, r.Flags = StatusRolledBack, map[string]int{"new_cart": 50}
		}), kind: PublishFlags},
		{name: "a restore on the way forward: from start, after a rollback there, to where the checkpoint was taken",
			edits: []string{"    phase: canary\n    percentage: 10", "    phase: shadow"}, restore: "pre-canary", commit: "c2",
			rec: fresh(func(r *store.Record) {
				r.Status, r.Commit, r.EnteredAt = StatusRolledBack, "c1", t0
				r.Checkpoints = map[string]store.Checkpoint{"pre-canary": {Name: "pre-canary", Position: pos("shadow", 0), At: t0.Add(-time.Hour)}}
			}),
			kind: Advance, to: &plan.Position{Phase: "shadow"}, reason: "restoring checkpoint pre-canary"},
		{name: "a breach goes before the flags", rec: at(pos("canary", 5), func(r *store.Record) { r.Flags = nil }),
			obs: func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) }, kind: Rollback},
		{name: "decommission not yet due", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("full", 100)), now: 59 * time.Minute, kind: Wait, reason: "stable is decommissioned at 2026-11-01T13:00:00Z"},
		{name: "decommission due", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("full", 100)), now: time.Hour, kind: Decommission, status: StatusCompleted},
		{name: "a target short of the last phase's end never decommissions", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full\n    percentage: 50", "steps: [100]", "steps: [50, 100]"},
			rec: at(pos("full", 50)), now: 100 * time.Hour, kind: Wait, status: StatusHolding, reason: "holding at the target, full 50%"},
		{name: "decommissioned: completed", edits: []string{"    phase: canary\n    percentage: 10", "    phase: full"},
			rec: at(pos("full", 100), func(r *store.Record) { r.Decommissioned = true }),
			obs: func(o *Observed) { o.Driver.Decommissioned = true },
			now: 2 * time.Hour, kind: Wait, status: StatusCompleted},
		{name: "an interrupted move is finished first", rec: at(pos("canary", 5), func(r *store.Record) { p := pos("canary", 10); r.Pending = &p }),
			kind: Apply, to: canary(10), reason: "finishing the move to canary 10%"},
		{name: "drift is repaired", rec: at(pos("canary", 10)), obs: func(o *Observed) { o.Driver.Traffic = 0 },
			kind: Apply, to: canary(10), reason: "the workloads drifted: traffic 0% mirror 0%, want 10% mirror 0% at canary 10%"},
		{name: "replicas set for the step and starting are not drift", rec: at(pos("canary", 5)), now: time.Minute,
			obs:  startingReplicas,
			kind: Wait, status: StatusProgressing, reason: "waiting for the replicas of canary 5% to be ready"},
		{name: "replicas starting: a breach still rolls back", rec: at(pos("canary", 5)), now: time.Minute,
			obs:  func(o *Observed) { startingReplicas(o); o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Rollback},
		{name: "replicas starting: the step is not left", rec: at(pos("canary", 5)), now: 100 * time.Hour,
			obs:  func(o *Observed) { startingReplicas(o); o.Driver.StableReplicas, o.Driver.StableReady = 9, 9 },
			kind: Wait, status: StatusProgressing, reason: "waiting for the replicas of canary 5% to be ready: stable 9/9, candidate 0/1"},
		{name: "replicas not as the step wants are drift", rec: at(pos("canary", 5)),
			obs:  func(o *Observed) { startingReplicas(o); o.Driver.CandidateReplicas = 2 },
			kind: Apply, reason: "the workloads drifted"},
		{name: "drift within the driver's tolerance is not", rec: at(pos("canary", 10)), now: 100 * time.Hour,
			obs: func(o *Observed) { o.Driver.Traffic, o.Tolerance = 12, 5 }, kind: Wait, status: StatusHolding},
		{name: "a driver that cannot be observed changes nothing", rec: at(pos("canary", 5)), now: 3 * time.Hour,
			obs:  func(o *Observed) { o.DriverErr = errors.New("connection refused") },
			kind: Wait, status: StatusWaiting, reason: "cannot observe the workloads: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// decideCase is one row of a Decide table: a plan, a record and what the
// driver and guardrails show, at a moment; and what Decide must answer.
type decideCase struct {
	name    string
	src     string   // a whole plan instead of base.yaml
	edits   []string // plan edits
	commit  string   // desired commit, c1 by default
	force   bool
	restore string        // Desired.Restore
	resume  *store.Record // Desired.Resume
	rec     store.Record
	obs     func(*Observed)
	now     time.Duration // after t0
	kind    Kind
	to      *plan.Position
	target  *drivers.Target // what the driver must be told, when set
	status  string
	reason  string        // a part of the reason
	until   time.Duration // after t0, for a Wait that ends on its own
}

func (tt decideCase) run(t *testing.T) {
	var p *plan.Plan
	if tt.src != "" {
		p = planFrom(t, tt.src, tt.edits...)
	} else {
		p = loadPlan(t, tt.edits...)
	}
	commit := tt.commit
	if commit == "" {
		commit = "c1"
	}
	d := NewDesired(p, commit)
	d.Force = tt.force
	d.Restore = tt.restore
	d.Resume = tt.resume
	o := Observed{Record: tt.rec, Guardrails: healthy()}
	o.Driver = stateAt(d, tt.rec)
	if tt.obs != nil {
		tt.obs(&o)
	}
	a := Decide(d, o, t0.Add(tt.now))
	if a.Kind != tt.kind {
		t.Fatalf("kind %s, want %s (reason: %s)", a.Kind, tt.kind, a.Reason)
	}
	if a.Reason == "" {
		t.Errorf("%s without a reason", a.Kind)
	}
	if tt.to != nil && a.To != *tt.to {
		t.Errorf("to %v, want %v (reason: %s)", a.To, *tt.to, a.Reason)
	}
	if tt.target != nil && a.Target != *tt.target {
		t.Errorf("driver target %+v, want %+v", a.Target, *tt.target)
	}
	if tt.status != "" && a.Status != tt.status {
		t.Errorf("status %s, want %s (reason: %s)", a.Status, tt.status, a.Reason)
	}
	if !strings.Contains(a.Reason, tt.reason) {
		t.Errorf("reason %q, want it to contain %q", a.Reason, tt.reason)
	}
	if tt.until != 0 && !a.Until.Equal(t0.Add(tt.until)) {
		t.Errorf("until %v, want %v", a.Until, t0.Add(tt.until))
	}
	if (a.Kind == Rollback || a.Kind == Freeze) && a.Failure == nil {
		t.Errorf("%s without a Failure", a.Kind)
	}
}

// stateAt is what a driver that did its job shows at the record's position.
func stateAt(d *Desired, rec store.Record) drivers.State {
	t := d.targetOf(rec.Position, rec.Decommissioned)
	return drivers.State{Traffic: t.Traffic, Mirror: t.Mirror, Decommissioned: t.Decommission}
}

func noReturn(r *store.Record) { p := pos("migrate", 25); r.NoReturn = &p }

func withJob(done, ok bool) func(*store.Record) {
	return func(r *store.Record) {
		r.Job = &store.Job{ID: JobID("base", "migrate", r.EnteredAt), Phase: "migrate", StartedAt: r.EnteredAt, Done: done, Succeeded: ok}
	}
}

func withCheck(c store.CheckResult) func(*store.Record) {
	return func(r *store.Record) { r.Checks = map[string]store.CheckResult{"integrity": c} }
}

func BenchmarkDecide(b *testing.B) {
	d := NewDesired(loadPlan(b), "c1")
	for _, bc := range []struct {
		name string
		rec  store.Record
		now  time.Duration
	}{
		{"idle-at-target", at(pos("canary", 10)), 100 * time.Hour},
		{"soaking", at(pos("canary", 5)), time.Minute},
		{"advance", at(pos("canary", 5)), 3 * time.Hour},
	} {
		o := Observed{Record: bc.rec, Guardrails: healthy(), Driver: stateAt(d, bc.rec)}
		now := t0.Add(bc.now)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decide(d, o, now)
			}
		})
	}
}

func TestHealthUnder(t *testing.T) {
	for _, tc := range []struct {
		h        Health
		onNoData string
		want     Health
	}{
		{Healthy, plan.OnNoDataRollback, Healthy},
		{Pending, plan.OnNoDataIgnore, Pending},
		{Breached, plan.OnNoDataIgnore, Breached},
		{NoData, plan.OnNoDataHold, NoData},
		{Error, plan.OnNoDataHold, Error},
		{NoData, plan.OnNoDataRollback, Breached},
		{Error, plan.OnNoDataRollback, Breached},
		{NoData, plan.OnNoDataIgnore, Healthy},
		{Error, plan.OnNoDataIgnore, Healthy},
	} {
		if got := tc.h.Under(tc.onNoData); got != tc.want {
			t.Errorf("%s under onNoData %s = %s, want %s", tc.h, tc.onNoData, got, tc.want)
		}
	}
}

// startingReplicas is a driver splitting 10 replicas by ratio, set for
// 5% (stable 9, candidate 1: the nearest reachable share, 10%) with the
// candidate not ready yet: no traffic reaches it.
func startingReplicas(o *Observed) {
	o.Driver = drivers.State{ReplicaTotal: 10, StableReplicas: 9, StableReady: 9, CandidateReplicas: 1, Flags: o.Driver.Flags}
}
