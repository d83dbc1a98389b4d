package guardrails_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// sides is a provider whose value for each side the test sets: it reads
// `$side` filled in, as Prometheus runs it.
type sides struct {
	mu      sync.Mutex
	values  map[string]float64   // by query, $side filled in
	samples map[string][]float64 // by query, for a test
}

func (s *sides) query(src guardrails.Source) string {
	return strings.ReplaceAll(src.Block.(*plan.Prometheus).Query, plan.SideVar, src.Plan.SideValue(src.Side))
}

func (s *sides) Measure(_ context.Context, src guardrails.Source, _ time.Time) guardrails.Measurement {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[s.query(src)]
	if !ok {
		return guardrails.Measurement{Err: fmt.Errorf("the query returned no series: %w", guardrails.ErrNoData)}
	}
	return guardrails.Measurement{Value: v}
}

func (s *sides) Samples(_ context.Context, src guardrails.Source, _, _ time.Time, _ time.Duration) ([]float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples[s.query(src)], nil
}

func (s *sides) set(stable, candidate float64) {
	s.mu.Lock()
	s.values = map[string]float64{`q{version="v1"}`: stable, `q{version="v2"}`: candidate}
	s.mu.Unlock()
}

// comparePlan is a plan at canary 10%, then 100%, with guardrail g.
func comparePlan(g plan.Guardrail) *plan.Plan {
	p := planWith("shop", g)
	p.Spec.Driver.Docker = &plan.DockerDriver{Stable: plan.DockerWorkload{Service: "shop-v1"}, Candidate: plan.DockerWorkload{Service: "shop-v2"}}
	p.Spec.Sides = &plan.Sides{Stable: "v1", Candidate: "v2"}
	p.Spec.Phases = []plan.Phase{{Name: "canary", Steps: []int{10, 100}}}
	return p
}

func compared(name string, c plan.Comparison) plan.Guardrail {
	return plan.Guardrail{Name: name, MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: `q{version="$side"}`}}, Compare: &c}
}

func pct(p float64) *plan.Percent { v := plan.Percent(p); return &v }

func TestCompareTolerances(t *testing.T) {
	canary := reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 10}, Since: t0}
	tests := []struct {
		name              string
		c                 plan.Comparison
		stable, candidate float64
		want              reconcile.Health
		detail            string
	}{
		{"within a relative tolerance", plan.Comparison{MaxIncrease: pct(0.2)}, 0.10, 0.11, reconcile.Healthy, ""},
		{"past a relative tolerance", plan.Comparison{MaxIncrease: pct(0.2)}, 0.10, 0.13, reconcile.Breached,
			"candidate 0.13 vs stable 0.1 (+30%), past +20%"},
		{"better than stable passes", plan.Comparison{MaxIncrease: pct(0)}, 0.10, 0.01, reconcile.Healthy, ""},
		{"both tolerances: past the relative one only passes", plan.Comparison{MaxIncrease: pct(0.2), MaxDelta: ptr(0.05)}, 0.10, 0.13, reconcile.Healthy, ""},
		{"both tolerances: past both fails", plan.Comparison{MaxIncrease: pct(0.2), MaxDelta: ptr(0.05)}, 0.10, 0.2, reconcile.Breached, "past +20% and +0.05"},
		{"stable at 0: any increase is past a relative tolerance", plan.Comparison{MaxIncrease: pct(0.5)}, 0, 0.01, reconcile.Breached, "candidate 0.01 vs stable 0 (+0.01)"},
		{"stable at 0 and candidate at 0 pass", plan.Comparison{MaxIncrease: pct(0.5)}, 0, 0, reconcile.Healthy, ""},
		{"higher is better: lower than stable fails", plan.Comparison{MaxDecrease: pct(0.1)}, 100, 80, reconcile.Breached, "(-20%), past -10%"},
		{"per share: a 10% canary serving its share passes", plan.Comparison{MaxDecrease: pct(0), PerShare: true}, 90, 10, reconcile.Healthy, ""},
		{"per share: a 10% canary serving half its share fails", plan.Comparison{MaxDecrease: pct(0), PerShare: true}, 90, 5, reconcile.Breached,
			"candidate 50 vs stable 100 per share of traffic (-50%)"},
		{"both sides slow down together: no breach", plan.Comparison{MaxIncrease: pct(0.2)}, 2.0, 2.1, reconcile.Healthy, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &sides{}
			src.set(tt.stable, tt.candidate)
			e := guardrails.NewEvaluator(guardrails.Providers{"prometheus": src}, guardrails.WithClock(clocktesting.NewFakePassiveClock(t0)))
			rs, err := e.Evaluate(context.Background(), comparePlan(compared("g", tt.c)), canary)
			if err != nil {
				t.Fatal(err)
			}
			r := rs[0]
			if r.Health != tt.want || !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("got %s %q, want %s %q", r.Health, r.Detail, tt.want, tt.detail)
			}
			if r.Compare == nil || r.Value != r.Compare.Candidate {
				t.Fatalf("compare = %+v, value %v", r.Compare, r.Value)
			}
			if (r.Compare.Verdict == reconcile.Fail) != (tt.want == reconcile.Breached) {
				t.Errorf("verdict %s with health %s", r.Compare.Verdict, r.Health)
			}
		})
	}
}

