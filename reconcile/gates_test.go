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

func intp(n int) *int { return &n }

// climbed is a climb: each position entered at t0 plus the duration after
// it.
func climbed(steps ...any) []store.Reached {
	var out []store.Reached
	for i := 0; i+1 < len(steps); i += 2 {
		out = append(out, store.Reached{Position: steps[i].(plan.Position), At: t0.Add(steps[i+1].(time.Duration))})
	}
	return out
}

func TestJudgeGate(t *testing.T) {
	up := memberPlan(t, "up", "", phasesA) // shadow, canary [10, 50], full [100]
	climb := climbed(pos("shadow", 0), time.Duration(0), pos("canary", 10), time.Hour, pos("canary", 50), 2*time.Hour, pos("full", 100), 4*time.Hour)
	peer := func(at plan.Position, reached []store.Reached, mutate ...func(*Peer)) Peer {
		p := Peer{Plan: "up", Found: true, Position: at, Status: StatusProgressing, Reached: reached, Source: "record", Order: up}
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	noOrder := func(p *Peer) { p.Order, p.Source = nil, "status file" }
	gate := func(reached string, pct *int, d time.Duration) plan.PlanGate {
		return plan.PlanGate{Gate: plan.Gate{Plan: "up", Reached: reached, Percentage: pct, For: plan.Duration(d)}, Path: "spec.after.0"}
	}
	for _, tc := range []struct {
		name    string
		g       plan.PlanGate
		p       Peer
		now     time.Duration
		open    bool
		since   time.Duration // -1: zero
		opensAt time.Duration // -1: zero
		reason  string
	}{
		{"not found", gate("full", nil, time.Hour), Peer{Plan: "up"}, 10 * time.Hour, false, -1, -1,
			"waiting for up at full for 1h: no record or status file of that plan yet"},
		{"breached", gate("canary", nil, 0), peer(pos("full", 100), climb, func(p *Peer) { p.Status = StatusBreached }), 10 * time.Hour, false, -1, -1,
			"waiting for up at canary: it is Breached at full 100%"},
		{"frozen", gate("canary", nil, 0), peer(pos("full", 100), climb, func(p *Peer) { p.Status = StatusFrozen }), 10 * time.Hour, false, -1, -1,
			"it is Frozen at full 100%"},
		{"not reached yet", gate("full", nil, time.Hour), peer(pos("canary", 50), climb[:3]), 10 * time.Hour, false, -1, -1,
			"waiting for up at full for 1h: it stands at canary 50%"},
		{"reached, not held long enough", gate("full", nil, time.Hour), peer(pos("full", 100), climb), 4*time.Hour + 30*time.Minute, false, 4 * time.Hour, 5 * time.Hour,
			"waiting for up at full for 1h: held since 2026-11-01T16:00:00Z, until 2026-11-01T17:00:00Z"},
		{"held", gate("full", nil, time.Hour), peer(pos("full", 100), climb), 5 * time.Hour, true, 4 * time.Hour, 5 * time.Hour,
			"up at full for 1h: reached full 100% at 2026-11-01T16:00:00Z"},
		{"a phase is reached at its first step", gate("canary", nil, time.Hour), peer(pos("canary", 10), climb[:2]), 2 * time.Hour, true, time.Hour, 2 * time.Hour, ""},
		{"a later phase counts for an earlier one", gate("canary", nil, 0), peer(pos("full", 100), climb), 4 * time.Hour, true, time.Hour, time.Hour, ""},
		{"held since the first position at or above", gate("shadow", nil, 30*time.Minute), peer(pos("full", 100), climb), 31 * time.Minute, true, 0, 30 * time.Minute, ""},
		{"a percentage below", gate("canary", intp(50), 0), peer(pos("canary", 10), climb[:2]), 10 * time.Hour, false, -1, -1,
			"waiting for up at canary 50%: it stands at canary 10%"},
		{"a percentage reached", gate("canary", intp(50), time.Hour), peer(pos("canary", 50), climb[:3]), 3 * time.Hour, true, 2 * time.Hour, 3 * time.Hour, ""},
		{"a percentage between steps", gate("canary", intp(30), time.Hour), peer(pos("canary", 50), climb[:3]), 2*time.Hour + time.Minute, false, 2 * time.Hour, 3 * time.Hour, "held since 2026-11-01T14:00:00Z, until 2026-11-01T15:00:00Z"},
		{"a percentage passed in a later phase", gate("canary", intp(50), 0), peer(pos("full", 100), climb), 10 * time.Hour, true, 2 * time.Hour, 2 * time.Hour, ""},
		{"after a move back the climb is cut", gate("full", nil, 0), peer(pos("canary", 50), climb[:3]), 10 * time.Hour, false, -1, -1, "it stands at canary 50%"},

		// Only a status file: no order of the peer's positions, only the
		// phase's name and the percentage.
		{"status file: same phase, enough", gate("canary", intp(30), time.Hour), peer(pos("canary", 50), climb[:3], noOrder), 3 * time.Hour, true, 2 * time.Hour, 3 * time.Hour, ""},
		{"status file: same phase, not enough", gate("canary", intp(60), 0), peer(pos("canary", 50), climb[:3], noOrder), 10 * time.Hour, false, -1, -1, "it stands at canary 50%"},
		{"status file: the phase in the climb", gate("canary", nil, 0), peer(pos("full", 100), climb, noOrder), 10 * time.Hour, true, time.Hour, time.Hour, ""},
		{"status file: a later phase alone does not tell", gate("canary", nil, 0), peer(pos("full", 100), climb[3:], noOrder), 10 * time.Hour, false, -1, -1, "it stands at full 100%"},
		{"a phase the peer's plan does not have: by name", gate("beta", nil, 0), peer(pos("beta", 0), []store.Reached{{Position: pos("beta", 0), At: t0}}), time.Hour, true, 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := JudgeGate(tc.g, tc.p, t0.Add(tc.now))
			if st.Open != tc.open {
				t.Errorf("open %t, want %t (%s)", st.Open, tc.open, st.Reason)
			}
			at := func(d time.Duration) time.Time {
				if d < 0 {
					return time.Time{}
				}
				return t0.Add(d)
			}
			if !st.Since.Equal(at(tc.since)) || !st.OpensAt.Equal(at(tc.opensAt)) {
				t.Errorf("since %v opens at %v, want %v %v", st.Since, st.OpensAt, at(tc.since), at(tc.opensAt))
			}
			if !strings.Contains(st.Reason, tc.reason) || st.Reason == "" {
				t.Errorf("reason %q, want %q", st.Reason, tc.reason)
			}
			if st.Gate != tc.g.Gate || st.Path != tc.g.Path {
				t.Errorf("the gate judged: %+v", st.PlanGate)
			}
		})
	}
}

