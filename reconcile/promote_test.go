package reconcile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// toCanary sets a member plan's target to the end of canary.
var toCanary = []string{"target: {phase: full}", "target: {phase: canary}"}

func promoting(t testing.TB, policy, phases string) *Desired {
	t.Helper()
	extra := ""
	if policy != "" {
		extra = "  promotion: " + policy + "\n"
	}
	return NewDesired(memberPlan(t, "p", extra, phases, toCanary...), "c1")
}

func TestDecidePromotes(t *testing.T) {
	atTop := at(pos("canary", 50), func(r *store.Record) { r.Flags = nil })
	for _, tc := range []struct {
		name   string
		d      *Desired
		rec    store.Record
		peers  map[string]Peer
		obs    func(*Observed)
		now    time.Duration
		kind   Kind
		to     plan.Position
		status string
		reason string
		until  time.Duration
	}{
		{name: "auto: not before the soak ends", d: promoting(t, "auto", phasesA), rec: atTop, now: time.Hour - time.Nanosecond,
			kind: Wait, status: StatusProgressing, reason: "soaking at canary 50% for 1h", until: time.Hour},
		{name: "auto: after the soak", d: promoting(t, "auto", phasesA), rec: atTop, now: time.Hour,
			kind: Promote, to: pos("full", 100), status: StatusHolding,
			reason: "canary 50% held for 1h with every guardrail healthy; committing the next target, full (promotion: auto)"},
		{name: "pull-request proposes", d: promoting(t, "pull-request", phasesA), rec: atTop, now: time.Hour,
			kind: Promote, to: pos("full", 100), status: StatusHolding, reason: "proposing the next target, full (promotion: pull-request)"},
		{name: "the soak counts from green", d: promoting(t, "auto", phasesA), now: time.Hour,
			rec:  at(pos("canary", 50), func(r *store.Record) { r.Flags, r.GreenSince = nil, t0.Add(time.Minute) }),
			kind: Wait, reason: "soaking", until: time.Hour + time.Minute},
		{name: "not with a guardrail not green", d: promoting(t, "auto", phasesA), rec: atTop, now: 10 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Pending, 0.07) },
			kind: Wait, status: StatusProgressing, reason: "waiting for every guardrail to be healthy"},
		{name: "a breach at the target still rolls back", d: promoting(t, "auto", phasesA), rec: atTop, now: 10 * time.Hour,
			obs:  func(o *Observed) { o.Guardrails = reading("errors", Breached, 0.2) },
			kind: Rollback, to: pos("canary", 10)},
		{name: "manual holds", d: promoting(t, "manual", phasesA), rec: atTop, now: 10 * time.Hour,
			kind: Wait, status: StatusHolding, reason: "holding at the target, canary 50%"},
		{name: "no policy holds", d: promoting(t, "", phasesA), rec: atTop, now: 10 * time.Hour,
			kind: Wait, status: StatusHolding, reason: "holding at the target, canary 50%"},
		{name: "not after a rollback under the same commit", d: promoting(t, "auto", phasesA), now: 10 * time.Hour,
			rec:  at(pos("canary", 50), func(r *store.Record) { r.Flags, r.Status, r.Reason = nil, StatusRolledBack, "rolled back from full" }),
			kind: Wait, status: StatusRolledBack, reason: "rolled back from full"},
		{name: "not into a position that failed under the commit", d: promoting(t, "auto", phasesA), now: 10 * time.Hour,
			rec: at(pos("canary", 50), func(r *store.Record) {
				r.Flags, r.Failed = nil, []store.Failure{{Position: pos("full", 100), Commit: "c1", Reason: "breach"}}
			}),
			kind: Wait, reason: "full 100% failed under commit c1"},
		{name: "the next phase's gate closed", now: 10 * time.Hour, rec: atTop,
			d:    promoting(t, "auto", "    - {name: shadow, mirror: 50}\n    - {name: canary, steps: [10, 50], soak: 1h}\n    - {name: full, steps: [100], after: [{plan: up, reached: full, for: 1h}]}\n"),
			kind: Wait, status: StatusHolding, reason: "waiting for up at full for 1h: no record or status file of that plan yet (before full 100%)"},
		{name: "the next phase's gate open", now: 10 * time.Hour, rec: atTop,
			d: promoting(t, "auto", "    - {name: shadow, mirror: 50}\n    - {name: canary, steps: [10, 50], soak: 1h}\n    - {name: full, steps: [100], after: [{plan: up, reached: full, for: 1h}]}\n"),
			peers: map[string]Peer{"up": {Plan: "up", Found: true, Position: pos("full", 100), Status: StatusCompleted,
				Reached: []store.Reached{{Position: pos("full", 100), At: t0}}}},
			kind: Promote, to: pos("full", 100)},
		{name: "the last phase: nothing to promote to", now: 10 * time.Hour,
			d:    NewDesired(memberPlan(t, "p", "  promotion: auto\n", phasesA), "c1"),
			rec:  at(pos("full", 100), func(r *store.Record) { r.Flags = nil }),
			kind: Wait, status: StatusCompleted},
		{name: "a run phase: its job first", now: 10 * time.Hour,
			d:    NewDesired(loadPlan(t, "    phase: canary\n    percentage: 10", "    phase: migrate", "  rollback:", "  promotion: auto\n  rollback:"), "c1"),
			rec:  at(pos("migrate", 25)),
			kind: StartJob},
		{name: "a run phase: its checks then", now: 10 * time.Hour,
			d:    NewDesired(loadPlan(t, "    phase: canary\n    percentage: 10", "    phase: migrate", "  rollback:", "  promotion: auto\n  rollback:"), "c1"),
			rec:  at(pos("migrate", 25), withJob(true, true)),
			kind: RunChecks},
		{name: "a run phase verified: promote", now: 10 * time.Hour,
			d:    NewDesired(loadPlan(t, "    phase: canary\n    percentage: 10", "    phase: migrate", "  rollback:", "  promotion: auto\n  rollback:"), "c1"),
			rec:  at(pos("migrate", 25), withJob(true, true), withCheck(store.CheckResult{Passed: true, At: t0})),
			kind: Promote, to: pos("full", 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			if rec.Plan == "" || rec.Plan == "base" {
				rec.Plan = tc.d.Plan.Metadata.Name
			}
			o := Observed{Record: rec, Peers: tc.peers, Driver: stateAt(tc.d, rec)}
			if tc.obs != nil {
				tc.obs(&o)
			}
			a := Decide(tc.d, o, t0.Add(tc.now))
			if a.Kind != tc.kind {
				t.Fatalf("kind %s, want %s (%s)", a.Kind, tc.kind, a.Reason)
			}
			if tc.to != (plan.Position{}) && a.To != tc.to {
				t.Errorf("to %s, want %s", a.To, tc.to)
			}
			if tc.status != "" && a.Status != tc.status {
				t.Errorf("status %s, want %s", a.Status, tc.status)
			}
			if !strings.Contains(a.Reason, tc.reason) || a.Reason == "" {
				t.Errorf("reason %q, want %q", a.Reason, tc.reason)
			}
			if tc.until != 0 && !a.Until.Equal(t0.Add(tc.until)) {
				t.Errorf("until %v, want %v", a.Until.Sub(t0), tc.until)
			}
			if strings.Contains(tc.name, "gate") && (len(a.Gates) != 1 || a.Gates[0].Phase != "full") {
				t.Errorf("gates %+v", a.Gates)
			}
		})
	}
}

