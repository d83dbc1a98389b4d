package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// comparePlan holds at canary 30% with guardrail, a list item under
// spec.guardrails judging the candidate's mean latency against stable's.
func comparePlan(e *env, guardrail string) string {
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary, percentage: 30}
  driver:
    docker:
      stable: {container: %s}
      candidate: {container: %s}
      traffic: {nginx: {upstream: %s}}
  sides: {stable: v1, candidate: v2}
  phases:
    - name: canary
      steps: [10, 30, 60]
      soak: 3s
  guardrails:
%s  rollback: {to: start, onNoData: hold}
`, e.stable.name, e.candidate.name, e.upstream, guardrail)
}

// meanLatency is each side's mean latency over the last window.
func meanLatency(window string) string {
	return `sum(rate(http_request_duration_seconds_sum{version="$side"}[` + window + `])) / sum(rate(http_request_duration_seconds_count{version="$side"}[` + window + `]))`
}

const (
	compareFor      = 3 * time.Second
	compareInterval = time.Second // the daemon's interval in startDaemon
)

// TestCompareWithStable: with both sides of the test service behind nginx
// and Prometheus, a slowdown of both sides together is no breach (the case
// a fixed bound gets wrong), and a candidate twice as slow as stable is
// rolled back, the rollback commit giving both sides' values:
//
//   - judged with a tolerance (at most 20% above stable), within `for`
//     plus two evaluation intervals, plus the query's own range (2s);
//   - judged by a Mann-Whitney test of the last 10s, one sample a second
//     (a 1s range, so that samples share no requests), within the time
//     the window needs to tell, plus `for` and two intervals.
//
// Not parallel, nor are its runs: each brings up its own world under load,
// and the tests that time a rollback to the second run beside the parallel
// ones.
func TestCompareWithStable(t *testing.T) {
	for _, tt := range []struct {
		name, guardrail string
		limit           time.Duration
	}{
		{"tolerance", fmt.Sprintf(`    - name: latency-vs-stable
      prometheus:
        query: '%s'
      compare: {maxIncrease: 20%%}
      for: %s
`, meanLatency("2s"), compareFor), compareFor + 2*compareInterval + 2*time.Second},
		{"mann-whitney", fmt.Sprintf(`    - name: latency-test
      prometheus:
        query: '%s'
      compare: {test: mann-whitney, window: 10s, minSamples: 6, minEffect: 20%%}
      for: %s
