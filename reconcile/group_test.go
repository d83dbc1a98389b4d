package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// perPlan is a Guardrails whose readings the test sets plan by plan; a plan
// it has none for reads no guardrail at all (green).
type perPlan struct {
	mu       sync.Mutex
	readings map[string][]Reading
}

func (g *perPlan) Evaluate(_ context.Context, p *plan.Plan, _ Epoch) ([]Reading, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.readings[p.Metadata.Name]), nil
}

func (g *perPlan) set(name string, rs []Reading) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.readings == nil {
		g.readings = map[string][]Reading{}
	}
	g.readings[name] = rs
}

func breached() []Reading {
	return []Reading{{Name: "errors", Health: Breached, Value: 0.2, Bound: "> 0.05 for 5m"}}
}

// memberPlan is a plan called name with extra spec lines and phases, a
// docker driver, target full and rollback to the previous step; edits as
// planFrom's.
func memberPlan(t testing.TB, name, extra, phases string, edits ...string) *plan.Plan {
	t.Helper()
	src := `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: ` + name + `}
spec:
  target: {phase: full}
  driver: {docker: {stable: {service: ` + name + `-old}, candidate: {service: ` + name + `-new}, traffic: {nginx: {upstream: ` + name + `}}}}
  rollback: {to: previous-step}
` + extra + `
  phases:
` + phases
	return planFrom(t, src, edits...)
}

// The two members of group g: they line up (shadow, canary in two steps,
// full) with different percentages and soaks.
const (
	phasesA = "    - {name: shadow, mirror: 50, soak: 30m}\n    - {name: canary, steps: [10, 50], soak: 1h}\n    - {name: full, steps: [100]}\n"
	phasesB = "    - {name: shadow, mirror: 100, soak: 1h}\n    - {name: canary, steps: [5, 25], soak: 2h}\n    - {name: full, steps: [100]}\n"
)

// groupAB returns members a and b of group g, under commit.
func groupAB(t testing.TB, commit string, edits ...string) []*Desired {
	t.Helper()
	a := NewDesired(memberPlan(t, "a", "  group: g\n", phasesA, edits...), commit)
	b := NewDesired(memberPlan(t, "b", "  group: g\n", phasesB, edits...), commit)
	// They line up, as the validator of a set checks.
	if _, errs := plan.LineUp("g", []*plan.Plan{a.Plan, b.Plan}); len(errs) > 0 {
		t.Fatal(errs)
	}
	return []*Desired{a, b}
}

func load(t testing.TB, e *engine, name string) store.Record {
	t.Helper()
	rec, err := e.store.Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// levels returns each member's level as recorded.
func levels(t testing.TB, e *engine, ds []*Desired) []int {
	t.Helper()
	out := make([]int, len(ds))
	for i, d := range ds {
		out[i] = d.level(load(t, e, d.Plan.Metadata.Name).Position)
	}
	return out
}

// walkGroup steps the group, moving the clock by tick when every member
// waits, until done holds of the records, checking after every step that
// no member stands more than one level from another.
func walkGroup(t *testing.T, e *engine, ds []*Desired, tick time.Duration, n int, done func([]store.Record) bool) [][]Result {
	t.Helper()
	var all [][]Result
	for range n {
		res := e.run.StepGroup(context.Background(), ds)
		all = append(all, res)
		waits := true
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("%s: %v", r.Plan, r.Err)
			}
			waits = waits && r.Action.Kind == Wait
		}
		lv := levels(t, e, ds)
		if slices.Max(lv)-slices.Min(lv) > 1 {
			t.Fatalf("members more than a step apart at %v: levels %v", e.clock.Now().Sub(t0), lv)
		}
		recs := make([]store.Record, len(ds))
		for i, d := range ds {
			recs[i] = load(t, e, d.Plan.Metadata.Name)
		}
		if done(recs) {
			return all
		}
		if waits {
			e.clock.Step(tick)
		}
	}
	t.Fatalf("not done after %d steps", n)
	return nil
}

