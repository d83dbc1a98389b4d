package guardrails_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// history is a RangeQuerier serving series made by a function of time, at
// every step, for each query.
type history map[string]func(at time.Time) map[string]float64

// providers are the providers of a backtest reading h: HTTP checks have no
// history.
func (h history) providers() guardrails.Providers {
	return guardrails.Providers{"prometheus": h, "http": guardrails.NewHTTP(nil)}
}

func (h history) Measure(context.Context, guardrails.Source, time.Time) guardrails.Measurement {
	return guardrails.Measurement{Err: errors.New("a backtest measures nothing now")}
}

func (h history) Range(_ context.Context, src guardrails.Source, start, end time.Time, step time.Duration) ([]guardrails.Series, error) {
	query := src.Block.(*plan.Prometheus).Query
	f, ok := h[query]
	if !ok {
		return nil, fmt.Errorf("bad_data: unknown query %q", query)
	}
	bySeries := map[string]*guardrails.Series{}
	var out []*guardrails.Series
	for t := start; !t.After(end); t = t.Add(step) {
		for labels, v := range f(t) {
			s, ok := bySeries[labels]
			if !ok {
				s = &guardrails.Series{Labels: labels}
				bySeries[labels] = s
				out = append(out, s)
			}
			s.Points = append(s.Points, guardrails.Point{At: t, Value: v})
		}
	}
	res := make([]guardrails.Series, len(out))
	for i, s := range out {
		res[i] = *s
	}
	return res, nil
}

// shopPlan: shadow (mirror) soaks 10m, canary goes 5, 10, 25 soaking 10m
// each, target canary 25, guardrails error-rate (max 0.05 for 2m) and an
// HTTP health check.
func shopPlan() *plan.Plan {
	p := planWith("shop",
		plan.Guardrail{Name: "error-rate", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "errors"}}, Max: ptr(0.05), For: minutes(2)},
		plan.Guardrail{Name: "health", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://shop/health"}}, Failures: 3})
	p.Spec.Phases = []plan.Phase{
		{Name: "shadow", Mirror: 100, Soak: minutes(10)},
		{Name: "canary", Steps: []int{5, 10, 25}, Soak: minutes(10), Checkpoint: "pre-canary"},
	}
	p.Spec.Target = plan.Target{Phase: "canary"}
	return p
}

// events writes a backtest's events one a line: "10:10:00 Advance shadow 0%
// → canary 5%".
func events(b *guardrails.Backtest) string {
	var lines []string
	for _, e := range b.Events {
		lines = append(lines, fmt.Sprintf("%s %s %s → %s", e.At.Format("15:04:05"), e.Action, e.From, e.To))
	}
	return strings.Join(lines, "\n")
}

func TestBacktest(t *testing.T) {
	// The error rate is fine until 10:43, then 0.2 (a step of 30s puts the
	// first bad evaluation at 10:43:00); NaN at 10:05 (no data).
	h := history{"errors": func(at time.Time) map[string]float64 {
		switch {
		case at.Equal(t0.Add(5 * time.Minute)):
			return map[string]float64{"{}": math.NaN()}
		case at.Before(t0.Add(43 * time.Minute)):
			return map[string]float64{"{}": 0.01}
		}
		return map[string]float64{"{}": 0.2}
	}}
	b, err := guardrails.RunBacktest(context.Background(), shopPlan(), h.providers(), guardrails.BacktestOptions{From: t0, To: t0.Add(time.Hour), Step: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"10:00:00 Advance start → shadow 0%",
		// no data at 10:05 pauses the soak (onNoData hold): it starts
		// again at 10:05:30 and ends 10m later.
		"10:05:00 Pause shadow 0% → shadow 0%",
		"10:05:30 Resume shadow 0% → shadow 0%",
		"10:15:30 Checkpoint shadow 0% → shadow 0%",
		"10:15:30 Advance shadow 0% → canary 5%",
		"10:25:30 Advance canary 5% → canary 10%",
		"10:35:30 Advance canary 10% → canary 25%",
		"10:35:30 Completed canary 25% → canary 25%",
		"10:45:00 Rollback canary 25% → canary 10%",
		// The fault persists: judged afresh at each position it walks
		// down one step per `for` (2m), never straight to start.
		"10:47:00 Rollback canary 10% → canary 5%",
		"10:49:00 Rollback canary 5% → shadow 0%",
		"10:51:00 Rollback shadow 0% → start",
	}, "\n")
	if got := events(b); got != want {
		t.Fatalf("events:\n%s\nwant:\n%s", got, want)
	}
	rb := b.Events[8]
	if rb.Guardrail != "error-rate" || rb.Value != 0.2 || rb.Bound != "max 0.05 for 2m" ||
		rb.Reason != "guardrail error-rate is 0.2, max 0.05 for 2m at canary 25%; rolling back to canary 10%" {
		t.Fatalf("rollback %+v", rb)
	}
	if !b.End.RolledBack || !b.End.At.Equal(t0.Add(time.Hour)) || !b.End.Position.IsStart() || b.End.Status != reconcile.StatusRolledBack {
		t.Fatalf("end %+v", b.End)
	}
	// The guardrails are replayed to the end, judged afresh after every
	// move, and not at all at start.
	g := b.Guardrails[0]
	var changes []string
	for _, c := range g.Changes {
		changes = append(changes, c.Since.Format("15:04:05")+" "+string(c.Health))
	}
	if got := strings.Join(changes, ", "); got != "10:00:00 Healthy, 10:05:00 NoData, 10:05:30 Healthy, 10:43:00 Pending, 10:45:00 Breached, "+
		"10:45:00 Pending, 10:47:00 Breached, 10:47:00 Pending, 10:49:00 Breached, 10:49:00 Pending, 10:51:00 Breached" {
		t.Fatalf("changes: %s", got)
	}
	if g.Worst == nil || g.Worst.Value != 0.2 || !g.Replayed {
		t.Fatalf("worst %+v", g.Worst)
	}
	if h := b.Guardrails[1]; h.Replayed || !strings.Contains(h.Note, "no history") || len(h.Changes) != 0 {
		t.Fatalf("http guardrail %+v", h)
	}
}

