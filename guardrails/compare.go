package guardrails

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails/stats"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// A comparison guardrail (compare in the plan) measures its source twice,
// once per side, `$side` in a query standing for each side's value, and
// judges the candidate against stable rather than against a fixed bound:
//
//   - With tolerances only, one value of each side: the candidate fails when
//     it is worse than stable by more than every tolerance set (maxIncrease
//     or maxDecrease as a share of stable's value, maxDelta in the value's
//     units).
//   - With a test, the samples of each side over the window (a range query
//     at the evaluation step, or one value per instance): the candidate
//     fails when the test finds it worse at the confidence asked, by at
//     least minEffect, and past the tolerances when some are set. Too few
//     samples is inconclusive, which reads as no data.
//
// With perShare each side's value is divided by the share of traffic it
// gets, so that rates compare per unit of traffic. Where stable takes no
// traffic (the candidate at 100%) there is no baseline: the guardrail is
// not judged there, and reads healthy saying so.

// compare measures g for both sides of p at the stay at, as of now.
func (e *Evaluator) compare(ctx context.Context, p *plan.Plan, g plan.Guardrail, at reconcile.Epoch, now time.Time) Measurement {
	c := *g.Compare
	stableShare, candShare := shares(p, at.Position)
	if stableShare == 0 {
		return Measurement{Detail: "not judged: stable takes no traffic at " + at.Position.String() + ", so there is no baseline"}
	}
	if c.Test != "" {
		return e.judge(ctx, p, g, at, now, [2]float64{stableShare, candShare})
	}
	src := SourceOf(g.MetricSource)
	var vs [2]float64
	if err := eachSide(p, func(i int, side plan.Side) error {
		m := e.providers.Measure(ctx, src.For(p, side), now)
		vs[i] = m.Value
		return m.Err
	}); err != nil {
		return Measurement{Err: err}
	}
	s, cv := vs[0], vs[1]
	if c.PerShare {
		if candShare == 0 {
			return Measurement{Err: fmt.Errorf("the candidate takes no traffic at %s, so it has no rate per share: %w", at.Position, ErrNoData)}
		}
		s, cv = s/stableShare, cv/candShare
	}
	cmp := reconcile.NewComparison(s, cv)
	cmp.PerShare = c.PerShare
	return verdict(c, cmp, cv-s, s)
}

// judge runs g's test on the samples of both sides over its window.
func (e *Evaluator) judge(ctx context.Context, p *plan.Plan, g plan.Guardrail, at reconcile.Epoch, now time.Time, share [2]float64) Measurement {
	c := *g.Compare
	src := SourceOf(g.MetricSource)
	provider, err := e.providers.Provider(src.Kind)
	if err != nil {
		return Measurement{Err: err}
	}
	sampler, ok := provider.(Sampler)
	if !ok {
		return Measurement{Err: fmt.Errorf("%s cannot be sampled for a test", describe(src.Kind).Noun)}
	}
	// Only samples taken at this position, once settled, count.
	from := now.Add(-g.TestWindow().Std())
	if start := at.Since.Add(g.Settle.Std()); start.After(from) {
		from = start
	}
	step := e.interval
	if g.Interval > 0 {
		step = g.Interval.Std()
	}
	var samples [2][]float64
	if err := eachSide(p, func(i int, side plan.Side) (err error) {
		samples[i], err = sampler.Samples(ctx, src.For(p, side), from, now, step)
		return err
	}); err != nil {
		return Measurement{Err: err}
	}
	if c.PerShare {
		if share[1] == 0 {
			return Measurement{Err: fmt.Errorf("the candidate takes no traffic at %s, so it has no rate per share: %w", at.Position, ErrNoData)}
		}
		for i := range samples {
			samples[i] = scaled(samples[i], 1/share[i])
		}
	}
	var minEffect float64
	if c.MinEffect != nil {
		minEffect = float64(*c.MinEffect)
	}
	j := stats.Judge(samples[0], samples[1], stats.Config{
		Confidence: c.TestConfidence(), MinEffect: minEffect, MinSamples: c.TestMinSamples(), HigherIsBetter: c.HigherIsBetter(),
	})
	cmp := reconcile.NewComparison(j.Result.StableMedian, j.Result.CandidateMedian)
	cmp.PerShare, cmp.Test = c.PerShare, c.Test
	cmp.StableSamples, cmp.CandidateSamples = j.Result.N, j.Result.M
	if j.Verdict == stats.Inconclusive {
		cmp.Verdict = reconcile.Inconclusive
		if !finite(cmp.Stable, cmp.Candidate) {
			return Measurement{Err: fmt.Errorf("inconclusive: %s: %w", j.Reason, ErrNoData)}
		}
		return Measurement{Value: cmp.Candidate, Compare: &cmp, Err: fmt.Errorf("inconclusive: %s: %w", j.Reason, ErrNoData)}
	}
	pv, shift := j.Result.P, j.Result.Shift
	cmp.PValue, cmp.Shift = &pv, &shift
	if j.Verdict == stats.Pass {
		cmp.Verdict = reconcile.Pass
		return Measurement{Value: cmp.Candidate, Compare: &cmp, Detail: j.Reason}
	}
	// The test finds the candidate worse; the tolerances, when set, say
	// by how much it may be.
	m := verdict(c, cmp, shift, j.Result.StableMedian)
	if m.Failed {
		m.Detail = j.Reason
		if c.Relative() != nil || c.MaxDelta != nil {
			m.Detail += ", past " + tolerance(c)
		}
	}
	return m
}