func TestClimb(t *testing.T) {
	p := memberPlan(t, "up", "", phasesA)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	show := func(rs []store.Reached) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%s@%d", r.Position, int(r.At.Sub(t0).Hours())))
		}
		return strings.Join(s, ", ")
	}
	var c []store.Reached
	steps := []struct {
		to   plan.Position
		at   int
		want string
	}{
		{pos("shadow", 0), 0, "shadow 0%@0"},
		{pos("canary", 10), 1, "shadow 0%@0, canary 10%@1"},
		{pos("canary", 10), 2, "shadow 0%@0, canary 10%@1"}, // entered again (a finished move): no duplicate
		{pos("canary", 50), 3, "shadow 0%@0, canary 10%@1, canary 50%@3"},
		{pos("full", 100), 4, "shadow 0%@0, canary 10%@1, canary 50%@3, full 100%@4"},
		{pos("canary", 10), 5, "shadow 0%@0, canary 10%@1"}, // back: held at or above canary 10% since 1
		{pos("canary", 50), 6, "shadow 0%@0, canary 10%@1, canary 50%@6"},
		{plan.Start, 7, ""},
		{pos("shadow", 0), 8, "shadow 0%@8"},
	}
	for _, s := range steps {
		c = Climb(p, c, s.to, at(s.at))
		if got := show(c); got != s.want {
			t.Fatalf("after %s at %d: %s, want %s", s.to, s.at, got, s.want)
		}
	}
	// A climb that names start is cleaned of it.
	if got := show(Climb(p, []store.Reached{{Position: plan.Start, At: t0}}, pos("shadow", 0), at(1))); got != "shadow 0%@1" {
		t.Errorf("start in the climb: %s", got)
	}
	// The input is not changed.
	in := climbed(pos("shadow", 0), time.Duration(0), pos("canary", 10), time.Hour)
	_ = Climb(p, in, plan.Start, at(2))
	if len(in) != 2 || in[1].Position != pos("canary", 10) {
		t.Errorf("Climb changed its input: %+v", in)
	}
}

