package guardrails_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// asyncRig is an asynchronous evaluator on a fake clock, with its
// notifications in a channel.
type asyncRig struct {
	ev     *guardrails.Evaluator
	clk    *clocktesting.FakePassiveClock
	notify chan string
}

func newAsync(t *testing.T, prom guardrails.Provider, opts ...guardrails.Option) *asyncRig {
	t.Helper()
	r := &asyncRig{clk: clocktesting.NewFakePassiveClock(t0), notify: make(chan string, 100)}
	opts = append([]guardrails.Option{guardrails.WithClock(r.clk), guardrails.WithInterval(30 * time.Second),
		guardrails.WithNotify(func(p string) { r.notify <- p })}, opts...)
	r.ev = guardrails.NewEvaluator(guardrails.Providers{"prometheus": prom, "http": guardrails.NewHTTP(nil)}, opts...)
	return r
}

// eval evaluates p at the stay at and returns at once; it fails the test if
// evaluating took long.
func (r *asyncRig) eval(t *testing.T, p *plan.Plan, at reconcile.Epoch) []reconcile.Reading {
	t.Helper()
	start := time.Now()
	rs, err := r.ev.Evaluate(context.Background(), p, at)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("an asynchronous Evaluate took %s: it waited on a provider", took)
	}
	return rs
}

// measured waits for the next notification about plan name.
func (r *asyncRig) measured(t *testing.T, name string) {
	t.Helper()
	select {
	case got := <-r.notify:
		if got != name {
			t.Fatalf("notified about %q, want %q", got, name)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no measurement of %s was folded in within 10s", name)
	}
}

// quiet fails if a notification comes within d.
func (r *asyncRig) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-r.notify:
		t.Fatalf("unexpected notification about %q", got)
	case <-time.After(d):
	}
}

var (
	canary30 = plan.Position{Phase: "canary", Percentage: 30}
	canary60 = plan.Position{Phase: "canary", Percentage: 60}
)

// A hung Prometheus never holds Evaluate: the guardrails it does not answer
// read Measuring, then Error once the timeout has passed, and an HTTP
// guardrail beside it is judged meanwhile.
func TestAsyncNeverWaits(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Close() })
	go func() { // accept and never answer
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	prom, err := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: "http://" + hung.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	h := newHealthServer(t)
	h.code.Store(503)
	r := newAsync(t, prom, guardrails.WithTimeout(time.Second))
	p := planWith("shop",
		plan.Guardrail{Name: "errors", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05)},
		plan.Guardrail{Name: "health", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL}}, Failures: 1})
	at := reconcile.Epoch{Position: canary30, Since: t0}

	rs := r.eval(t, p, at)
	if rs[0].Health != reconcile.Measuring || rs[1].Health != reconcile.Measuring {
		t.Fatalf("before any measurement: %+v", rs)
	}
	r.measured(t, "shop") // the health check, long before the query's timeout
	rs = r.eval(t, p, at)
	if rs[0].Health != reconcile.Measuring || rs[1].Health != reconcile.Breached {
		t.Fatalf("after the health check: %+v", rs)
	}
	r.measured(t, "shop") // the query, at its timeout
	rs = r.eval(t, p, at)
	if rs[0].Health != reconcile.Error || !strings.Contains(rs[0].Detail, "deadline exceeded") {
		t.Fatalf("after the query's timeout: %+v", rs[0])
	}
}

// However often Evaluate is called, a guardrail is measured once per
// interval: waking the loop twice in one tick counts one check.
func TestAsyncOncePerInterval(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("q", vector(bad))
	r := newAsync(t, srv.prometheus(t, guardrails.PrometheusConfig{}))
	g := plan.Guardrail{Name: "errors", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), Failures: 2}
	p := planWith("shop", g)
	at := reconcile.Epoch{Position: canary30, Since: t0}

	r.eval(t, p, at)
	r.measured(t, "shop")
	for range 5 {
		r.clk.SetTime(r.clk.Now().Add(time.Second))
		if rs := r.eval(t, p, at); rs[0].Health != reconcile.Pending || !strings.Contains(rs[0].Detail, "1 of 2") {
			t.Fatalf("%+v", rs[0])
		}
	}
	r.quiet(t, 200*time.Millisecond)
	if n := srv.asked("q"); n != 1 {
		t.Fatalf("asked %d times within one interval, want 1", n)
	}
	// A tick that comes a little early still measures.
	r.clk.SetTime(t0.Add(28 * time.Second))
	r.eval(t, p, at)
	r.measured(t, "shop")
	if rs := r.eval(t, p, at); rs[0].Health != reconcile.Breached {
		t.Fatalf("second bad value in a row: %+v", rs[0])
	}
}