// The runner hands a promotion to OnPromote, records the migration as
// holding, and moves nothing.
func TestRunnerPromotes(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	var calls []string
	e.run.OnPromote = func(_ context.Context, ds []*Desired, as []Action) {
		for i, d := range ds {
			calls = append(calls, d.Plan.Metadata.Name+" "+string(as[i].Kind)+" "+as[i].To.String())
		}
	}
	d := promoting(t, "auto", phasesA)
	rec := e.until(t, d, 10*time.Minute, 200, func(r store.Record) bool { return r.Position == pos("canary", 50) && r.Pending == nil })
	entered := rec.EnteredAt
	a, err := e.run.Step(context.Background(), d)
	if err != nil || a.Kind != Wait || len(calls) != 0 {
		t.Fatalf("just entered: %s %s %v; OnPromote %v", a.Kind, a.Reason, err, calls)
	}
	e.clock.SetTime(entered.Add(time.Hour))
	a, err = e.run.Step(context.Background(), d)
	if err != nil || a.Kind != Promote || a.To != pos("full", 100) {
		t.Fatalf("after the soak: %s %s %v", a.Kind, a.Reason, err)
	}
	if fmt.Sprint(calls) != "[p Promote full 100%]" {
		t.Errorf("OnPromote: %v", calls)
	}
	rec = load(t, e, "p")
	if rec.Position != pos("canary", 50) || rec.Status != StatusHolding || !strings.Contains(rec.Reason, "committing the next target, full") {
		t.Errorf("record: %+v", rec)
	}
	if got := e.fake.Driver("p").State().Traffic; got != 50 {
		t.Errorf("traffic %d after a promotion, want 50: the commit moves it", got)
	}
	// The commit lands: the target is full, and the migration goes on.
	q := *d.Plan
	q.Spec.Target = plan.Target{Phase: "full"}
	e.until(t, NewDesired(&q, "c2"), 10*time.Minute, 50, func(r store.Record) bool { return r.Position == pos("full", 100) })
}

