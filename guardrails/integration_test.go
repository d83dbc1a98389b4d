package guardrails_test

// Tests against Debian's prometheus, started on 127.0.0.1 by
// internal/promtest, scraping a testapp process every 250ms while a load
// generator sends it requests. The tests switch the app's error rate and
// latency through its /control endpoint.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

const (
	// The guide's queries, over windows that suit a 250ms scrape.
	errorRateQuery = `sum(rate(http_requests_total{code=~"5.."}[2s])) / sum(rate(http_requests_total[2s]))`
	latencyQuery   = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[2s])))`
)

// stack is a testapp under load and a Prometheus scraping it.
type stack struct {
	app  *promtest.App
	prom *promtest.Server
	// provider queries prom.
	provider *guardrails.Prometheus
}

func startStack(t testing.TB) *stack {
	promtest.Binary(t) // skip or fail before building anything
	app := promtest.StartApp(t, "candidate")
	app.Load(t, 200, 200*300) // at most five minutes of load
	prom := promtest.Start(t, promtest.Options{Targets: []string{app.Addr}})
	prom.WaitUp(t, errorRateQuery, 30*time.Second)
	p, err := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: prom.URL, Timeout: plan.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return &stack{app: app, prom: prom, provider: p}
}

// canaryPlan is a plan whose canary goes 10% then 50%, soaking a minute,
// with the guardrails and the no-data policy.
func canaryPlan(onNoData string, gs ...plan.Guardrail) *plan.Plan {
	p := planWith("shop", gs...)
	p.Spec.Phases = []plan.Phase{{Name: "canary", Steps: []int{10, 50}, Soak: minutes(1)}}
	p.Spec.Target = plan.Target{Phase: "canary"}
	p.Spec.Rollback.OnNoData = onNoData
	return p
}

// atCanary10 is what a daemon sees of a migration that entered canary 10%
// at entered, guardrails green since then.
func atCanary10(entered time.Time, readings []reconcile.Reading) reconcile.Observed {
	return reconcile.Observed{
		Record: store.Record{Plan: "shop", Position: plan.Position{Phase: "canary", Percentage: 10},
			EnteredAt: entered, GreenSince: entered, Status: reconcile.StatusProgressing, Commit: "c1"},
		Driver:     drivers.State{Traffic: 10},
		Guardrails: readings,
	}
}

// evaluateUntil evaluates every 100ms until every guardrail reads as want
// says, and returns the readings of every evaluation.
func evaluateUntil(t *testing.T, ev *guardrails.Evaluator, p *plan.Plan, timeout time.Duration, want func([]reconcile.Reading) bool) [][]reconcile.Reading {
	t.Helper()
	var all [][]reconcile.Reading
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs)
		if want(rs) {
			return all
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not reached within %s; last readings: %+v", timeout, all[len(all)-1])
	return nil
}

func healthOf(rs []reconcile.Reading, name string) reconcile.Health {
	for _, r := range rs {
		if r.Name == name {
			return r.Health
		}
	}
	return ""
}

func TestRealPrometheusBreach(t *testing.T) {
	s := startStack(t)
	errorRate := plan.Guardrail{Name: "error-rate", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: errorRateQuery}}, Max: ptr(0.05), For: plan.Duration(time.Second)}
	latency := plan.Guardrail{Name: "latency-p99", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: latencyQuery}}, Max: ptr(0.05)}
	p := canaryPlan("", errorRate, latency)
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": s.provider, "http": guardrails.NewHTTP(nil)})
	d := reconcile.NewDesired(p, "c1")

	evaluateUntil(t, ev, p, 10*time.Second, func(rs []reconcile.Reading) bool {
		return rs[0].Health == reconcile.Healthy && rs[1].Health == reconcile.Healthy
	})

	// Slow requests breach the latency guardrail, which has no window.
	s.app.Set(t, map[string]string{"latency": "150ms"})
	evaluateUntil(t, ev, p, 15*time.Second, func(rs []reconcile.Reading) bool { return rs[1].Health == reconcile.Breached })
	rs, _ := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
	if r := rs[1]; r.Value <= 0.05 || r.Bound != "max 0.05" || !strings.Contains(r.Detail, "over max 0.05") {
		t.Fatalf("latency reading %+v", r)
	}
	if rs[0].Health != reconcile.Healthy {
		t.Fatalf("error rate %+v while only latency changed", rs[0])
	}
	s.app.Set(t, map[string]string{"latency": "0s"})
	evaluateUntil(t, ev, p, 15*time.Second, func(rs []reconcile.Reading) bool { return rs[1].Health == reconcile.Healthy })

	// Failing requests: Pending first (for: 1s), then Breached.
	s.app.Set(t, map[string]string{"errorRate": "0.5"})
	all := evaluateUntil(t, ev, p, 15*time.Second, func(rs []reconcile.Reading) bool { return rs[0].Health == reconcile.Breached })
	var seen []reconcile.Health
	for _, rs := range all {
		if h := rs[0].Health; len(seen) == 0 || seen[len(seen)-1] != h {
			seen = append(seen, h)
		}
	}
	if !slices.Equal(seen, []reconcile.Health{reconcile.Healthy, reconcile.Pending, reconcile.Breached}) {
		t.Fatalf("error rate went %v, want Healthy, Pending, Breached", seen)
	}
	breached := all[len(all)-1][0]
	if breached.Value <= 0.05 || breached.Value > 1 || breached.Bound != "max 0.05 for 1s" {
		t.Fatalf("breached reading %+v", breached)
	}

	// The decision: roll back, naming the guardrail, its value and bound.
	a := reconcile.Decide(d, atCanary10(time.Now().Add(-time.Hour), all[len(all)-1]), time.Now())
	if a.Kind != reconcile.Rollback || a.Failure == nil || a.Failure.Guardrail != "error-rate" || a.Failure.Value != breached.Value || a.Failure.Bound != "max 0.05 for 1s" {
		t.Fatalf("decision %+v %+v", a, a.Failure)
	}
	wantReason := fmt.Sprintf("guardrail error-rate is %s, max 0.05 for 1s at canary 10%%; rolling back to start", reconcile.FormatValue(breached.Value))
	if a.Reason != wantReason {
		t.Fatalf("reason %q, want %q", a.Reason, wantReason)
	}
	t.Logf("decided: %s", a.Reason)
}

func TestRealPrometheusStopped(t *testing.T) {
	s := startStack(t)
	// The error rate is past its bound, but its window is an hour: Pending.
	s.app.Set(t, map[string]string{"errorRate": "0.5"})
	errorRate := plan.Guardrail{Name: "error-rate", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: errorRateQuery}}, Max: ptr(0.05), For: minutes(60)}
	absent := plan.Guardrail{Name: "absent", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: `sum(rate(no_such_metric_total[2s]))`}}, Max: ptr(1.0)}
	p := canaryPlan("", errorRate, absent)
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": s.provider})
	evaluateUntil(t, ev, p, 15*time.Second, func(rs []reconcile.Reading) bool { return rs[0].Health == reconcile.Pending })
	rs, _ := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
	if rs[1].Health != reconcile.NoData {
		t.Fatalf("absent metric: %+v", rs[1])
	}

	// Evaluations go on while Prometheus stops.
	var mu sync.Mutex
	var after [][]reconcile.Reading
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 40 {
			rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
			if err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stopped:
				mu.Lock()
				after = append(after, rs)
				mu.Unlock()
			default:
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	s.prom.Stop()
	close(stopped)
	<-done
	if len(after) == 0 {
		t.Fatal("no evaluation after Prometheus stopped")
	}
	for _, rs := range after {
		for _, r := range rs {
			if r.Health != reconcile.Error && r.Health != reconcile.NoData {
				t.Fatalf("with Prometheus stopped %s reads %s (%s), want Error or NoData", r.Name, r.Health, r.Detail)
			}
		}
	}
	last := after[len(after)-1]
	if !strings.Contains(last[0].Detail, "connection refused") {
		t.Fatalf("detail %q", last[0].Detail)
	}
	t.Logf("with Prometheus stopped: %s %q", last[0].Health, last[0].Detail)

	// Soaked for an hour at canary 10%: with every guardrail green the
	// daemon would advance. With these readings it must not, unless the
	// plan says to ignore missing data; onNoData rollback rolls back.
	entered := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		onNoData string
		want     reconcile.Kind
	}{
		{"", reconcile.Wait},
		{plan.OnNoDataHold, reconcile.Wait},
		{plan.OnNoDataRollback, reconcile.Rollback},
		{plan.OnNoDataIgnore, reconcile.Advance},
	} {
		q := canaryPlan(tc.onNoData, errorRate, absent)
		a := reconcile.Decide(reconcile.NewDesired(q, "c1"), atCanary10(entered, last), time.Now())
		if a.Kind != tc.want {
			t.Errorf("onNoData %q: %s (%s), want %s", tc.onNoData, a.Kind, a.Reason, tc.want)
		}
		t.Logf("onNoData %q: %s: %s", tc.onNoData, a.Kind, a.Reason)
	}
}

// breachToRollback measures, for one breach, the time from when Prometheus
// first shows the error rate past 0.05 to when an evaluation loop running
// every interval (Evaluator, then Decide) decides to roll back.
func breachToRollback(tb testing.TB, s *stack, interval time.Duration) time.Duration {
	tb.Helper()
	// Healthy first: the error rate back to zero, and the rate window past.
	s.app.Set(tb, map[string]string{"errorRate": "0"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := s.provider.Query(context.Background(), errorRateQuery, time.Now())
		if err == nil && v == 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("error rate not back to 0: %g %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	g := plan.Guardrail{Name: "error-rate", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: errorRateQuery}}, Max: ptr(0.05)}
	p := canaryPlan("", g)
	d := reconcile.NewDesired(p, "c1")
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": s.provider})
	entered := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The daemon's loop: evaluate, decide, wait the interval.
	decided := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			rs, err := ev.Evaluate(ctx, p, reconcile.Epoch{})
			if err == nil {
				if a := reconcile.Decide(d, atCanary10(entered, rs), time.Now()); a.Kind == reconcile.Rollback {
					decided <- time.Now()
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(interval):
			}
		}
	}()
	// An observer asking Prometheus every 5ms: since when has the breach
	// been visible? As the first errors enter the rate window the value can
	// pass the bound and fall back under it for a scrape (rate extrapolates
	// the two counters differently), so the breach is visible from the
	// first of the observations over the bound that the last one belongs
	// to.
	var mu sync.Mutex
	var since time.Time
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for ctx.Err() == nil {
			at := time.Now()
			v, err := s.provider.Query(ctx, errorRateQuery, at)
			mu.Lock()
			switch {
			case err == nil && v > 0.05 && !math.IsInf(v, 0):
				if since.IsZero() {
					since = at
				}
			case err == nil:
				since = time.Time{}
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Switch at a random moment of the loop's interval, so that over many
	// breaches the wait for the next evaluation covers the whole interval.
	time.Sleep(rand.N(interval))
	s.app.Set(tb, map[string]string{"errorRate": "1"})
	var rolledBack time.Time
	select {
	case rolledBack = <-decided:
	case <-ctx.Done():
		tb.Fatal("no rollback within 30s")
	}
	// The observer may not have seen it yet: give it a moment.
	for i := 0; ; i++ {
		mu.Lock()
		seen := since
		mu.Unlock()
		if !seen.IsZero() {
			cancel()
			<-watching
			return rolledBack.Sub(seen)
		}
		if i == 100 {
			tb.Fatal("rolled back, but Prometheus does not show the breach")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBreachToRollbackLatency checks the speed target once: from the moment
// a breach is visible in Prometheus to the rollback decision, at most one
// evaluation interval plus 100ms.
func TestBreachToRollbackLatency(t *testing.T) {
	s := startStack(t)
	const interval = time.Second
	got := breachToRollback(t, s, interval)
	t.Logf("visible in Prometheus → rollback decided: %s (evaluation interval %s)", got, interval)
	if got > interval+100*time.Millisecond {
		t.Fatalf("took %s, want at most %s", got, interval+100*time.Millisecond)
	}
}

// BenchmarkBreachToRollback measures the same over b.N breaches and reports
// the mean and the worst, in milliseconds.
func BenchmarkBreachToRollback(b *testing.B) {
	s := startStack(b)
	const interval = time.Second
	var total, worst time.Duration
	for range b.N {
		d := breachToRollback(b, s, interval)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-mean")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
	b.ReportMetric(float64(interval.Milliseconds()), "ms-interval")
}

// BenchmarkEvaluateAndDecide is one evaluation cycle of a plan with the
// guide's two Prometheus guardrails against the real Prometheus, then
// Decide: what a breach waits for once the interval has come round.
func BenchmarkEvaluateAndDecide(b *testing.B) {
	s := startStack(b)
	p := canaryPlan("",
		plan.Guardrail{Name: "error-rate", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: errorRateQuery}}, Max: ptr(0.05)},
		plan.Guardrail{Name: "latency-p99", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: latencyQuery}}, Max: ptr(0.05)})
	d := reconcile.NewDesired(p, "c1")
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": s.provider})
	entered := time.Now()
	b.ResetTimer()
	for range b.N {
		rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
		if err != nil {
			b.Fatal(err)
		}
		reconcile.Decide(d, atCanary10(entered, rs), time.Now())
	}
}