// A move starts every window again: a fault that persists is judged afresh
// at the new position, for its whole `for`, and a measurement started
// before the move never counts after it.
func TestAsyncJudgedWhereItHappens(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("q", vector(bad))
	r := newAsync(t, srv.prometheus(t, guardrails.PrometheusConfig{}), guardrails.WithInterval(5*time.Second))
	g := plan.Guardrail{Name: "errors", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), For: plan.Duration(10 * time.Second)}
	p := planWith("shop", g)

	at60 := reconcile.Epoch{Position: canary60, Since: t0}
	for i := 0; ; i++ {
		r.eval(t, p, at60)
		r.measured(t, "shop")
		rs := r.eval(t, p, at60)
		if rs[0].Health == reconcile.Breached {
			if held := r.clk.Now().Sub(t0); held < 10*time.Second {
				t.Fatalf("breached after %s, want after its 10s", held)
			}
			break
		}
		if i > 5 {
			t.Fatalf("never breached: %+v", rs[0])
		}
		r.clk.SetTime(r.clk.Now().Add(5 * time.Second))
	}

	// Rolled back to 30%: nothing from 60% counts.
	moved := r.clk.Now()
	at30 := reconcile.Epoch{Position: canary30, Since: moved}
	rs := r.eval(t, p, at30)
	if rs[0].Health != reconcile.Measuring {
		t.Fatalf("just after the move: %+v", rs[0])
	}
	r.measured(t, "shop")
	rs = r.eval(t, p, at30)
	if rs[0].Health != reconcile.Pending || !strings.Contains(rs[0].Detail, "for 0s of 10s") {
		t.Fatalf("first reading at 30%%: %+v", rs[0])
	}
	r.clk.SetTime(moved.Add(5 * time.Second))
	r.eval(t, p, at30)
	r.measured(t, "shop")
	if rs = r.eval(t, p, at30); rs[0].Health != reconcile.Pending {
		t.Fatalf("5s after the move, within its 10s: %+v", rs[0])
	}
	r.clk.SetTime(moved.Add(10 * time.Second))
	r.eval(t, p, at30)
	r.measured(t, "shop")
	if rs = r.eval(t, p, at30); rs[0].Health != reconcile.Breached {
		t.Fatalf("10s after the move: %+v", rs[0])
	}

	// A measurement in flight when the migration moves is dropped.
	slow := vector(bad)
	slow.delay = 500 * time.Millisecond
	srv.set("q", slow)
	r.clk.SetTime(moved.Add(40 * time.Second))
	r.eval(t, p, at30) // starts the slow measurement at 30%
	at10 := reconcile.Epoch{Position: plan.Position{Phase: "canary", Percentage: 10}, Since: r.clk.Now()}
	srv.set("q", vector(ok))
	r.eval(t, p, at10) // moves, and measures again at 10%
	r.measured(t, "shop")
	r.quiet(t, time.Second) // the slow one, folded into nothing
	if rs = r.eval(t, p, at10); rs[0].Health != reconcile.Healthy {
		t.Fatalf("at 10%%: %+v", rs[0])
	}
}

// A guardrail with `settle` is not measured until that long after a move:
// its query's range still reaches back across the move.
func TestAsyncSettle(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("q", vector(bad))
	r := newAsync(t, srv.prometheus(t, guardrails.PrometheusConfig{}), guardrails.WithInterval(time.Second))
	g := plan.Guardrail{Name: "errors", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), Settle: plan.Duration(30 * time.Second)}
	p := planWith("shop", g)
	at := reconcile.Epoch{Position: canary30, Since: t0}
	for _, after := range []time.Duration{0, 10 * time.Second, 29 * time.Second} {
		r.clk.SetTime(t0.Add(after))
		if rs := r.eval(t, p, at); rs[0].Health != reconcile.Measuring || !strings.Contains(rs[0].Detail, "settling") {
			t.Fatalf("%s after the move: %+v", after, rs[0])
		}
	}
	r.quiet(t, 200*time.Millisecond)
	if n := srv.asked("q"); n != 0 {
		t.Fatalf("asked %d times while settling", n)
	}
	r.clk.SetTime(t0.Add(30 * time.Second))
	r.eval(t, p, at)
	r.measured(t, "shop")
	if rs := r.eval(t, p, at); rs[0].Health != reconcile.Breached {
		t.Fatalf("after settling: %+v", rs[0])
	}
}

// Latest returns the measurements done since Evaluate started them, without
// starting any, so that the step that started them can judge them; a stay
// other than the one measured, or a synchronous evaluator, has none.
func TestLatest(t *testing.T) {
	h := newHealthServer(t)
	h.code.Store(503)
	r := newAsync(t, nil)
	p := planWith("shop", plan.Guardrail{Name: "health", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL}}, Failures: 1})
	at := reconcile.Epoch{Position: canary30, Since: t0}

	if rs := r.eval(t, p, at); rs[0].Health != reconcile.Measuring {
		t.Fatalf("Evaluate returned %+v, want Measuring before any measurement", rs)
	}
	r.measured(t, "shop")
	rs, ok := r.ev.Latest(p, at)
	if !ok || rs[0].Health != reconcile.Breached {
		t.Fatalf("Latest = %+v, %v; want the breach measured since Evaluate", rs, ok)
	}
	r.quiet(t, 200*time.Millisecond) // it started nothing
	if _, ok := r.ev.Latest(p, reconcile.Epoch{Position: canary60, Since: t0.Add(time.Second)}); ok {
		t.Error("Latest answered for a stay it never measured")
	}

	sync := guardrails.NewEvaluator(guardrails.Providers{"http": guardrails.NewHTTP(nil)})
	if _, err := sync.Evaluate(context.Background(), p, at); err != nil {
		t.Fatal(err)
	}
	if _, ok := sync.Latest(p, at); ok {
		t.Error("a synchronous evaluator's Latest answered: its Evaluate already waits")
	}
}
