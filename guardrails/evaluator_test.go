package guardrails_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func minutes(n int) plan.Duration { return plan.Duration(time.Duration(n) * time.Minute) }

// planWith returns a plan named name with the guardrails.
func planWith(name string, gs ...plan.Guardrail) *plan.Plan {
	p := &plan.Plan{Metadata: plan.Metadata{Name: name}}
	p.Spec.Guardrails = gs
	return p
}

// evalStep is one evaluation of a table test: the clock moves on by after,
// the server answers ans, and the reading must have health want and a
// detail containing detail.
type evalStep struct {
	after  time.Duration
	ans    answer
	want   reconcile.Health
	detail string
}

const (
	ok   = "0.01"
	bad  = "0.12"
	none = "" // an empty result
)

func v(s string) answer {
	if s == none {
		return vector()
	}
	return vector(s)
}

func TestEvaluatePrometheus(t *testing.T) {
	max5 := plan.Guardrail{Name: "errors", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05)}
	withFor := max5
	withFor.For = minutes(5)
	withFailures := max5
	withFailures.Failures = 3
	withMin := plan.Guardrail{Name: "throughput", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Min: ptr(10.0), For: minutes(1)}

	tests := []struct {
		name  string
		g     plan.Guardrail
		steps []evalStep
	}{
		{"no for: past the bound breaches at once, back within it heals", max5, []evalStep{
			{0, v(ok), reconcile.Healthy, ""},
			{time.Minute, v(bad), reconcile.Breached, "0.12 over max 0.05"},
			{time.Minute, v(ok), reconcile.Healthy, ""},
		}},
		{"for: pending until the window has passed, then breached", withFor, []evalStep{
			{0, v(ok), reconcile.Healthy, ""},
			{time.Minute, v(bad), reconcile.Pending, "past its bound for 0s of 5m"},
			{2 * time.Minute, v(bad), reconcile.Pending, "for 2m of 5m"},
			{2*time.Minute + 59*time.Second, v(bad), reconcile.Pending, ""},
			{time.Second, v(bad), reconcile.Breached, "0.12 over max 0.05; past its bound for 5m of 5m"},
			{time.Minute, v(bad), reconcile.Breached, ""},
			{time.Minute, v(ok), reconcile.Healthy, ""},
			{time.Minute, v(bad), reconcile.Pending, "for 0s of 5m"},
		}},
		{"for: a value back within bound resets the window", withFor, []evalStep{
			{0, v(bad), reconcile.Pending, ""},
			{4 * time.Minute, v(ok), reconcile.Healthy, ""},
			{time.Minute, v(bad), reconcile.Pending, ""},
			{4 * time.Minute, v(bad), reconcile.Pending, "for 4m of 5m"},
			{time.Minute, v(bad), reconcile.Breached, ""},
		}},
		{"for: no data resolves the window, as an alert with no result", withFor, []evalStep{
			{0, v(bad), reconcile.Pending, ""},
			{3 * time.Minute, v(none), reconcile.NoData, "no series"},
			{time.Minute, v(bad), reconcile.Pending, "for 0s of 5m"},
			{5 * time.Minute, v(bad), reconcile.Breached, ""},
		}},
		{"for: a failing query keeps the window, as a failing rule keeps its alert", withFor, []evalStep{
			{0, v(bad), reconcile.Pending, ""},
			{3 * time.Minute, answer{status: 503, body: "down for maintenance"}, reconcile.Error, "server error: 503"},
			{2 * time.Minute, v(bad), reconcile.Breached, "for 5m of 5m"},
		}},
		{"failures: breached after that many evaluations in a row", withFailures, []evalStep{
			{0, v(bad), reconcile.Pending, "1 of 3 in a row"},
			{time.Second, v(bad), reconcile.Pending, "2 of 3 in a row"},
			{time.Second, v(ok), reconcile.Healthy, ""},
			{time.Second, v(bad), reconcile.Pending, "1 of 3"},
			{time.Second, v(bad), reconcile.Pending, "2 of 3"},
			{time.Second, v(bad), reconcile.Breached, "3 of 3"},
		}},
		{"min: under the bound", withMin, []evalStep{
			{0, v("12"), reconcile.Healthy, ""},
			{time.Minute, v("3"), reconcile.Pending, "3 under min 10"},
			{time.Minute, v("3"), reconcile.Breached, "3 under min 10"},
		}},
		{"more than one series is an error naming how many, never a pick", max5, []evalStep{
			{0, vector(ok, bad, ok), reconcile.Error, `returned 3 series ({i="0"}, {i="1"}, {i="2"}), want one`},
			{0, vector(ok, ok, ok, ok, ok), reconcile.Error, "returned 5 series"},
		}},
		{"an empty result is no data", max5, []evalStep{
			{0, vector(), reconcile.NoData, "no series"},
		}},
		{"NaN is no data", max5, []evalStep{
			{0, v("NaN"), reconcile.NoData, "NaN"},
			{0, scalar("NaN"), reconcile.NoData, "NaN"},
		}},
		{"a scalar is a value", max5, []evalStep{
			{0, scalar("0.5"), reconcile.Breached, "0.5 over max 0.05"},
			{0, scalar("0"), reconcile.Healthy, ""},
		}},
		{"+Inf is past any max", max5, []evalStep{
			{0, v("+Inf"), reconcile.Breached, "+Inf over max 0.05"},
		}},
		{"a bad query is an error", max5, []evalStep{
			{0, answer{status: 400, body: `{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \")\""}`}, reconcile.Error, "bad_data: 1:5: parse error"},
		}},
		{"a server error is an error", max5, []evalStep{
			{0, answer{status: 500, body: "oops"}, reconcile.Error, "server error: 500"},
			{0, answer{status: 422, body: `{"status":"error","errorType":"execution","error":"query timed out"}`}, reconcile.Error, "execution: query timed out"},
		}},
		{"a range vector is an error", max5, []evalStep{
			{0, answer{body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"]]}]}}`}, reconcile.Error, "range vector"},
		}},
		{"a body that is not the API's is an error", max5, []evalStep{
			{0, answer{body: `<html>login</html>`}, reconcile.Error, ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeProm(t)
			clk := clocktesting.NewFakePassiveClock(t0)
			ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{})}, guardrails.WithClock(clk))
			p := planWith("shop", tc.g)
			var last reconcile.Reading
			for i, s := range tc.steps {
				clk.SetTime(clk.Now().Add(s.after))
				srv.set("q", s.ans)
				rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				r := rs[0]
				if r.Health != s.want || !strings.Contains(r.Detail, s.detail) {
					t.Fatalf("step %d: got %s %q, want %s with %q", i, r.Health, r.Detail, s.want, s.detail)
				}
				if r.Name != tc.g.Name || r.Bound != guardrails.Bound(tc.g) {
					t.Fatalf("step %d: name %q bound %q", i, r.Name, r.Bound)
				}
				// Since is when the health last changed.
				wantSince := clk.Now()
				if i > 0 && r.Health == last.Health {
					wantSince = last.Since
				}
				if !r.Since.Equal(wantSince) {
					t.Fatalf("step %d: since %s, want %s", i, r.Since, wantSince)
				}
				last = r
			}
		})
	}
}

