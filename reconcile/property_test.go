package reconcile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// scripted is a Guardrails whose readings the test sets.
type scripted struct{ readings []Reading }

func (s *scripted) Evaluate(context.Context, *plan.Plan, Epoch) ([]Reading, error) {
	return append([]Reading(nil), s.readings...), nil
}

// TestInvariants drives the real Runner (in-memory store, fake driver, fake
// clock) through random sequences of target changes, guardrail readings and
// passing time over random plans, and checks after every step that:
//   - the candidate never gets more traffic than the target allows;
//   - a step is never left before its soak ended with guardrails green;
//   - after a breach the position is at or below the rollback target;
//   - a completed irreversible phase is never crossed backward.
func TestInvariants(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	const sequences, steps = 150, 120
	kinds := map[Kind]int{}
	defer func() { t.Logf("actions taken: %v", kinds) }()
	for seq := range sequences {
		seed := uint64(seq) + 1
		r := rand.New(rand.NewPCG(seed, 99))
		name := fmt.Sprintf("p%d", seq)
		p, err := v.ValidateOne(plan.Source{Path: name + ".yaml", Data: plantest.Generate(r, name)})
		if err != nil {
			t.Fatalf("seed %d: generated plan: %v", seed, err)
		}
		if !runSequence(t, r, p, steps, kinds) {
			t.Fatalf("seed %d failed (plan %s)", seed, name)
		}
	}
}

func runSequence(t *testing.T, r *rand.Rand, p *plan.Plan, steps int, kinds map[Kind]int) bool {
	t.Helper()
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(t0)
	f := fake.New(fake.WithClock(clk))
	st := newMemStore()
	guards := &scripted{}
	for _, g := range p.Spec.Guardrails {
		guards.readings = append(guards.readings, Reading{Name: g.Name, Health: Healthy})
	}
	run := &Runner{Store: st, Open: f.Opener(), Guards: guards, Clock: clk, Workers: 1}
	all := p.Timeline(plan.Last)
	commit := 0
	desired := func() *Desired { return NewDesired(p, fmt.Sprintf("c%d", commit)) }
	d := desired()
	var floor *plan.Position // a completed irreversible step

	for i := range steps {
		switch r.IntN(6) {
		case 0: // a commit moves the target somewhere in the plan
			s := all[r.IntN(len(all))]
			pct := s.Percentage
			p.Spec.Target = plan.Target{Phase: s.Phase, Percentage: &pct}
			if s.Kind != plan.PhaseSteps {
				p.Spec.Target.Percentage = nil
			}
			commit++
			d = desired()
		case 1: // guardrail readings change, mostly back to healthy
			for j := range guards.readings {
				guards.readings[j].Health = []Health{Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Pending, Breached, NoData, Error}[r.IntN(10)]
				guards.readings[j].Value = r.Float64()
			}
		case 2, 3: // time passes: around the current soak, to land near its end
			soak := time.Hour
			if cur, err := st.Load(ctx, p.Metadata.Name); err == nil {
				if s, _, ok := d.step(cur.Position); ok && s.Soak > 0 {
					soak = s.Soak.Std()
				}
			}
			switch r.IntN(3) {
			case 0:
				clk.Step(time.Duration(r.Int64N(int64(2 * soak))))
			case 1:
				clk.Step(soak - time.Second)
			default:
				clk.Step(time.Duration(r.Int64N(int64(time.Minute))))
			}
		}

		before, _ := st.Load(ctx, p.Metadata.Name)
		readings := append([]Reading(nil), guards.readings...)
		now := clk.Now()
		a, err := run.Step(ctx, d)
		if err != nil {
			t.Errorf("step %d: %v", i, err)
			return false
		}
		kinds[a.Kind]++
		after, _ := st.Load(ctx, p.Metadata.Name)
		fail := func(format string, args ...any) bool {
			t.Errorf("step %d, %s → %s by %s (%s): %s", i, before.Position, after.Position, a.Kind, a.Reason, fmt.Sprintf(format, args...))
			return false
		}

		// Traffic never exceeds the target: forward moves stay at or
		// below it, and the driver shows the recorded position.
		if a.Kind == Advance && p.Compare(a.To, d.Target) > 0 {
			return fail("advanced past the target %s", d.Target)
		}
		if got := f.Driver(p.Metadata.Name).State(); a.Kind != Wait && a.Kind != RunChecks && a.Kind != StartJob && a.Kind != Checkpoint {
			if want := d.targetOf(after.Position, after.Decommissioned); !got.Matches(want, 0) {
				return fail("driver shows %+v, record says %s", got, after.Position)
			}
		}

		// A step is left only after its soak with guardrails green.
		if a.Kind == Advance && !before.Position.IsStart() {
			step, _, _ := d.step(before.Position)
			start := before.EnteredAt
			if before.GreenSince.After(start) {
				start = before.GreenSince
			}
			if now.Before(start.Add(step.Soak.Std())) {
				return fail("left %s after %v, soak %v", before.Position, now.Sub(before.EnteredAt), step.Soak)
			}
			for _, g := range readings {
				if g.Health.Under(p.Spec.Rollback.NoData()) != Healthy {
					return fail("left %s with guardrail %s %s", before.Position, g.Name, g.Health)
				}
			}
		}

		// After a breach the position is at or below the rollback target.
		if a.Kind == Rollback {
			step, _, _ := d.step(before.Position)
			if step.OnBreach.To == nil || p.Compare(after.Position, *step.OnBreach.To) > 0 {
				return fail("rolled back to %s, the plan says %v", after.Position, step.OnBreach.To)
			}
		}

		// An irreversible phase, once completed, is never crossed backward.
		if floor != nil && p.Compare(after.Position, *floor) < 0 {
			return fail("crossed the point of no return %s backward", *floor)
		}
		if a.Kind == Advance {
			if step, _, ok := d.step(before.Position); ok && step.Irreversible {
				x := before.Position
				floor = &x
			}
		}
	}
	return true
}