`, meanLatency("1s"), compareFor), 10*time.Second + compareFor + 2*compareInterval},
	} {
		t.Run(tt.name, func(t *testing.T) {
			compareWithStable(t, tt.guardrail, tt.limit)
		})
	}
}

func compareWithStable(t *testing.T, guardrail string, limit time.Duration) {
	e := newEnv(t, map[string]func(*env) string{"shop.yaml": func(e *env) string { return comparePlan(e, guardrail) }})
	for _, a := range []app{e.stable, e.candidate} {
		e.set(t, a, map[string]string{"latency": "20ms"})
	}
	d := e.startDaemon(t, "")
	e.startNginx(t)
	e.load(t)
	e.load(t)
	d.wait(t, "shop", 2*time.Minute, "holding at canary 30%", func(m daemon.Migration) bool {
		return m.Position == plan.Position{Phase: "canary", Percentage: 30} && m.State == "Holding"
	})

	// Both sides slow down together: 20ms → 80ms, four times slower, for
	// longer than `for` and the test's window. Nothing breaches.
	for _, a := range []app{e.stable, e.candidate} {
		e.set(t, a, map[string]string{"latency": "80ms"})
	}
	quiet := time.Now().Add(compareFor + 10*time.Second)
	var judged bool
	pending := 0
	for time.Now().Before(quiet) {
		m, err := d.migration("shop")
		if err != nil {
			t.Fatal(err)
		}
		if m.Position.IsStart() || m.State != "Holding" {
			t.Fatalf("both sides slowed down together and the migration went to %s %s: %+v", m.Position, m.State, m.Guardrails)
		}
		for _, g := range m.Guardrails {
			// Pending is allowed while the two sides' rate windows
			// fill with slow requests at their own pace; `for` is
			// there so that it does not breach.
			if g.Health == reconcile.Breached {
				t.Fatalf("guardrail %s breached when both sides slowed down together: %s", g.Name, g.Detail)
			}
			if g.Health == reconcile.Pending {
				pending++
			}
			if g.Compare != nil && g.Compare.Verdict == reconcile.Pass && g.Compare.Stable > 0.05 {
				judged = true // a comparison of the slow sides passed
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !judged {
		t.Fatal("no comparison of the slowed-down sides was judged")
	}
	t.Logf("both sides slowed down together: no breach (%d pending readings of %s while the windows filled)", pending, compareFor+10*time.Second)

	// The candidate alone becomes twice as slow as stable.
	injected := time.Now()
	e.set(t, e.candidate, map[string]string{"latency": "160ms"})
	m := d.wait(t, "shop", time.Minute, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
	rb, err := event(m, "Rollback")
	if err != nil {
		t.Fatalf("%v: %+v", err, m.History)
	}
	took := rb.At.Sub(injected)
	t.Logf("2x latency regression rolled back %s after it began (limit %s): %s", took.Round(10*time.Millisecond), limit, rb.Reason)
	if took > limit {
		t.Errorf("rolled back %s after the regression began, more than %s", took, limit)
	}
	if !strings.Contains(rb.Reason, "vs stable") {
		t.Errorf("the rollback's reason does not compare the sides: %s", rb.Reason)
	}
	waitFor(t, 30*time.Second, "the rollback commit gives both sides' values", func() bool {
		log := gittest.Git(t, e.remote, "log", "--format=%B", "main")
		return strings.Contains(log, "rollback(shop)") && strings.Contains(log, "vs stable")
	})
}

// TestResourcesBreach: a guardrail on the memory the candidate's container
// uses, read from the Docker engine's stats, rolls the migration back when
// the candidate holds more than its bound allows of its 256 MiB limit, and
// the rollback commit names the guardrail.
//
// Not parallel, as TestCompareWithStable.
func TestResourcesBreach(t *testing.T) {
	e := newEnv(t, map[string]func(*env) string{"shop.yaml": func(e *env) string {
		return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary, percentage: 30}
  driver:
    docker:
      stable: {container: %s}
      candidate: {container: %s}
      traffic: {nginx: {upstream: %s}}
  phases:
    - name: canary
      steps: [10, 30]
      soak: 2s
  guardrails:
    - name: memory
      resources: {usage: memory}
      max: 50
      for: 2s
  rollback: {to: start}
`, e.stable.name, e.candidate.name, e.upstream)
	}})
	d := e.startDaemon(t, "")
	e.startNginx(t)
	m := d.wait(t, "shop", 2*time.Minute, "at rest at canary 30%, measured", func(m daemon.Migration) bool {
		return m.Position == plan.Position{Phase: "canary", Percentage: 30} && m.State == "Completed" &&
			len(m.Guardrails) == 1 && m.Guardrails[0].Health == reconcile.Healthy
	})
	if len(m.Guardrails) != 1 || m.Guardrails[0].Health != reconcile.Healthy || m.Guardrails[0].Value > 50 {
		t.Fatalf("readings before the fault: %+v", m.Guardrails)
	}
	t.Logf("before: %s (%s)", m.Guardrails[0].Shown(), m.Guardrails[0].Detail)

	injected := time.Now()
	e.set(t, e.candidate, map[string]string{"holdBytes": strconv.Itoa(200 << 20)})
	m = d.wait(t, "shop", time.Minute, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
	rb, err := event(m, "Rollback")
	if err != nil {
		t.Fatalf("%v: %+v", err, m.History)
	}
	t.Logf("the candidate held 200 MiB of 256; rolled back %s later: %s", rb.At.Sub(injected).Round(10*time.Millisecond), rb.Reason)
	if !strings.Contains(rb.Reason, "guardrail memory is ") || !strings.Contains(rb.Reason, "max 50 for 2s") {
		t.Errorf("reason: %s", rb.Reason)
	}
	waitFor(t, 30*time.Second, "the rollback committed", func() bool {
		return strings.Contains(gittest.Git(t, e.remote, "log", "--format=%B", "main"), "Guardrail memory was ")
	})
}