func TestBound(t *testing.T) {
	tests := []struct {
		g    plan.Guardrail
		want string
	}{
		{plan.Guardrail{MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{}}, Max: ptr(0.05), For: minutes(5)}, "max 0.05 for 5m"},
		{plan.Guardrail{MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{}}, Min: ptr(10.0)}, "min 10"},
		{plan.Guardrail{MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{}}, Min: ptr(1.0), Max: ptr(2.5), Failures: 3}, "min 1 max 2.5, 3 times in a row"},
		{plan.Guardrail{MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://x"}}, Failures: 3}, "expect 2xx, 3 failures in a row"},
		{plan.Guardrail{MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://x", ExpectStatus: 204}}, Failures: 1, For: plan.Duration(90 * time.Second)}, "expect 204 for 1m30s"},
	}
	for _, tc := range tests {
		if got := guardrails.Bound(tc.g); got != tc.want {
			t.Errorf("Bound = %q, want %q", got, tc.want)
		}
	}
}

// healthServer answers /health with the status in code, after delay.
type healthServer struct {
	*httptest.Server
	code  atomic.Int64
	delay atomic.Int64
	hits  atomic.Int64
}

func newHealthServer(t *testing.T) *healthServer {
	h := &healthServer{}
	h.code.Store(200)
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if d := time.Duration(h.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(int(h.code.Load()))
	}))
	t.Cleanup(h.Close)
	return h
}

