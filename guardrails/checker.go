package guardrails

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// Checker runs the verify checks that a provider measures (a Prometheus
// query, an HTTP request), once each: a query passes when its value lies
// within the check's bounds, an HTTP check when it gets the status it
// expects. It implements reconcile.Checker. Create one with NewChecker.
type Checker struct {
	providers Providers
	clock     clock.PassiveClock
	timeout   time.Duration
}

var _ reconcile.Checker = (*Checker)(nil)

// NewChecker returns a checker measuring each check with the provider of
// its source's kind; a check whose kind has none fails saying so.
// WithClock and WithTimeout apply.
func NewChecker(providers Providers, opts ...Option) *Checker {
	o := newOptions(opts)
	return &Checker{providers: providers, clock: o.clock, timeout: o.timeout}
}

// Check runs the check named name. A check that fails is a result with
// Passed false and a message; an error means it could not be run (no data
// counts as a failure, with its reason, since nothing shows the check
// holds).
func (c *Checker) Check(ctx context.Context, p *plan.Plan, name string, chk plan.Check) (store.CheckResult, error) {
	if chk.Run != nil {
		return store.CheckResult{}, fmt.Errorf("check %s is a job: the driver runs it", name)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	now := c.clock.Now()
	m := c.providers.Measure(ctx, SourceOf(chk.MetricSource).For(p, plan.Candidate), now)
	res := store.CheckResult{At: now}
	switch {
	case errors.Is(m.Err, ErrNoData):
		res.Message = fmt.Sprintf("check %s has no data: %v", name, m.Err)
	case m.Err != nil:
		return store.CheckResult{}, fmt.Errorf("check %s: %w", name, m.Err)
	case m.Failed || outside(m.Value, chk.Min, chk.Max):
		res.Message = fmt.Sprintf("check %s: %s (%s)", name, past(m, chk.Min, chk.Max), bounds(chk.HTTP, chk.Min, chk.Max))
	default:
		res.Passed = true
		res.Message = fmt.Sprintf("check %s: %s (%s)", name, reconcile.FormatValue(m.Value), bounds(chk.HTTP, chk.Min, chk.Max))
	}
	return res, nil
}
