// Package guardrails measures a plan's guardrails and verify checks and
// judges them: providers read a value (a PromQL query through the Prometheus
// HTTP API, the status of an HTTP health check), and the Evaluator turns the
// values into reconcile.Readings with Prometheus's alerting semantics — a
// value past its bound is Pending until it has stayed there for the
// guardrail's `for` window (and `failures` evaluations in a row), then
// Breached; a value back within bound resets it. Healthy, Pending, Breached,
// NoData and Error stay distinct: a query that fails is not a breach, and one
// that returns nothing is neither; the plan's onNoData decides about those in
// reconcile.Decide, not here.
//
// Backtest replays the same evaluation over recorded history (range
// queries) with a simulated clock, and walks the plan's timeline through
// reconcile.Decide to say when the daemon would have advanced, paused or
// rolled back.
//
// The package does not decide what a breach does, and it does not talk to
// drivers, Git or the store.
package guardrails

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// Provider measures the sources of one kind: Prometheus runs a query, HTTP
// calls a URL. It returns within ctx.
type Provider interface {
	Measure(ctx context.Context, src Source, at time.Time) Measurement
}

// Source is what a guardrail or a check measures: its kind, which chooses
// the provider, and the plan's block for it (a *plan.Prometheus for
// "prometheus", a *plan.HTTPCheck for "http").
type Source struct {
	Kind  string
	Block any
	// Plan is the plan measured and Side the side: `$side` in a query
	// stands for Plan.SideValue(Side), and a resources source reads that
	// side's instances. A zero Side is the candidate; without a plan
	// `$side` is left as written.
	Plan *plan.Plan
	Side plan.Side
}

// For returns s measuring side of p.
func (s Source) For(p *plan.Plan, side plan.Side) Source {
	s.Plan, s.Side = p, side
	return s
}

// side returns the side s measures.
func (s Source) side() plan.Side {
	if s.Side == "" {
		return plan.Candidate
	}
	return s.Side
}

// fill returns text with `$side` replaced by the value of the side s
// measures.
func (s Source) fill(text string) string {
	if s.Plan == nil {
		return text
	}
	return strings.ReplaceAll(text, plan.SideVar, s.Plan.SideValue(s.side()))
}

// SourceOf returns the source a guardrail or a check sets.
func SourceOf(s plan.MetricSource) Source {
	kind, block := s.Block()
	return Source{Kind: kind, Block: block}
}

// Measurement is one value of a source.
type Measurement struct {
	// Value is the query's result, or the HTTP status code (0 when no
	// response came).
	Value float64
	// Failed is set by a provider that judges for itself: an HTTP check
	// that got no response or not the status it expects. A failed check
	// counts as a value past its bound, not as an error: the endpoint being
	// down is what the check is there to see.
	Failed bool
	// Detail says more: the status line, why the request failed.
	Detail string
	// Err is set when there is no value: it wraps ErrNoData when the source
	// has nothing to say (an empty result, NaN), and is anything else when
	// it could not be asked (Prometheus unreachable, a bad query, a query
	// returning several series).
	Err error
	// Compare is set for a guardrail that compares the candidate with
	// stable: Value is then the candidate's, and Failed the verdict Fail.
	Compare *reconcile.Comparison
}

// Errors a Measurement's Err wraps; callers branch on them with errors.Is.
var (
	// ErrNoData: the query returned no series, or NaN.
	ErrNoData = errors.New("no data")
	// ErrSeries: the query returned more than one series, so it does not
	// say which one the bound applies to.
	ErrSeries = errors.New("more than one series")
	// ErrNoProvider: the plan uses a source nothing is configured for.
	ErrNoProvider = errors.New("no provider")
)

// outside reports whether v lies past a guardrail's or check's bounds. NaN
// never reaches here (it is no data); +Inf is past any max.
func outside(v float64, lo, hi *float64) bool {
	return hi != nil && v > *hi || lo != nil && v < *lo
}

// Bound says in a few words what keeps a guardrail healthy, as
// reconcile.Reading.Bound and commit messages show it: "max 0.05 for 5m",
// "min 10 max 20, 3 times in a row", "expect 2xx, 3 failures in a row".
func Bound(g plan.Guardrail) string {
	s := bounds(g.HTTP, g.Min, g.Max)
	if g.Compare != nil {
		s = compareBound(*g.Compare)
	}
	if n := g.Failures; n > 1 {
		if g.HTTP != nil {
			s += fmt.Sprintf(", %d failures in a row", n)
		} else {
			s += fmt.Sprintf(", %d times in a row", n)
		}
	}
	if g.For > 0 {
		s += " for " + g.For.String()
	}
	return s
}

// bounds writes "max 0.05", "min 1 max 2" or, for an HTTP check, "expect
// 200" or "expect 2xx".
func bounds(h *plan.HTTPCheck, lo, hi *float64) string {
	var s string
	if h != nil {
		s = "expect 2xx"
		if h.ExpectStatus != 0 {
			s = "expect " + strconv.Itoa(h.ExpectStatus)
		}
	}
	if lo != nil {
		s = join(s, "min "+formatValue(*lo))
	}
	if hi != nil {
		s = join(s, "max "+formatValue(*hi))
	}
	return s
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}

// formatValue writes a bound as the plan gives it, all its digits: 0.05,
// 1e+06. Measured values go through reconcile.FormatValue instead.
func formatValue(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// past says how a value breaks its bounds: "0.12 over max 0.05", "3 under
// min 10", or for an HTTP check its detail.
func past(m Measurement, lo, hi *float64) string {
	switch {
	case hi != nil && m.Value > *hi:
		return reconcile.FormatValue(m.Value) + " over max " + formatValue(*hi)
	case lo != nil && m.Value < *lo:
		return reconcile.FormatValue(m.Value) + " under min " + formatValue(*lo)
	}
	return m.Detail
}