func allAt(ds []*Desired, level int) func([]store.Record) bool {
	return func(recs []store.Record) bool {
		for i, r := range recs {
			if ds[i].level(r.Position) != level || r.Pending != nil {
				return false
			}
		}
		return true
	}
}

// Two members with different soaks climb in lockstep: never more than a
// step apart, and neither leaves a step before both have soaked there.
func TestGroupLockstep(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	ds := groupAB(t, "c1")
	ctx := context.Background()

	// Both enter shadow together.
	res := e.run.StepGroup(ctx, ds)
	for _, r := range res {
		if r.Err != nil || r.Action.Kind != Advance {
			t.Fatalf("first step: %s %s %s %v", r.Plan, r.Action.Kind, r.Action.Reason, r.Err)
		}
	}
	// After 30 minutes a has soaked; b has not: a waits for b, naming it.
	e.clock.Step(30 * time.Minute)
	res = e.run.StepGroup(ctx, ds)
	if a := res[0].Action; res[0].Plan != "a" || a.Kind != Wait || !strings.Contains(a.Reason, "ready to leave shadow 0%; group g moves as one, waiting for b (soaking at shadow 0% for 1h)") {
		t.Fatalf("a after its soak: %s %s", a.Kind, a.Reason)
	}
	if b := res[1].Action; b.Kind != Wait || !strings.Contains(b.Reason, "soaking at shadow 0% for 1h") {
		t.Fatalf("b soaking: %s %s", b.Kind, b.Reason)
	}

	walkGroup(t, e, ds, 10*time.Minute, 500, func(recs []store.Record) bool {
		return recs[0].Status == StatusCompleted && recs[1].Status == StatusCompleted
	})
	for _, d := range ds {
		if rec := load(t, e, d.Plan.Metadata.Name); rec.Position != pos("full", 100) {
			t.Errorf("%s ended at %s", d.Plan.Metadata.Name, rec.Position)
		}
	}

	// From the history: every step left by a member had been held for its
	// soak by every member, and the members entered each step in the same
	// group step (at the same time).
	entered := map[string]map[int]time.Time{}
	var leaves []struct {
		who   string
		level int
		at    time.Time
	}
	for _, d := range ds {
		name := d.Plan.Metadata.Name
		entered[name] = map[int]time.Time{}
		hist, _ := e.store.History(ctx, name, 0)
		for _, ev := range hist {
			switch ev.Kind {
			case "Entered":
				entered[name][d.level(ev.To)] = ev.At
			case string(Advance):
				if l := d.level(ev.From); l > 0 {
					leaves = append(leaves, struct {
						who   string
						level int
						at    time.Time
					}{name, l, ev.At})
				}
			}
		}
	}
	if len(leaves) != 2*3 {
		t.Errorf("%d steps left, want 6: %+v", len(leaves), leaves)
	}
	for _, l := range leaves {
		for _, d := range ds {
			name := d.Plan.Metadata.Name
			in, ok := entered[name][l.level]
			soak := d.timeline[l.level-1].Soak.Std()
			if !ok || l.at.Sub(in) < soak {
				t.Errorf("%s left level %d at %v; %s entered it at %v (ok %t), soak %v", l.who, l.level, l.at.Sub(t0), name, in.Sub(t0), ok, soak)
			}
		}
	}
	for l := 1; l <= 4; l++ {
		if !entered["a"][l].Equal(entered["b"][l]) {
			t.Errorf("level %d entered at %v by a, %v by b", l, entered["a"][l].Sub(t0), entered["b"][l].Sub(t0))
		}
	}
}

