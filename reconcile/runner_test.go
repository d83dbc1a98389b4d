package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

type engine struct {
	run    *Runner
	store  *memStore
	fake   *fake.Fake
	clock  *clocktesting.FakeClock
	guards *scripted
}

func newEngine(t *testing.T) *engine {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	e := &engine{store: newMemStore(), fake: fake.New(fake.WithClock(clk)), clock: clk,
		guards: &scripted{readings: healthy()}}
	e.run = &Runner{Store: e.store, Open: e.fake.Opener(), Guards: e.guards, Clock: clk, Workers: 4, StepTimeout: time.Second}
	return e
}

// until steps d, moving the clock by tick after each wait, until the record
// satisfies done or n steps have passed.
func (e *engine) until(t *testing.T, d *Desired, tick time.Duration, n int, done func(store.Record) bool) store.Record {
	t.Helper()
	for range n {
		a, err := e.run.Step(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := e.store.Load(context.Background(), d.Plan.Metadata.Name)
		if done(rec) {
			return rec
		}
		if a.Kind == Wait {
			e.clock.Step(tick)
		}
	}
	rec, _ := e.store.Load(context.Background(), d.Plan.Metadata.Name)
	t.Fatalf("not done after %d steps: %+v", n, rec)
	return rec
}

func kindsOf(events []store.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Kind+" "+e.To.String())
	}
	return out
}

func TestRunnerWalksToTheTarget(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	rec := e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool {
		return r.Position == pos("canary", 10) && r.Status == StatusHolding
	})
	if len(rec.Flags) != 1 || rec.Checkpoints["pre-canary"].Position != (plan.Position{Phase: "shadow"}) {
		t.Errorf("record: %+v", rec)
	}
	history, _ := e.store.History(context.Background(), "base", 0)
	want := []string{
		"PublishFlags start", "Advance shadow 0%", "Entered shadow 0%", "Checkpoint shadow 0%",
		"Advance canary 5%", "Entered canary 5%", "Advance canary 10%", "Entered canary 10%", "Wait canary 10%",
	}
	if got := kindsOf(history); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("history:\n got %v\nwant %v", got, want)
	}
	for _, ev := range history {
		if ev.Reason == "" {
			t.Errorf("event without a reason: %+v", ev)
		}
	}
	// The driver saw the positions in order.
	var traffic []drivers.Target
	for _, a := range e.fake.Driver("base").Applied() {
		traffic = append(traffic, a)
	}
	if got := len(traffic); got != 3 {
		t.Errorf("applies: %v", traffic)
	}
}

func TestRunnerRollsBackAndReports(t *testing.T) {
	e := newEngine(t)
	var rolledBack []Action
	e.run.OnRollback = func(_ context.Context, _ *Desired, a Action) { rolledBack = append(rolledBack, a) }
	d := NewDesired(loadPlan(t), "c1")
	e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 10) })

	e.guards.readings = reading("errors", Breached, 0.12)
	rec := e.until(t, d, time.Minute, 5, func(r store.Record) bool { return r.Status == StatusRolledBack })
	if rec.Position != pos("canary", 5) || len(rec.Failed) != 1 || rec.Failed[0].Position != pos("canary", 10) || rec.Failed[0].Commit != "c1" {
		t.Fatalf("record after the breach: %+v", rec)
	}
	if len(rolledBack) != 1 || rolledBack[0].Failure.Guardrail != "errors" || rolledBack[0].Failure.Value != 0.12 {
		t.Fatalf("OnRollback: %+v", rolledBack)
	}
	history, _ := e.store.History(context.Background(), "base", 0)
	var rb *store.Event
	for i := range history {
		if history[i].Kind == string(Rollback) {
			rb = &history[i]
		}
	}
	var f Failure
	if rb == nil || json.Unmarshal(rb.Data, &f) != nil || f.Bound != "> 0.05 for 5m" || rb.From != pos("canary", 10) || rb.To != pos("canary", 5) {
		t.Errorf("rollback event: %+v", rb)
	}

	// Healthy again, same commit: it stays; a newer commit moves on.
	e.guards.readings = healthy()
	e.clock.Step(10 * time.Hour)
	if a, _ := e.run.Step(context.Background(), d); a.Kind != Wait || a.Status != StatusRolledBack {
		t.Errorf("after the rollback under the same commit: %s %s", a.Kind, a.Reason)
	}
	d2 := NewDesired(loadPlan(t), "c2")
	e.until(t, d2, 10*time.Minute, 50, func(r store.Record) bool { return r.Position == pos("canary", 10) })
}