// A group promotes only when every member asks, in one OnPromote.
func TestGroupPromotesTogether(t *testing.T) {
	for _, bPolicy := range []string{"auto", "manual"} {
		t.Run("b "+bPolicy, func(t *testing.T) {
			e := newEngine(t)
			e.run.Guards = &perPlan{}
			var calls [][]string
			e.run.OnPromote = func(_ context.Context, ds []*Desired, as []Action) {
				var c []string
				for i, d := range ds {
					c = append(c, d.Plan.Metadata.Name+" "+as[i].To.String())
				}
				calls = append(calls, c)
			}
			a := NewDesired(memberPlan(t, "a", "  group: g\n  promotion: auto\n", phasesA, toCanary...), "c1")
			b := NewDesired(memberPlan(t, "b", "  group: g\n  promotion: "+bPolicy+"\n", phasesB, toCanary...), "c1")
			ds := []*Desired{a, b}
			walkGroup(t, e, ds, 10*time.Minute, 300, allAt(ds, 3))
			entered := load(t, e, "a").EnteredAt

			// a has soaked (1h), b has not (2h): a waits for b.
			e.clock.SetTime(entered.Add(time.Hour))
			res := e.run.StepGroup(context.Background(), ds)
			if x := res[0].Action; x.Kind != Wait || !strings.Contains(x.Reason, "group g moves as one, waiting for b") {
				t.Fatalf("a: %s %s", x.Kind, x.Reason)
			}
			if len(calls) != 0 {
				t.Fatalf("OnPromote called with a alone: %v", calls)
			}
			e.clock.SetTime(entered.Add(2 * time.Hour))
			res = e.run.StepGroup(context.Background(), ds)
			if bPolicy == "manual" {
				if res[0].Action.Kind != Wait || res[1].Action.Kind != Wait || res[1].Action.Status != StatusHolding || len(calls) != 0 {
					t.Fatalf("b manual: %s %s / %s %s; OnPromote %v", res[0].Action.Kind, res[0].Action.Reason, res[1].Action.Kind, res[1].Action.Reason, calls)
				}
				return
			}
			for _, r := range res {
				if r.Err != nil || r.Action.Kind != Promote || r.Action.To != pos("full", 100) {
					t.Fatalf("%s: %s %s %v", r.Plan, r.Action.Kind, r.Action.Reason, r.Err)
				}
			}
			if fmt.Sprint(calls) != "[[a full 100% b full 100%]]" {
				t.Errorf("OnPromote: %v", calls)
			}
		})
	}
}