// A breach in one member rolls both back in the same step, each to the
// same step of its own timeline, in one OnGroupRollback.
func TestGroupBreachRollsEveryMemberBack(t *testing.T) {
	e := newEngine(t)
	g := &perPlan{}
	e.run.Guards = g
	var groupCalls [][]string
	var groupActs [][]Action
	e.run.OnGroupRollback = func(_ context.Context, group string, ds []*Desired, as []Action) {
		var names []string
		for _, d := range ds {
			names = append(names, d.Plan.Metadata.Name)
		}
		groupCalls = append(groupCalls, append([]string{group}, names...))
		groupActs = append(groupActs, as)
	}
	var single []string
	e.run.OnRollback = func(_ context.Context, d *Desired, _ Action) { single = append(single, d.Plan.Metadata.Name) }
	ds := groupAB(t, "c1")
	walkGroup(t, e, ds, 10*time.Minute, 200, allAt(ds, 3)) // a canary 50%, b canary 25%

	g.set("a", breached())
	res := e.run.StepGroup(context.Background(), ds)
	a, b := res[0].Action, res[1].Action
	if res[0].Err != nil || res[1].Err != nil {
		t.Fatal(res[0].Err, res[1].Err)
	}
	if a.Kind != Rollback || a.To != pos("canary", 10) || a.Failure == nil || a.Failure.Member != "a" || a.Failure.Guardrail != "errors" {
		t.Errorf("a: %s to %s, failure %+v", a.Kind, a.To, a.Failure)
	}
	if b.Kind != Rollback || b.To != pos("canary", 5) || b.Failure == nil || b.Failure.Member != "a" ||
		!strings.Contains(b.Failure.What, "guardrail errors is 0.2, > 0.05 for 5m of group member a") || b.Failure.Guardrail != "errors" {
		t.Errorf("b: %s to %s, failure %+v", b.Kind, b.To, b.Failure)
	}
	if !strings.Contains(b.Reason, "group g moves as one: rolling back to canary 5%") {
		t.Errorf("b's reason: %s", b.Reason)
	}
	if fmt.Sprint(groupCalls) != "[[g a b]]" || len(groupActs[0]) != 2 || groupActs[0][1].Failure.Member != "a" {
		t.Errorf("OnGroupRollback: %v %+v", groupCalls, groupActs)
	}
	if len(single) != 0 {
		t.Errorf("OnRollback called for %v", single)
	}
	for name, want := range map[string]plan.Position{"a": pos("canary", 10), "b": pos("canary", 5)} {
		rec := load(t, e, name)
		if rec.Position != want || rec.Status != StatusRolledBack || rec.Commit != "c1" || len(rec.Failed) != 1 {
			t.Errorf("%s after the rollback: %+v", name, rec)
		}
		if got := e.fake.Driver(name).State().Traffic; got != want.Percentage {
			t.Errorf("%s's traffic %d, want %d", name, got, want.Percentage)
		}
	}

	// Healthy again, same commit: both stay, and nothing is called again.
	g.set("a", nil)
	e.clock.Step(10 * time.Hour)
	for range 3 {
		for _, r := range e.run.StepGroup(context.Background(), ds) {
			if r.Err != nil || r.Action.Kind != Wait || r.Action.Status != StatusRolledBack {
				t.Errorf("%s after the rollback: %s %s %v", r.Plan, r.Action.Kind, r.Action.Status, r.Err)
			}
		}
	}
	if len(groupCalls) != 1 {
		t.Errorf("OnGroupRollback called %d times", len(groupCalls))
	}

	// A newer commit: they climb again, together.
	walkGroup(t, e, groupAB(t, "c2"), 10*time.Minute, 200, allAt(ds, 3))
}

// Without OnGroupRollback, each member's rollback goes to OnRollback.
func TestGroupRollbackWithoutAGroupHook(t *testing.T) {
	e := newEngine(t)
	g := &perPlan{}
	e.run.Guards = g
	var single []string
	e.run.OnRollback = func(_ context.Context, d *Desired, _ Action) { single = append(single, d.Plan.Metadata.Name) }
	ds := groupAB(t, "c1")
	walkGroup(t, e, ds, 10*time.Minute, 200, allAt(ds, 2))
	g.set("b", breached())
	res := e.run.StepGroup(context.Background(), ds)
	if res[0].Action.Kind != Rollback || res[1].Action.Kind != Rollback || res[0].Action.Failure.Member != "b" {
		t.Fatalf("%+v", res)
	}
	if slices.Sort(single); fmt.Sprint(single) != "[a b]" {
		t.Errorf("OnRollback: %v", single)
	}
}