// blocking is a driver whose Observe hangs until its ctx ends.
type blocking struct{ drivers.Driver }

func (blocking) Observe(ctx context.Context) (drivers.State, error) {
	<-ctx.Done()
	return drivers.State{}, ctx.Err()
}

func TestOneBrokenPlanDoesNotBlockTheOthers(t *testing.T) {
	e := newEngine(t)
	e.run.StepTimeout = 200 * time.Millisecond
	var opened atomic.Int32
	inner := e.fake.Opener()
	e.run.Open = func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		opened.Add(1)
		switch p.Metadata.Name {
		case "broken":
			return nil, errors.New("no such engine")
		case "stuck":
			d, _ := inner(ctx, p)
			return blocking{d}, nil
		}
		return inner(ctx, p)
	}
	var desired []*Desired
	for _, name := range []string{"good", "broken", "stuck", "also-good"} {
		desired = append(desired, NewDesired(loadPlan(t, "name: base", "name: "+name), "c1"))
	}
	start := time.Now()
	results := e.run.Cycle(context.Background(), desired)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a cycle took %v", took)
	}
	for _, r := range results {
		switch r.Plan {
		case "good", "also-good":
			if r.Err != nil || r.Action.Kind != PublishFlags {
				t.Errorf("%s: %s %v", r.Plan, r.Action.Kind, r.Err)
			}
		case "broken":
			if r.Err == nil || !strings.Contains(r.Err.Error(), "no such engine") {
				t.Errorf("broken: %v", r.Err)
			}
		case "stuck":
			if r.Action.Kind != Wait || !strings.Contains(r.Action.Reason, "cannot observe") {
				t.Errorf("stuck: %s %s %v", r.Action.Kind, r.Action.Reason, r.Err)
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range e.run.Cycle(ctx, desired) {
		if r.Err == nil && r.Action.Kind != Wait {
			t.Errorf("%s acted with a cancelled context: %s", r.Plan, r.Action.Kind)
		}
	}
}

func TestRunnerFinishesAnInterruptedMove(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	next := pos("canary", 5)
	// The record says a move to canary 5% was decided; the driver never saw it.
	rec := at(plan.Position{Phase: "shadow"}, func(r *store.Record) { r.Pending = &next })
	if _, err := e.store.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	_ = e.fake.Driver("base").SetState(drivers.State{Mirror: 100})
	a, err := e.run.Step(context.Background(), d)
	if err != nil || a.Kind != Apply {
		t.Fatalf("%s %v", a.Kind, err)
	}
	got, _ := e.store.Load(context.Background(), "base")
	if got.Position != next || got.Pending != nil || !got.EnteredAt.Equal(t0) {
		t.Errorf("record: %+v", got)
	}
	if s := e.fake.Driver("base").State(); s.Traffic != 5 || s.Mirror != 0 {
		t.Errorf("driver: %+v", s)
	}
}

func TestRunnerRestartsAJobThatNeverStarted(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t, "    phase: canary\n    percentage: 10", "    phase: full"), "c1")
	// Recorded as started, but the daemon died before the driver started it.
	rec := at(pos("migrate", 25), func(r *store.Record) {
		r.Job = &store.Job{ID: JobID("base", "migrate", t0), Phase: "migrate", StartedAt: t0}
	})
	if _, err := e.store.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	_ = e.fake.Driver("base").SetState(drivers.State{Traffic: 25})
	if _, err := e.run.Step(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fake.Driver("base").JobStatus(context.Background(), JobID("base", "migrate", t0)); err != nil {
		t.Errorf("the job was not started again: %v", err)
	}
}

func TestRunnerRepairsDrift(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 10) && r.Status == StatusHolding })
	_ = e.fake.Driver("base").SetState(drivers.State{Traffic: 60})
	a, err := e.run.Step(context.Background(), d)
	if err != nil || a.Kind != Apply || !strings.Contains(a.Reason, "drifted") {
		t.Fatalf("%s %s %v", a.Kind, a.Reason, err)
	}
	if s := e.fake.Driver("base").State(); s.Traffic != 10 {
		t.Errorf("driver after repair: %+v", s)
	}
	// A repair moves nothing: the record stays where it was, with nothing
	// pending, and the next step is an ordinary wait, not a new entry.
	rec, err := e.store.Load(context.Background(), "base")
	if err != nil || rec.Pending != nil || rec.Position != pos("canary", 10) {
		t.Fatalf("record after repair: %+v %v", rec, err)
	}
	if a, err := e.run.Step(context.Background(), d); err != nil || a.Kind != Wait {
		t.Fatalf("after the repair: %s %s %v", a.Kind, a.Reason, err)
	}
}