func TestEvaluateHTTP(t *testing.T) {
	h := newHealthServer(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := guardrails.NewEvaluator(guardrails.Providers{"http": guardrails.NewHTTP(nil)}, guardrails.WithClock(clk))
	g := plan.Guardrail{Name: "health", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL + "/health", Timeout: plan.Duration(200 * time.Millisecond)}}, Failures: 3}
	p := planWith("shop", g)

	eval := func(want reconcile.Health, detail string, value float64) {
		t.Helper()
		clk.SetTime(clk.Now().Add(10 * time.Second))
		rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
		if err != nil {
			t.Fatal(err)
		}
		r := rs[0]
		if r.Health != want || !strings.Contains(r.Detail, detail) || r.Value != value {
			t.Fatalf("got %s %g %q, want %s %g with %q", r.Health, r.Value, r.Detail, want, value, detail)
		}
		if r.Bound != "expect 2xx, 3 failures in a row" {
			t.Fatalf("bound %q", r.Bound)
		}
	}
	eval(reconcile.Healthy, "", 200)
	h.code.Store(503)
	eval(reconcile.Pending, "status 503, want 2xx; 1 of 3 in a row", 503)
	eval(reconcile.Pending, "2 of 3", 503)
	h.code.Store(204)
	eval(reconcile.Healthy, "", 204)

	// A timeout is a failed check, counted like a 5xx.
	h.code.Store(500)
	eval(reconcile.Pending, "status 500", 500)
	h.delay.Store(int64(time.Second))
	eval(reconcile.Pending, "no answer within 200ms; 2 of 3", 0)
	h.delay.Store(0)
	eval(reconcile.Breached, "status 500, want 2xx; 3 of 3", 500)

	// No server at all is a failed check too.
	h.code.Store(200)
	eval(reconcile.Healthy, "", 200)
	dead := "http://" + deadAddr(t) + "/health"
	p.Spec.Guardrails[0].HTTP.URL = dead
	eval(reconcile.Pending, "connection refused", 0)
}

func TestEvaluateHTTPExpectStatus(t *testing.T) {
	h := newHealthServer(t)
	ev := guardrails.NewEvaluator(guardrails.Providers{"http": guardrails.NewHTTP(nil)})
	g := plan.Guardrail{Name: "gone", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL, Method: "HEAD", ExpectStatus: 404}}, Failures: 1}
	h.code.Store(404)
	rs, _ := ev.Evaluate(context.Background(), planWith("p", g), reconcile.Epoch{})
	if rs[0].Health != reconcile.Healthy {
		t.Fatalf("404 expected: %+v", rs[0])
	}
	h.code.Store(200)
	rs, _ = ev.Evaluate(context.Background(), planWith("p", g), reconcile.Epoch{})
	if rs[0].Health != reconcile.Breached || !strings.Contains(rs[0].Detail, "HEAD "+h.URL+": status 200, want 404") {
		t.Fatalf("200 unexpected: %+v", rs[0])
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestEvaluateTimeout(t *testing.T) {
	srv := newFakeProm(t)
	slow := vector(ok)
	slow.delay = 2 * time.Second
	srv.set("slow", slow)
	srv.set("fast", vector(ok))
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{})}, guardrails.WithTimeout(200*time.Millisecond))
	p := planWith("shop",
		plan.Guardrail{Name: "slow", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "slow"}}, Max: ptr(1.0)},
		plan.Guardrail{Name: "fast", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "fast"}}, Max: ptr(1.0)})
	start := time.Now()
	rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("evaluation took %s, want about the 200ms timeout", took)
	}
	if rs[0].Health != reconcile.Error || !strings.Contains(rs[0].Detail, "deadline exceeded") {
		t.Fatalf("slow: %+v", rs[0])
	}
	if rs[1].Health != reconcile.Healthy {
		t.Fatalf("fast: %+v", rs[1])
	}
}

func TestEvaluateConcurrently(t *testing.T) {
	srv := newFakeProm(t)
	var gs []plan.Guardrail
	for _, q := range []string{"a", "b", "c", "d"} {
		a := vector(ok)
		a.delay = 300 * time.Millisecond
		srv.set(q, a)
		gs = append(gs, plan.Guardrail{Name: q, MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: q}}, Max: ptr(1.0)})
	}
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{})})
	start := time.Now()
	rs, err := ev.Evaluate(context.Background(), planWith("shop", gs...), reconcile.Epoch{})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Fatalf("4 guardrails of 300ms each took %s: not evaluated concurrently", took)
	}
	for i, r := range rs {
		if r.Name != gs[i].Name || r.Health != reconcile.Healthy {
			t.Fatalf("reading %d: %+v", i, r)
		}
	}
}