// saveAt saves a record of name at p, and the fake workloads there.
func saveAt(t testing.TB, e *engine, d *Desired, p plan.Position, mutate ...func(*store.Record)) {
	t.Helper()
	rec := at(p, mutate...)
	rec.Plan, rec.Flags = d.Plan.Metadata.Name, nil
	rec.Reached = Climb(d.Plan, nil, p, t0)
	if _, err := e.store.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	tg := d.targetOf(p, false)
	if err := e.fake.Driver(d.Plan.Metadata.Name).SetState(drivers.State{Traffic: tg.Traffic, Mirror: tg.Mirror}); err != nil {
		t.Fatal(err)
	}
}

// A crash between the members' rollbacks: a is recorded rolled back under
// its commit, b still stands higher. The next group step rolls b back to
// the same level, naming a.
func TestGroupFinishesARollbackAfterACrash(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	var calls [][]string
	e.run.OnGroupRollback = func(_ context.Context, _ string, ds []*Desired, as []Action) {
		var names []string
		for _, d := range ds {
			names = append(names, d.Plan.Metadata.Name)
		}
		calls = append(calls, names)
	}
	ds := groupAB(t, "c1")
	saveAt(t, e, ds[0], pos("canary", 10), func(r *store.Record) {
		r.Status, r.Reason = StatusRolledBack, "guardrail errors is 0.2 at canary 50%; rolling back to canary 10%"
		r.Failed = []store.Failure{{Position: pos("canary", 50), Commit: "c1", Reason: "guardrail errors is 0.2", At: t0}}
	})
	saveAt(t, e, ds[1], pos("canary", 25))

	res := e.run.StepGroup(context.Background(), ds)
	if a := res[0].Action; a.Kind != Wait || a.Status != StatusRolledBack {
		t.Errorf("a: %s %s %s", a.Kind, a.Status, a.Reason)
	}
	b := res[1].Action
	if res[1].Err != nil || b.Kind != Rollback || b.To != pos("canary", 5) || b.Failure == nil || b.Failure.Member != "a" ||
		!strings.Contains(b.Failure.What, "guardrail errors is 0.2 of group member a") {
		t.Fatalf("b: %s to %s, %+v %v", b.Kind, b.To, b.Failure, res[1].Err)
	}
	if rec := load(t, e, "b"); rec.Position != pos("canary", 5) || rec.Status != StatusRolledBack || len(rec.Failed) != 1 || rec.Failed[0].Position != pos("canary", 25) {
		t.Errorf("b's record: %+v", rec)
	}
	if fmt.Sprint(calls) != "[[b]]" {
		t.Errorf("OnGroupRollback: %v", calls)
	}
	// And then both hold.
	for _, r := range e.run.StepGroup(context.Background(), ds) {
		if r.Action.Kind != Wait || r.Action.Status != StatusRolledBack {
			t.Errorf("%s: %s %s", r.Plan, r.Action.Kind, r.Action.Status)
		}
	}
}

// A member rolled back under its commit holds the others at its level:
// another member at that level does not go on without it, even under a
// commit of its own.
func TestGroupRolledBackMemberHoldsTheOthers(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	ds := groupAB(t, "c1")
	saveAt(t, e, ds[0], pos("canary", 10), func(r *store.Record) {
		r.Status, r.Reason = StatusRolledBack, "rolled back"
		r.Failed = []store.Failure{{Position: pos("canary", 50), Commit: "c1", Reason: "guardrail errors is 0.2", At: t0}}
	})
	// b was rolled back with it, and its plan has been changed since: a
	// newer commit of its own would move it on.
	saveAt(t, e, ds[1], pos("canary", 5), func(r *store.Record) {
		r.Status, r.Reason = StatusRolledBack, "rolled back with a"
		r.Failed = []store.Failure{{Position: pos("canary", 25), Commit: "c1", Reason: "group", At: t0}}
	})
	b2 := NewDesired(ds[1].Plan, "c2")
	e.clock.Step(10 * time.Hour)
	for range 3 {
		res := e.run.StepGroup(context.Background(), []*Desired{ds[0], b2})
		if b := res[1].Action; res[1].Err != nil || b.Kind == Advance {
			t.Fatalf("b left the level a is rolled back to: %s %s %v", b.Kind, b.Reason, res[1].Err)
		}
		e.clock.Step(time.Hour)
	}
	if rec := load(t, e, "b"); rec.Position != pos("canary", 5) {
		t.Errorf("b at %s", rec.Position)
	}
}