func TestTwoRunnersOneRecord(t *testing.T) {
	e := newEngine(t)
	other := &Runner{Store: e.store, Open: e.fake.Opener(), Guards: e.guards, Clock: e.clock, Workers: 1}
	d := NewDesired(loadPlan(t), "c1")
	for range 2 { // publishes the flags, enters shadow
		if _, err := e.run.Step(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	// The other runner watches from the start of the soak (a runner soaks
	// again from when it began watching: see TestRestartSoaksAgain).
	if a, err := other.Step(context.Background(), d); err != nil || a.Kind != Wait {
		t.Fatalf("other, watching: %s %v", a.Kind, err)
	}
	e.clock.Step(2 * time.Hour)
	if a, err := other.Step(context.Background(), d); err != nil || a.Kind != Checkpoint {
		t.Fatalf("other: %s %v", a.Kind, err) // takes the checkpoint: the record moves on
	}
	// e.run still holds the record from before the checkpoint.
	if _, err := e.run.Step(context.Background(), d); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a stale runner saved: %v", err)
	}
	// After a conflict it reloads and carries on from the stored record.
	a, err := e.run.Step(context.Background(), d)
	if err != nil || a.Kind != Advance || a.To != pos("canary", 5) {
		t.Fatalf("after a conflict: %s %v", a.Kind, err)
	}
}

// TestCheckpointAndRestore takes a checkpoint on request, moves on, and
// restores it by lowering the target with the restore annotation's name.
func TestCheckpointAndRestore(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	p := loadPlan(t)
	d := NewDesired(p, "c1")
	e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 10) && r.Status == StatusHolding })

	cp, err := e.run.Checkpoint(ctx, d, "before-25", "known good at 10%")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Position != pos("canary", 10) || len(cp.Data) == 0 || cp.Description != "known good at 10%" {
		t.Fatalf("checkpoint %+v", cp)
	}
	rec, _ := e.store.Load(ctx, "base")
	if got := rec.Checkpoints["before-25"]; got.Position != cp.Position {
		t.Fatalf("not recorded: %+v", rec.Checkpoints)
	}

	// Move on to 25%, then change what the checkpoint covers (the flags).
	q := *p
	q.Spec.Target = p.TargetFor(pos("canary", 25))
	e.until(t, NewDesired(&q, "c2"), 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 25) })
	drv := e.fake.Driver("base")
	if err := drv.PublishFlags(ctx, map[string]int{"new_cart": 99}); err != nil {
		t.Fatal(err)
	}

	// A checkpoint that was never taken restores nothing, and does not
	// hold the move back.
	back := *p
	back.Spec.Target = p.TargetFor(pos("canary", 10))
	dr := NewDesired(&back, "c3")
	dr.Restore = "nope"
	if a, err := e.run.Step(ctx, dr); err != nil || a.Kind != MoveBack || a.Checkpoint != "" || !strings.Contains(a.Reason, "checkpoint nope, which the plan asks to restore, was never taken") {
		t.Fatalf("unknown checkpoint: %s %q %s %v", a.Kind, a.Checkpoint, a.Reason, err)
	}
	if s := drv.State(); s.Traffic != 10 || s.Flags["new_cart"] != 99 {
		t.Errorf("after a move back with nothing to restore: %+v", s)
	}

	// Up again, then back with the checkpoint's name: its snapshot is
	// restored.
	up := func(commit string) {
		t.Helper()
		e.until(t, NewDesired(&q, commit), 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 25) })
		if err := drv.PublishFlags(ctx, map[string]int{"new_cart": 99}); err != nil {
			t.Fatal(err)
		}
	}
	up("c4")
	dr = NewDesired(&back, "c5")
	dr.Restore = "before-25"
	a, err := e.run.Step(ctx, dr)
	if err != nil || a.Kind != MoveBack || a.Restore != "before-25" || !strings.Contains(a.Reason, "restoring checkpoint before-25") {
		t.Fatalf("restore: %s %q %s %v", a.Kind, a.Restore, a.Reason, err)
	}
	if s := drv.State(); s.Traffic != 10 || s.Flags["new_cart"] == 99 {
		t.Errorf("after the restore: %+v", s)
	}
	// The restore is in the history, with the checkpoint it restored.
	if hist, _ := e.store.History(ctx, "base", 2); len(hist) < 2 || hist[1].Kind != Restored || !strings.Contains(hist[1].Reason, "restored checkpoint before-25, taken at canary 10%") {
		t.Errorf("history after the restore: %+v", hist)
	}

	// The annotation stays in the plan; a later move back to the same
	// place restores nothing more: the snapshot was restored once.
	up("c6")
	dr = NewDesired(&back, "c7")
	dr.Restore = "before-25"
	if a, err := e.run.Step(ctx, dr); err != nil || a.Kind != MoveBack || a.Restore != "" {
		t.Fatalf("second move back: %s %q %s %v", a.Kind, a.Restore, a.Reason, err)
	}
	if s := drv.State(); s.Traffic != 10 || s.Flags["new_cart"] != 99 {
		t.Errorf("the snapshot was restored a second time: %+v", s)
	}
}