func TestBacktestNoBreach(t *testing.T) {
	h := history{"errors": func(time.Time) map[string]float64 { return map[string]float64{`{version="v2"}`: 0} }}
	b, err := guardrails.RunBacktest(context.Background(), shopPlan(), h.providers(), guardrails.BacktestOptions{From: t0, To: t0.Add(20 * time.Minute), Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if b.End.RolledBack || b.End.Position != (plan.Position{Phase: "canary", Percentage: 10}) || !b.End.At.Equal(t0.Add(20*time.Minute)) ||
		b.End.Reason != "soaking at canary 10% for 10m" {
		t.Fatalf("end %+v", b.End)
	}
	if b.Guardrails[0].Worst.Value != 0 {
		t.Fatalf("worst %+v", b.Guardrails[0].Worst)
	}
}

func TestBacktestReplay(t *testing.T) {
	// Two series at once is an error at those times only; a series that
	// changes its labels is fine.
	h := history{"errors": func(at time.Time) map[string]float64 {
		m := at.Sub(t0) / time.Minute
		switch {
		case m < 2:
			return map[string]float64{`{pod="a"}`: 0}
		case m < 4:
			return map[string]float64{`{pod="a"}`: 0, `{pod="b"}`: 0}
		case m < 6:
			return map[string]float64{`{pod="b"}`: 0}
		}
		return nil
	}}
	p := shopPlan()
	p.Spec.Rollback.OnNoData = plan.OnNoDataIgnore
	b, err := guardrails.RunBacktest(context.Background(), p, h.providers(), guardrails.BacktestOptions{From: t0, To: t0.Add(8 * time.Minute), Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range b.Guardrails[0].Changes {
		got = append(got, c.Since.Format("15:04")+" "+string(c.Health)+" "+c.Detail)
	}
	want := []string{
		"10:00 Healthy ",
		`10:02 Error the query returned 2 series ({pod="a"}, {pod="b"}), want one: aggregate them, with sum or max, or select one: more than one series`,
		"10:04 Healthy ",
		"10:06 NoData no sample at 2026-11-27T10:06:00Z: no data",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestBacktestErrors(t *testing.T) {
	h := history{}
	opts := guardrails.BacktestOptions{From: t0, To: t0.Add(time.Hour)}
	if _, err := guardrails.RunBacktest(context.Background(), shopPlan(), h.providers(), opts); err == nil || !strings.Contains(err.Error(), `guardrail error-rate: bad_data: unknown query "errors"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := guardrails.RunBacktest(context.Background(), shopPlan(), nil, opts); !errors.Is(err, guardrails.ErrNoProvider) {
		t.Fatalf("err = %v", err)
	}
	for _, o := range []guardrails.BacktestOptions{
		{From: t0, To: t0},
		{From: t0, To: t0.Add(-time.Hour)},
		{From: t0, To: t0.Add(time.Hour), Step: -time.Second},
		{From: t0, To: t0.Add(365 * 24 * time.Hour), Step: time.Second},
	} {
		if _, err := guardrails.RunBacktest(context.Background(), shopPlan(), h.providers(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