// A member whose driver cannot be opened, or whose workloads cannot be
// observed, holds the group; a breach in another still rolls that one
// back, and the member out of sight follows once it is in sight again.
func TestGroupMemberOutOfSight(t *testing.T) {
	for _, how := range []string{"open", "observe"} {
		t.Run(how, func(t *testing.T) {
			e := newEngine(t)
			g := &perPlan{}
			e.run.Guards = g
			ds := groupAB(t, "c1")
			walkGroup(t, e, ds, 10*time.Minute, 200, allAt(ds, 2))

			inner := e.fake.Opener()
			blind := errors.New("platform unreachable")
			out := false
			e.run.Open = func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
				if out && how == "open" && p.Metadata.Name == "b" {
					return nil, blind
				}
				return inner(ctx, p)
			}
			// A fresh runner: the drivers are opened again.
			e.run = &Runner{Store: e.store, Open: e.run.Open, Guards: g, Clock: e.clock, Workers: 4, StepTimeout: time.Second}
			out = true
			fail := func() {
				if how == "observe" {
					e.fake.Driver("b").FailNext(fake.OpObserve, blind)
				}
			}
			// The new runner watches the guardrails from its first step.
			fail()
			e.run.StepGroup(context.Background(), ds)

			// Long past both soaks: a would go on, but b is out of sight.
			e.clock.Step(10 * time.Hour)
			for range 3 {
				fail()
				res := e.run.StepGroup(context.Background(), ds)
				if a := res[0].Action; a.Kind != Wait || !strings.Contains(a.Reason, "waiting for b") {
					t.Fatalf("a: %s %s %v", a.Kind, a.Reason, res[0].Err)
				}
				if b := res[1].Action; b.Kind != Wait || !strings.Contains(b.Reason, "platform unreachable") {
					t.Fatalf("b: %s %s %v", b.Kind, b.Reason, res[1].Err)
				}
				e.clock.Step(time.Hour)
			}
			if lv := levels(t, e, ds); fmt.Sprint(lv) != "[2 2]" {
				t.Fatalf("levels %v", lv)
			}

			// a breaches: a rolls back; b, out of sight, changes nothing.
			g.set("a", breached())
			fail()
			res := e.run.StepGroup(context.Background(), ds)
			if a := res[0].Action; res[0].Err != nil || a.Kind != Rollback || a.To != pos("shadow", 0) {
				t.Fatalf("a: %s to %s %v", a.Kind, a.To, res[0].Err)
			}
			if b := res[1].Action; b.Kind != Wait {
				t.Errorf("b, out of sight: %s %s", b.Kind, b.Reason)
			}
			if rec := load(t, e, "b"); rec.Position != pos("canary", 5) || rec.Pending != nil {
				t.Errorf("b's record: %+v", rec)
			}

			// b in sight again: it follows a down.
			out = false
			g.set("a", nil)
			res = e.run.StepGroup(context.Background(), ds)
			if b := res[1].Action; res[1].Err != nil || b.Kind != Rollback || b.To != pos("shadow", 0) || b.Failure == nil || b.Failure.Member != "a" {
				t.Fatalf("b back in sight: %s to %s %+v %v", b.Kind, b.To, b.Failure, res[1].Err)
			}
			if lv := levels(t, e, ds); fmt.Sprint(lv) != "[1 1]" {
				t.Errorf("levels %v", lv)
			}
		})
	}
}