// TestVerify runs checks on request: a job that passes, one that fails with
// its exit code, one that outlives its timeout, and an HTTP check without a
// checker.
func TestVerify(t *testing.T) {
	f := fake.New()
	r := &Runner{Store: newMemStore(), Open: f.Opener(), Clock: clock.RealClock{}, Workers: 1}
	p := loadPlan(t)
	p.Spec.Verify = map[string]plan.Check{
		"ok":    {Run: &plan.Run{Image: "m:1", Env: map[string]string{fake.EnvJobDuration: "20ms"}}},
		"bad":   {Run: &plan.Run{Image: "m:1", Env: map[string]string{fake.EnvJobExit: "3"}}},
		"slow":  {Run: &plan.Run{Image: "m:1", Env: map[string]string{fake.EnvJobDuration: "1h"}, Timeout: plan.Duration(100 * time.Millisecond)}},
		"probe": {MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://127.0.0.1:1/health"}}},
	}
	d := NewDesired(p, "c1")
	if _, err := r.Verify(context.Background(), d, []string{"ok", "nope"}, time.Second, 10*time.Millisecond); err == nil ||
		!strings.Contains(err.Error(), `has no check "nope"; its checks are bad, ok, probe, slow`) {
		t.Fatalf("unknown check: %v", err)
	}
	vs, err := r.Verify(context.Background(), d, []string{"ok", "bad", "slow", "probe"}, time.Minute, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		passed bool
		msg    string
	}{{true, "succeeded"}, {false, "failed with exit code 3"}, {false, "100ms"}, {false, "no checker"}}
	for i, w := range want {
		if vs[i].Passed != w.passed || !strings.Contains(vs[i].Message, w.msg) {
			t.Errorf("%s: %+v, want passed=%t %q", vs[i].Name, vs[i], w.passed, w.msg)
		}
	}
	if vs[0].Kind != "run" || vs[3].Kind != "http" {
		t.Errorf("kinds %s %s", vs[0].Kind, vs[3].Kind)
	}
}

// TestForgetStartsFromTheStore has two runners share a store and the
// workloads, as two daemon replicas do: one leads to canary 5%, the other
// takes over and goes on to 10%, then the first leads again. After Forget
// (a new term of leadership), or ForgetPlans for the plan (a replica taking
// over its shard), it carries on from 10%; it never applies its stale 5% as
// a drift repair.
func TestForgetStartsFromTheStore(t *testing.T) {
	for name, forget := range map[string]func(*Runner){
		"Forget":      (*Runner).Forget,
		"ForgetPlans": func(r *Runner) { r.ForgetPlans(func(name string) bool { return name == "base" }) },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEngine(t)
			d := NewDesired(loadPlan(t), "c1")
			e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 5) })

			other := &Runner{Store: e.store, Open: e.fake.Opener(), Guards: e.guards, Clock: e.clock, Workers: 1, StepTimeout: time.Second}
			for range 50 {
				a, err := other.Step(context.Background(), d)
				if err != nil {
					t.Fatal(err)
				}
				if rec, _ := e.store.Load(context.Background(), "base"); rec.Position == pos("canary", 10) && rec.Pending == nil {
					break
				}
				if a.Kind == Wait {
					e.clock.Step(10 * time.Minute)
				}
			}
			applied := len(e.fake.Driver("base").Applied())
			forget(e.run)
			for range 3 {
				if _, err := e.run.Step(context.Background(), d); err != nil {
					t.Fatal(err)
				}
			}
			for _, a := range e.fake.Driver("base").Applied()[applied:] {
				if a.Traffic == 5 {
					t.Errorf("the first runner applied its stale position after %s: %+v", name, a)
				}
			}
			if rec, _ := e.store.Load(context.Background(), "base"); rec.Position != pos("canary", 10) {
				t.Errorf("record at %s, want canary 10%%", rec.Position)
			}
		})
	}
}