// eachSide runs f for stable (i 0) and the candidate (i 1) at once, and
// returns the first side's error, naming the side.
func eachSide(p *plan.Plan, f func(i int, side plan.Side) error) error {
	sides := [2]plan.Side{plan.Stable, plan.Candidate}
	var errs [2]error
	var wg sync.WaitGroup
	for i, side := range sides {
		wg.Go(func() { errs[i] = f(i, side) })
	}
	wg.Wait()
	for i, side := range sides {
		if errs[i] != nil {
			return fmt.Errorf("%s (%s): %w", side, p.SideValue(side), errs[i])
		}
	}
	return nil
}

// verdict judges a candidate that is delta from stable's value base (its
// difference, or the test's shift) against c's tolerances.
func verdict(c plan.Comparison, cmp reconcile.Comparison, delta, base float64) Measurement {
	worse := delta
	if c.HigherIsBetter() {
		worse = -delta
	}
	fail := worse > 0
	if tol := c.Relative(); tol != nil {
		rel := math.Inf(1)
		if base != 0 {
			rel = worse / math.Abs(base)
		} else if worse <= 0 {
			rel = 0
		}
		fail = fail && rel > float64(*tol)
	}
	if c.MaxDelta != nil {
		fail = fail && worse > *c.MaxDelta
	}
	m := Measurement{Value: cmp.Candidate, Compare: &cmp}
	cmp.Verdict = reconcile.Pass
	if fail {
		cmp.Verdict = reconcile.Fail
		m.Failed = true
		m.Detail = cmp.String() + ", past " + tolerance(c)
	}
	return m
}

// shares returns the share of requests, 0..1, each side gets at pos: in a
// mirror phase stable serves all of them and the candidate sees its copies.
func shares(p *plan.Plan, pos plan.Position) (stable, candidate float64) {
	if i := p.PhaseIndex(pos.Phase); i >= 0 && p.Spec.Phases[i].Kind() == plan.PhaseMirror {
		return 1, float64(p.Spec.Phases[i].Mirror) / 100
	}
	c := float64(pos.Percentage) / 100
	return 1 - c, c
}

func scaled(vs []float64, k float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = v * k
	}
	return out
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// tolerance says how much worse than stable a candidate may be: "+20%",
// "+20% and +0.01", "-0%"; "no worse" without tolerances.
func tolerance(c plan.Comparison) string {
	sign := "+"
	if c.HigherIsBetter() {
		sign = "-"
	}
	var parts []string
	if r := c.Relative(); r != nil {
		parts = append(parts, sign+r.String())
	}
	if c.MaxDelta != nil {
		parts = append(parts, sign+formatValue(*c.MaxDelta))
	}
	if len(parts) == 0 {
		return "no worse"
	}
	return strings.Join(parts, " and ")
}

// compareBound says what keeps a comparison healthy, as Bound does for a
// fixed bound: "at most +20% and +0.01 over stable", "at least stable -0%
// per share of traffic", "mann-whitney at 95%, min effect 10%: no worse
// than stable".
func compareBound(c plan.Comparison) string {
	var s string
	switch tol := tolerance(c); {
	case tol == "no worse" && c.HigherIsBetter():
		s = "no lower than stable"
	case tol == "no worse":
		s = "no higher than stable"
	case c.HigherIsBetter():
		s = "at least stable " + tol
	default:
		s = "at most stable " + tol
	}
	if c.PerShare {
		s += " per share of traffic"
	}
	if c.Test != "" {
		t := fmt.Sprintf("%s at %s", c.Test, plan.Percent(c.TestConfidence()))
		if c.MinEffect != nil {
			t += ", min effect " + c.MinEffect.String()
		}
		s = t + ": " + s
	}
	return s
}