// DecideGroup on its own: made-up members and actions.
func TestDecideGroup(t *testing.T) {
	ds := groupAB(t, "c1")
	a, b := ds[0], ds[1]
	member := func(d *Desired, p plan.Position, act Action, mutate ...func(*store.Record)) Member {
		rec := at(p, mutate...)
		rec.Plan = d.Plan.Metadata.Name
		return Member{D: d, O: Observed{Record: rec}, A: act}
	}
	adv := func(to plan.Position) Action {
		return Action{Kind: Advance, To: to, Status: StatusProgressing, Reason: "advancing"}
	}
	soaking := Action{Kind: Wait, Status: StatusProgressing, Reason: "soaking"}
	rb := func(to plan.Position) Action {
		return Action{Kind: Rollback, To: to, Status: StatusRolledBack, Failure: &Failure{What: "guardrail errors breached", Guardrail: "errors"}, Reason: "breach"}
	}
	blind := func(m Member) Member {
		m.O.DriverErr = errors.New("connection refused")
		m.A = Action{Kind: Wait, Status: StatusWaiting, Reason: "cannot observe the workloads: connection refused"}
		return m
	}
	kinds := func(as []Action) string {
		var s []string
		for _, x := range as {
			s = append(s, string(x.Kind)+" "+x.To.String())
		}
		return strings.Join(s, ", ")
	}
	for _, tc := range []struct {
		name string
		ms   []Member
		want string
	}{
		{"both advance", []Member{member(a, pos("canary", 10), adv(pos("canary", 50))), member(b, pos("canary", 5), adv(pos("canary", 25)))},
			"Advance canary 50%, Advance canary 25%"},
		{"one soaks: neither goes", []Member{member(a, pos("canary", 10), adv(pos("canary", 50))), member(b, pos("canary", 5), soaking)},
			"Wait start, Wait start"},
		{"one behind catches up", []Member{member(a, pos("canary", 50), soaking), member(b, pos("canary", 5), adv(pos("canary", 25)))},
			"Wait start, Advance canary 25%"},
		{"one ahead waits for the one behind", []Member{member(a, pos("canary", 50), adv(pos("full", 100))), member(b, pos("canary", 5), soaking)},
			"Wait start, Wait start"},
		{"one ahead does not go two ahead", []Member{member(a, pos("canary", 50), adv(pos("full", 100))), member(b, pos("canary", 5), adv(pos("canary", 25)))},
			"Wait start, Advance canary 25%"},
		{"promote only when both ask", []Member{member(a, pos("canary", 50), Action{Kind: Promote, To: pos("full", 100)}), member(b, pos("canary", 25), soaking)},
			"Wait start, Wait start"},
		{"both promote", []Member{member(a, pos("canary", 50), Action{Kind: Promote, To: pos("full", 100)}), member(b, pos("canary", 25), Action{Kind: Promote, To: pos("full", 100)})},
			"Promote full 100%, Promote full 100%"},
		{"a breach rolls the other back to the same level", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))), member(b, pos("canary", 25), soaking)},
			"Rollback canary 10%, Rollback canary 5%"},
		{"a breach to start", []Member{member(a, pos("canary", 50), soaking), member(b, pos("canary", 25), rb(plan.Start))},
			"Rollback start, Rollback start"},
		{"a member at or below the level rolled back to stays", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))), member(b, pos("canary", 5), soaking)},
			"Rollback canary 10%, Wait start"},
		{"the lowest rollback sets the ceiling for every member", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))), member(b, pos("canary", 25), rb(plan.Start))},
			"Rollback start, Rollback start"},
		{"the lowest rollback sets the ceiling", []Member{member(a, pos("canary", 50), rb(pos("shadow", 0))), member(b, pos("canary", 25), rb(pos("canary", 5)))},
			"Rollback shadow 0%, Rollback shadow 0%"},
		{"a move to finish goes first", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))),
			member(b, pos("canary", 25), Action{Kind: Apply, To: pos("full", 100)}, func(r *store.Record) { p := pos("full", 100); r.Pending = &p })},
			"Rollback canary 10%, Apply full 100%"},
		{"a member rolled back under its commit sets the ceiling", []Member{member(a, pos("canary", 10), Action{Kind: Wait, Status: StatusRolledBack},
			func(r *store.Record) { r.Status = StatusRolledBack }), member(b, pos("canary", 25), soaking)},
			"Wait start, Rollback canary 5%"},
		{"under an older commit it does not", []Member{member(a, pos("canary", 10), Action{Kind: Wait, Status: StatusRolledBack},
			func(r *store.Record) { r.Status, r.Commit = StatusRolledBack, "c0" }), member(b, pos("canary", 25), soaking)},
			"Wait start, Wait start"},
		{"a member rolled back holds the others at its level", []Member{member(a, pos("canary", 10), Action{Kind: Wait, Status: StatusRolledBack},
			func(r *store.Record) { r.Status = StatusRolledBack }), member(b, pos("canary", 5), adv(pos("canary", 25)))},
			"Wait start, Wait start"},
		{"a member rolling back now holds the others at its new level", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))),
			member(b, pos("canary", 5), adv(pos("canary", 25)))},
			"Rollback canary 10%, Wait start"},
		{"a member out of sight is not rolled back", []Member{member(a, pos("canary", 50), rb(pos("canary", 10))), blind(member(b, pos("canary", 25), soaking))},
			"Rollback canary 10%, Wait start"},
		{"a member out of sight holds the others", []Member{member(a, pos("canary", 50), adv(pos("full", 100))), blind(member(b, pos("canary", 25), soaking))},
			"Wait start, Wait start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideGroup("g", tc.ms)
			if kinds(got) != tc.want {
				t.Fatalf("got %s\nwant %s", kinds(got), tc.want)
			}
			for i, x := range got {
				if x.Reason == "" && tc.ms[i].A.Reason != "" {
					t.Errorf("%s without a reason", x.Kind)
				}
				if x.Kind == Rollback && (x.Failure == nil || x.Failure.Member == "") {
					t.Errorf("rollback %d without the member that failed: %+v", i, x.Failure)
				}
			}
		})
	}
	// Alone, a member's action is its own.
	one := []Member{member(a, pos("canary", 10), adv(pos("canary", 50)))}
	if got := DecideGroup("g", one); got[0].Kind != Advance {
		t.Errorf("a group of one: %s", got[0].Kind)
	}
}