// TestRunnerReportsADriverItCannotOpen: a plan whose driver cannot be
// opened waits, and its record and decision say why, as for a driver that
// cannot be observed.
func TestRunnerReportsADriverItCannotOpen(t *testing.T) {
	e := newEngine(t)
	refused := errors.New(`plan base: its namespace "payments" is not one the daemon may act in: kubernetes.namespaces lists hal9`)
	e.run.Open = func(context.Context, *plan.Plan) (drivers.Driver, error) { return nil, refused }
	var decided Action
	e.run.OnDecided = func(_ *Desired, o Observed, a Action) { decided = a }
	d := NewDesired(loadPlan(t), "c1")
	a, err := e.run.Step(context.Background(), d)
	if !errors.Is(err, refused) || a.Kind != Wait || decided.Kind != Wait || !strings.Contains(decided.Reason, refused.Error()) {
		t.Fatalf("Step = %+v, %v; decided %+v", a, err, decided)
	}
	rec, _ := e.store.Load(context.Background(), d.Plan.Metadata.Name)
	if rec.Status != StatusWaiting || !strings.Contains(rec.Reason, "open the kubernetes driver of base: "+refused.Error()) || !rec.Position.IsStart() {
		t.Errorf("record %+v", rec)
	}
	// Once the driver opens, the plan goes on.
	e.run.Open = e.fake.Opener()
	e.until(t, d, time.Minute, 20, func(rec store.Record) bool { return !rec.Position.IsStart() })
}