func TestEvaluateInterval(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("q", vector(ok))
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{})}, guardrails.WithClock(clk))
	p := planWith("shop",
		plan.Guardrail{Name: "every-minute", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), Interval: minutes(1)},
		plan.Guardrail{Name: "every-time", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05)})
	for i := range 7 { // 0s, 10s, ..., 60s
		clk.SetTime(t0.Add(time.Duration(i) * 10 * time.Second))
		if i == 3 {
			srv.set("q", vector(bad))
		}
		rs, err := ev.Evaluate(context.Background(), p, reconcile.Epoch{})
		if err != nil {
			t.Fatal(err)
		}
		wantCached := reconcile.Healthy // measured at 0s, again at 60s
		if i == 6 {
			wantCached = reconcile.Breached
		}
		if rs[0].Health != wantCached {
			t.Fatalf("at %ds: every-minute %s, want %s", i*10, rs[0].Health, wantCached)
		}
		if want := map[bool]reconcile.Health{false: reconcile.Healthy, true: reconcile.Breached}[i >= 3]; rs[1].Health != want {
			t.Fatalf("at %ds: every-time %s, want %s", i*10, rs[1].Health, want)
		}
	}
	// Two measurements of every-minute, seven of every-time.
	if n := srv.asked("q"); n != 9 {
		t.Fatalf("asked %d times, want 9", n)
	}
}

func TestEvaluateDefinitionChange(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("q", vector(bad))
	srv.set("q2", vector(bad))
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{})}, guardrails.WithClock(clk))
	a := plan.Guardrail{Name: "a", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), For: minutes(5)}
	b := plan.Guardrail{Name: "b", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), For: minutes(5)}
	if _, err := ev.Evaluate(context.Background(), planWith("shop", a, b), reconcile.Epoch{}); err != nil {
		t.Fatal(err)
	}
	// Four minutes later b's query changes: its window starts again; a's
	// carries on, and so does the same guardrail of another plan.
	if _, err := ev.Evaluate(context.Background(), planWith("other", a), reconcile.Epoch{}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(t0.Add(4 * time.Minute))
	b.Prometheus = &plan.Prometheus{Query: "q2"}
	rs, _ := ev.Evaluate(context.Background(), planWith("shop", a, b), reconcile.Epoch{})
	if rs[0].Health != reconcile.Pending || rs[1].Health != reconcile.Pending || !rs[1].Since.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("after the change: %+v", rs)
	}
	clk.SetTime(t0.Add(5 * time.Minute))
	rs, _ = ev.Evaluate(context.Background(), planWith("shop", a, b), reconcile.Epoch{})
	if rs[0].Health != reconcile.Breached || rs[1].Health != reconcile.Pending {
		t.Fatalf("at 5m: a %s (want Breached), b %s (want Pending)", rs[0].Health, rs[1].Health)
	}
	rs, _ = ev.Evaluate(context.Background(), planWith("other", a), reconcile.Epoch{})
	if rs[0].Health != reconcile.Breached {
		t.Fatalf("other plan at 5m: %s", rs[0].Health)
	}
	// A removed guardrail forgets its state: added back, it starts afresh.
	ev.Evaluate(context.Background(), planWith("shop", a), reconcile.Epoch{})
	rs, _ = ev.Evaluate(context.Background(), planWith("shop", a, b), reconcile.Epoch{})
	if rs[1].Health != reconcile.Pending || !rs[1].Since.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("b added back: %+v", rs[1])
	}
}

func TestEvaluateNoProvider(t *testing.T) {
	ev := guardrails.NewEvaluator(guardrails.Providers{})
	rs, err := ev.Evaluate(context.Background(), planWith("shop",
		plan.Guardrail{Name: "q", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "up"}}, Max: ptr(1.0)},
		plan.Guardrail{Name: "h", MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://x"}}, Failures: 1}), reconcile.Epoch{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Health != reconcile.Error || !strings.Contains(r.Detail, "no provider") {
			t.Fatalf("%+v", r)
		}
	}
}

func TestEvaluateCancelled(t *testing.T) {
	srv := newFakeProm(t)
	slow := vector(bad)
	slow.delay = 5 * time.Second
	srv.set("q", slow)
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := guardrails.NewEvaluator(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{}), "http": guardrails.NewHTTP(nil)}, guardrails.WithClock(clk))
	g := plan.Guardrail{Name: "q", MetricSource: plan.MetricSource{Prometheus: &plan.Prometheus{Query: "q"}}, Max: ptr(0.05), Failures: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := ev.Evaluate(ctx, planWith("shop", g), reconcile.Epoch{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	// The cancelled evaluation counted nothing: the first bad value is the
	// first of two.
	srv.set("q", vector(bad))
	rs, err := ev.Evaluate(context.Background(), planWith("shop", g), reconcile.Epoch{})
	if err != nil || rs[0].Health != reconcile.Pending || !strings.Contains(rs[0].Detail, "1 of 2") {
		t.Fatalf("%+v %v", rs, err)
	}
}