// A cycle over a group and plans alone: every plan gets its result, in the
// order asked, the group moves as one and the others each at their pace.
func TestCycleStepsAGroupAsAUnit(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	e.run.Workers = 4
	ds := groupAB(t, "c1")
	s1 := NewDesired(memberPlan(t, "s1", "", phasesA), "c1")
	s2 := NewDesired(memberPlan(t, "s2", "", phasesB), "c1")
	desired := []*Desired{s1, ds[1], s2, ds[0]} // not in name order
	done := false
	for n := 0; n < 500 && !done; n++ {
		res := e.run.Cycle(context.Background(), desired)
		if len(res) != len(desired) {
			t.Fatalf("%d results for %d plans", len(res), len(desired))
		}
		waits := true
		for i, r := range res {
			if r.Plan != desired[i].Plan.Metadata.Name {
				t.Fatalf("result %d is of %s, want %s", i, r.Plan, desired[i].Plan.Metadata.Name)
			}
			if r.Err != nil {
				t.Fatalf("%s: %v", r.Plan, r.Err)
			}
			waits = waits && r.Action.Kind == Wait
		}
		if lv := levels(t, e, ds); slices.Max(lv)-slices.Min(lv) > 1 {
			t.Fatalf("group members apart: %v", lv)
		}
		done = true
		for _, d := range desired {
			done = done && load(t, e, d.Plan.Metadata.Name).Status == StatusCompleted
		}
		if waits {
			e.clock.Step(10 * time.Minute)
		}
	}
	if !done {
		t.Fatal("not every plan completed")
	}
	// s1 has a's phases but no group: it left shadow after its own 30m
	// soak, a only once b had soaked its hour.
	left := func(name string) time.Duration {
		hist, _ := e.store.History(context.Background(), name, 0)
		for _, ev := range hist {
			if ev.Kind == string(Advance) && ev.From == pos("shadow", 0) {
				return ev.At.Sub(t0)
			}
		}
		t.Fatalf("%s never left shadow", name)
		return 0
	}
	if s, a := left("s1"), left("a"); s >= time.Hour || a < time.Hour {
		t.Errorf("left shadow: s1 after %v, a after %v", s, a)
	}
}