// gated is plan down: it waits for up, at spec.after or at a phase.
const (
	afterUp     = "  after: [{plan: up, reached: canary, percentage: 50, for: 1h}]\n"
	canaryAfter = "    - {name: shadow, mirror: 50, soak: 30m}\n    - {name: canary, steps: [10, 50], soak: 1h, after: [{plan: up, reached: full}]}\n    - {name: full, steps: [100]}\n"
)

func decideAt(d *Desired, rec store.Record, peers map[string]Peer, now time.Duration) Action {
	rec.Plan = d.Plan.Metadata.Name
	o := Observed{Record: rec, Peers: peers, Driver: stateAt(d, rec)}
	return Decide(d, o, t0.Add(now))
}

func TestDecideWaitsOnGates(t *testing.T) {
	up := memberPlan(t, "up", "", phasesA)
	upAt := func(p plan.Position, reached ...any) map[string]Peer {
		return map[string]Peer{"up": {Plan: "up", Found: true, Position: p, Status: StatusProgressing, Reached: climbed(reached...), Order: up}}
	}
	d := NewDesired(memberPlan(t, "down", afterUp, phasesB), "c1")
	start := store.Record{}

	// No peer at all: waits at start, for ever as far as it knows.
	a := decideAt(d, start, nil, 0)
	if a.Kind != Wait || a.Status != StatusWaiting || !a.Until.IsZero() || len(a.Gates) != 1 || a.Gates[0].Open ||
		a.Reason != "waiting for up at canary 50% for 1h: no record or status file of that plan yet (before shadow 0%)" {
		t.Fatalf("no peer: %s %s until %v gates %+v: %s", a.Kind, a.Status, a.Until, a.Gates, a.Reason)
	}
	// The peer at canary 50% for 30 minutes: waits until the hour is up.
	peers := upAt(pos("canary", 50), pos("shadow", 0), time.Duration(0), pos("canary", 10), time.Hour, pos("canary", 50), 2*time.Hour)
	a = decideAt(d, start, peers, 2*time.Hour+30*time.Minute)
	if a.Kind != Wait || !a.Until.Equal(t0.Add(3*time.Hour)) || !strings.Contains(a.Reason, "waiting for up at canary 50% for 1h: held since 2026-11-01T14:00:00Z, until 2026-11-01T15:00:00Z (before shadow 0%)") {
		t.Fatalf("held 30m: %s until %v: %s", a.Kind, a.Until, a.Reason)
	}
	// Held: it starts, and says what it passed.
	a = decideAt(d, start, peers, 3*time.Hour)
	if a.Kind != Advance || a.To != pos("shadow", 0) || len(a.Gates) != 1 || !a.Gates[0].Open {
		t.Fatalf("held 1h: %s %s gates %+v", a.Kind, a.Reason, a.Gates)
	}
	// The gate is only for leaving start: once started, up going back
	// holds nothing.
	a = decideAt(d, at(pos("shadow", 0), func(r *store.Record) { r.Flags = nil }), nil, 2*time.Hour)
	if a.Kind != Advance || a.To != pos("canary", 5) || a.Gates != nil {
		t.Fatalf("after start: %s %s gates %+v", a.Kind, a.Reason, a.Gates)
	}
	// A breached peer closes it again.
	breachedUp := upAt(pos("canary", 50), pos("canary", 50), time.Duration(0))
	p := breachedUp["up"]
	p.Status = StatusBreached
	breachedUp["up"] = p
	if a := decideAt(d, start, breachedUp, 10*time.Hour); a.Kind != Wait || !strings.Contains(a.Reason, "it is Breached at canary 50%") {
		t.Fatalf("breached peer: %s %s", a.Kind, a.Reason)
	}

	// A phase's gate holds the entry into that phase only.
	d = NewDesired(memberPlan(t, "down", "", canaryAfter), "c1")
	if a := decideAt(d, start, nil, 0); a.Kind != Advance || a.To != pos("shadow", 0) || a.Gates != nil {
		t.Fatalf("start, gate on canary: %s %s", a.Kind, a.Reason)
	}
	shadow := at(pos("shadow", 0), func(r *store.Record) { r.Flags = nil })
	if a := decideAt(d, shadow, nil, 10*time.Minute); a.Kind != Wait || !strings.Contains(a.Reason, "soaking") {
		t.Fatalf("soaking: %s %s", a.Kind, a.Reason)
	}
	a = decideAt(d, shadow, upAt(pos("canary", 50), pos("canary", 50), time.Duration(0)), time.Hour)
	if a.Kind != Wait || a.Status != StatusWaiting || len(a.Gates) != 1 || a.Gates[0].Phase != "canary" ||
		a.Reason != "waiting for up at full: it stands at canary 50% (before canary 10%)" {
		t.Fatalf("into canary: %s %s gates %+v: %s", a.Kind, a.Status, a.Gates, a.Reason)
	}
	full := upAt(pos("full", 100), pos("canary", 50), time.Duration(0), pos("full", 100), 30*time.Minute)
	if a := decideAt(d, shadow, full, time.Hour); a.Kind != Advance || a.To != pos("canary", 10) || len(a.Gates) != 1 || !a.Gates[0].Open {
		t.Fatalf("into canary, up at full: %s %s", a.Kind, a.Reason)
	}
	// Inside the phase, its gate is passed.
	if a := decideAt(d, at(pos("canary", 10), func(r *store.Record) { r.Flags = nil }), nil, time.Hour); a.Kind != Advance || a.To != pos("canary", 50) || a.Gates != nil {
		t.Fatalf("inside canary: %s %s", a.Kind, a.Reason)
	}

	// Two gates: Until is when the last of them opens.
	d = NewDesired(memberPlan(t, "down", "  after: [{plan: up, reached: canary, for: 1h}, {plan: up, reached: full, for: 2h}]\n", phasesB), "c1")
	a = decideAt(d, start, full, 40*time.Minute)
	if a.Kind != Wait || !a.Until.Equal(t0.Add(150*time.Minute)) || len(a.Gates) != 2 {
		t.Fatalf("two gates: %s until %v: %s", a.Kind, a.Until.Sub(t0), a.Reason)
	}
}