// latecomer is an asynchronous Guardrails: Evaluate returns the readings it
// had, and the ones measured meanwhile come in through Latest.
type latecomer struct {
	scripted
	latest []Reading
}

func (l *latecomer) Latest(*plan.Plan, Epoch) ([]Reading, bool) {
	return append([]Reading(nil), l.latest...), l.latest != nil
}

// A breach measured while the step observed the driver is judged in that
// step: the rollback does not wait for the next one.
func TestRunnerJudgesLatecomers(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 10) })

	l := &latecomer{scripted: scripted{readings: healthy()}, latest: reading("errors", Breached, 0.12)}
	e.run.Guards = l
	a, err := e.run.Step(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != Rollback {
		t.Fatalf("the step did %s (%s), want the rollback the latest reading calls for", a.Kind, a.Reason)
	}
}

// A runner that begins watching a plan mid-soak (a daemon restarted, or a
// new leader) soaks the step again from then: the time nobody watched the
// guardrails never counts as green.
func TestRestartSoaksAgain(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	for range 2 { // publishes the flags, enters shadow (soak 1h)
		if _, err := e.run.Step(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Step(50 * time.Minute)
	restarted := &Runner{Store: e.store, Open: e.fake.Opener(), Guards: e.guards, Clock: e.clock, Workers: 1}
	e.clock.Step(20 * time.Minute) // down for 20 minutes: 70 since entering
	if a, err := restarted.Step(context.Background(), d); err != nil || a.Kind != Wait {
		t.Fatalf("first step after the restart: %s %s %v, want a wait: the soak starts again", a.Kind, a.Reason, err)
	}
	e.clock.Step(59 * time.Minute)
	if a, err := restarted.Step(context.Background(), d); err != nil || a.Kind != Wait {
		t.Fatalf("59 minutes after the restart: %s %s %v, want a wait", a.Kind, a.Reason, err)
	}
	e.clock.Step(time.Minute)
	if a, err := restarted.Step(context.Background(), d); err != nil || a.Kind != Checkpoint {
		t.Fatalf("an hour after the restart: %s %s %v, want the step left (its checkpoint first)", a.Kind, a.Reason, err)
	}
}

// closing is a driver that counts its Closes.
type closing struct {
	drivers.Driver
	closed *atomic.Int32
}

func (c closing) Close() error { c.closed.Add(1); return nil }

// TestRelease: a plan released (gone from the repository, or another
// replica's now) has its driver closed, and a later step opens one again
// and starts from the store.
func TestRelease(t *testing.T) {
	e := newEngine(t)
	var opened, closed atomic.Int32
	inner := e.fake.Opener()
	e.run.Open = func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		opened.Add(1)
		d, err := inner(ctx, p)
		return closing{d, &closed}, err
	}
	d := NewDesired(loadPlan(t), "c1")
	e.until(t, d, time.Minute, 20, func(r store.Record) bool { return r.Position == pos("shadow", 0) })
	e.run.Release("base")
	e.run.Release("never-stepped")
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if closed.Load() != 1 || opened.Load() != 1 {
		t.Fatalf("after Release: opened %d, closed %d; want 1 and 1", opened.Load(), closed.Load())
	}
	// Another runner moves the plan meanwhile: the next step must see it.
	rec, _ := e.store.Load(context.Background(), "base")
	rec.Position = pos("canary", 5)
	if _, err := e.store.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run.Step(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if opened.Load() != 2 || closed.Load() != 1 {
		t.Errorf("the step after Release: opened %d, closed %d; want 2 and 1", opened.Load(), closed.Load())
	}
	if rec, _ := e.store.Load(context.Background(), "base"); rec.Position.Phase != "canary" {
		t.Errorf("the step after Release worked from memory, not the store: at %s", rec.Position)
	}
}