func TestCompareFor(t *testing.T) {
	g := compared("p99", plan.Comparison{MaxIncrease: pct(0.2)})
	g.For = minutes(2)
	p := comparePlan(g)
	src := &sides{}
	clk := clocktesting.NewFakePassiveClock(t0)
	e := guardrails.NewEvaluator(guardrails.Providers{"prometheus": src}, guardrails.WithClock(clk))
	at := reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 10}, Since: t0}
	for _, s := range []struct {
		after             time.Duration
		stable, candidate float64
		want              reconcile.Health
	}{
		{0, 0.1, 0.1, reconcile.Healthy},
		{time.Minute, 0.1, 0.2, reconcile.Pending},
		{time.Minute, 0.2, 0.2, reconcile.Healthy}, // stable as bad: not the candidate's fault
		{time.Minute, 0.1, 0.2, reconcile.Pending},
		{2 * time.Minute, 0.1, 0.2, reconcile.Breached},
	} {
		clk.SetTime(clk.Now().Add(s.after))
		src.set(s.stable, s.candidate)
		rs, _ := e.Evaluate(context.Background(), p, at)
		if rs[0].Health != s.want {
			t.Fatalf("at %s: %s %s, want %s", clk.Now().Sub(t0), rs[0].Health, rs[0].Detail, s.want)
		}
	}
	// The rollback's reason gives both sides' values.
	rs, _ := e.Evaluate(context.Background(), p, at)
	if got := rs[0].Compare.String(); got != "candidate 0.2 vs stable 0.1 (+100%)" {
		t.Errorf("comparison = %q", got)
	}
	if b := guardrails.Bound(g); b != "at most stable +20% for 2m" {
		t.Errorf("bound = %q", b)
	}
}

func TestCompareNoBaseline(t *testing.T) {
	src := &sides{}
	src.set(0.1, 0.5)
	e := guardrails.NewEvaluator(guardrails.Providers{"prometheus": src}, guardrails.WithClock(clocktesting.NewFakePassiveClock(t0)))
	rs, _ := e.Evaluate(context.Background(), comparePlan(compared("g", plan.Comparison{MaxIncrease: pct(0.2)})),
		reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 100}, Since: t0})
	if rs[0].Health != reconcile.Healthy || !strings.Contains(rs[0].Detail, "stable takes no traffic at canary 100%") {
		t.Errorf("at 100%%: %s %q", rs[0].Health, rs[0].Detail)
	}
	// A side with no data is no data, naming the side.
	src.values = map[string]float64{`q{version="v2"}`: 1}
	rs, _ = e.Evaluate(context.Background(), comparePlan(compared("h", plan.Comparison{MaxIncrease: pct(0.2)})),
		reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 10}, Since: t0})
	if rs[0].Health != reconcile.NoData || !strings.Contains(rs[0].Detail, "stable (v1): the query returned no series") {
		t.Errorf("no stable: %s %q", rs[0].Health, rs[0].Detail)
	}
}

// lognormal draws n latencies around median m, rounded to the millisecond.
func lognormal(r *rand.Rand, n int, m float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		v := m * (1 + 0.4*r.NormFloat64())
		out[i] = float64(int(max(v, 0.001)*1000)) / 1000
	}
	return out
}

func TestCompareMannWhitney(t *testing.T) {
	g := compared("latency", plan.Comparison{Test: plan.TestMannWhitney, MinEffect: pct(0.1)})
	p := comparePlan(g)
	at := reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 10}, Since: t0}
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name              string
		stable, candidate []float64
		want              reconcile.Health
		verdict           reconcile.Verdict
	}{
		{"same distribution passes", lognormal(r, 40, 0.1), lognormal(r, 40, 0.1), reconcile.Healthy, reconcile.Pass},
		{"twice as slow fails", lognormal(r, 40, 0.1), lognormal(r, 40, 0.2), reconcile.Breached, reconcile.Fail},
		{"faster passes", lognormal(r, 40, 0.1), lognormal(r, 40, 0.05), reconcile.Healthy, reconcile.Pass},
		{"too few samples is inconclusive: no data", lognormal(r, 40, 0.1), lognormal(r, 3, 0.3), reconcile.NoData, reconcile.Inconclusive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &sides{samples: map[string][]float64{`q{version="v1"}`: tt.stable, `q{version="v2"}`: tt.candidate}}
			e := guardrails.NewEvaluator(guardrails.Providers{"prometheus": src}, guardrails.WithClock(clocktesting.NewFakePassiveClock(t0.Add(5*time.Minute))))
			rs, err := e.Evaluate(context.Background(), p, at)
			if err != nil {
				t.Fatal(err)
			}
			got := rs[0]
			if got.Health != tt.want || got.Compare == nil || got.Compare.Verdict != tt.verdict {
				t.Fatalf("got %s %+v %q, want %s %s", got.Health, got.Compare, got.Detail, tt.want, tt.verdict)
			}
			if tt.verdict != reconcile.Inconclusive && (got.Compare.PValue == nil || got.Compare.Shift == nil || got.Compare.StableSamples != len(tt.stable)) {
				t.Errorf("compare = %+v", got.Compare)
			}
		})
	}
}