// A plan gated on another, both driven by one runner: it starts only once
// the other has held canary 50% for an hour, read from the other's record
// through Runner.Peers.
func TestRunnerGatesOnAPeer(t *testing.T) {
	e := newEngine(t)
	e.run.Guards = &perPlan{}
	up := NewDesired(memberPlan(t, "up", "", phasesA), "c1")
	down := NewDesired(memberPlan(t, "down", afterUp, phasesB), "c1")
	var asked []string
	e.run.Peers = func(ctx context.Context, names []string) map[string]Peer {
		out := map[string]Peer{}
		for _, n := range names {
			asked = append(asked, n)
			rec, err := e.store.Load(ctx, n)
			if err != nil || rec.UpdatedAt.IsZero() {
				continue
			}
			out[n] = Peer{Plan: n, Found: true, Position: rec.Position, Status: rec.Status, Reached: rec.Reached, Source: "record", Order: up.Plan}
		}
		return out
	}
	for range 300 {
		waits := true
		for _, r := range e.run.Cycle(context.Background(), []*Desired{up, down}) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			waits = waits && r.Action.Kind == Wait
		}
		if load(t, e, "down").Position == pos("shadow", 0) {
			break
		}
		if waits {
			e.clock.Step(10 * time.Minute)
		}
	}
	rec := load(t, e, "down")
	if rec.Position != pos("shadow", 0) {
		t.Fatalf("down never started: %+v", rec)
	}
	upRec := load(t, e, "up")
	var reached time.Time
	for _, r := range upRec.Reached {
		if r.Position == pos("canary", 50) {
			reached = r.At
		}
	}
	if reached.IsZero() || rec.EnteredAt.Sub(reached) < time.Hour {
		t.Errorf("down entered shadow at %v, up reached canary 50%% at %v (climb %+v)", rec.EnteredAt.Sub(t0), reached.Sub(t0), upRec.Reached)
	}
	hist, _ := e.store.History(context.Background(), "down", 0)
	waited := false
	for _, ev := range hist {
		waited = waited || ev.Kind == string(Wait) && strings.Contains(ev.Reason, "waiting for up at canary 50% for 1h")
	}
	if !waited {
		t.Errorf("down's history does not say it waited for up: %v", kindsOf(hist))
	}
	if len(asked) == 0 || strings.Join(asked, "") != strings.Repeat("up", len(asked)) {
		t.Errorf("Peers asked for %v", asked)
	}
}
