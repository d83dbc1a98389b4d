package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// More scenarios of scenario_test.go on the Kubernetes driver: a flapping
// guardrail, Prometheus stopped under each onNoData, and a daemon killed
// in the middle of a rollback chain.

// reading returns the migration's latest reading of the guardrail named
// name, and whether there is one.
func reading(m daemon.Migration, name string) (reconcile.Reading, bool) {
	for _, r := range m.Guardrails {
		if r.Name == name {
			return r, true
		}
	}
	return reconcile.Reading{}, false
}

// guardrailIs returns a condition on the migration: the guardrail named
// name reads health.
func guardrailIs(name string, health reconcile.Health) func(daemon.Migration) bool {
	return func(m daemon.Migration) bool {
		r, ok := reading(m, name)
		return ok && r.Health == health
	}
}

// checkStill checks that every sample is at canary pct% with the
// workloads of that step.
func (e *k8sEnv) checkStill(t *testing.T, s *k8sSampler, pct int, why string) {
	t.Helper()
	samples := s.all()
	if len(samples) == 0 {
		t.Fatal("no samples")
	}
	want := e.expect(pct)
	for _, x := range samples {
		if x.pos != pos(pct) || x.objects() != want {
			t.Errorf("%s moved the migration or its workloads: %s, want canary %d%% with %+v", why, x.world, pct, want)
		}
	}
	t.Logf("%d rounds of sampling, all at %s", s.rounds.Load(), samples[0].world)
}

// rollbackSubjects returns the subjects of the rollback commits on the
// plan repository's main branch, oldest first, after since (a commit) if
// given.
func (e *k8sEnv) rollbackSubjects(t *testing.T, since string) []string {
	t.Helper()
	rev := "main"
	if since != "" {
		rev = since + "..main"
	}
	var out []string
	for _, l := range strings.Split(gittest.Git(t, e.remote, "log", "--reverse", "--format=%s", rev), "\n") {
		if strings.HasPrefix(l, "rollback(") {
			out = append(out, l)
		}
	}
	return out
}

// TestKubernetesFlappingGuardrail: a health check that fails for less than
// its `for` and recovers, again and again, is never a breach: the
// migration stays at its target, the route's weights and the replicas are
// never touched, and Git has no rollback.
func TestKubernetesFlappingGuardrail(t *testing.T) {
	t.Parallel()
	w := k8sPlan{target: 60, forWin: "8s"}
	e := newK8sEnv(t, true, 4, w)
	d := e.startAt(t, 60)
	d.wait(t, "shop", 90*time.Second, "the health guardrail healthy", guardrailIs("health", reconcile.Healthy))
	s := e.sample(t, daemonOf(d))
	sampling := time.Now()
	// Each flap is seen by the daemon (Pending), lasts a little longer,
	// and ends once the daemon has seen the check pass again: a fault of
	// a few seconds, well inside the 8s `for`, whatever the machine's
	// load.
	const flaps = 4
	for i := range flaps {
		e.fault(t, true)
		began := time.Now()
		d.wait(t, "shop", 90*time.Second, fmt.Sprintf("flap %d seen: health Pending", i+1), guardrailIs("health", reconcile.Pending))
		time.Sleep(time.Second)
		e.fault(t, false)
		lasted := time.Since(began)
		d.wait(t, "shop", 90*time.Second, fmt.Sprintf("flap %d over: health Healthy", i+1), guardrailIs("health", reconcile.Healthy))
		t.Logf("flap %d: the check failed for %s", i+1, lasted.Round(10*time.Millisecond))
		if lasted >= 8*time.Second {
			t.Fatalf("flap %d lasted %s, not shorter than the guardrail's `for` (8s): the machine is too slow for this test", i+1, lasted)
		}
		time.Sleep(time.Second)
	}
	s.end()
	e.checkStill(t, s, 60, "a flapping guardrail")
	m, err := d.migration("shop")
	if err != nil {
		t.Fatal(err)
	}
	if m.State == "RolledBack" || len(m.Failed) > 0 {
		t.Errorf("after the flaps: state %s, failed %+v", m.State, m.Failed)
	}
	for _, h := range m.History {
		if h.At.After(sampling) && (h.From != h.To || strings.Contains(h.Action, "Rollback") || h.Action == "MoveBack") {
			t.Errorf("a flapping guardrail made the daemon move: %+v", h)
		}
	}
	if rb := e.rollbackSubjects(t, ""); len(rb) > 0 {
		t.Errorf("rollback commits in Git: %q", rb)
	}
	if p := e.show(t, "plans/shop.yaml"); !strings.Contains(p, "target: {phase: canary, percentage: 60}") {
		t.Errorf("the plan file no longer names canary 60%%:\n%s", p)
	}
	waitFor(t, 30*time.Second, "the status file says canary 60%", func() bool {
		st := e.show(t, "status/shop.yaml")
		return strings.Contains(st, "percentage: 60") && !strings.Contains(st, "RolledBack")
	})
}

// errorRateV2 is the error rate of the health endpoint's testapp
// (version v2), as the Docker scenarios' guardrail measures the
// candidate's.
const errorRateV2 = `(sum(rate(http_requests_total{version="v2",code="500"}[2s])) or vector(0)) / sum(rate(http_requests_total{version="v2"}[2s]))`

// TestKubernetesPrometheusStopped: with Prometheus gone, onNoData decides.
// hold stays where it is, the route's weights and the replicas untouched;
// rollback rolls back to start, the candidate's weight and replicas to 0,
// the rollback committed to Git; ignore carries on to the target. The
// guardrail is a Prometheus query over the testapp process standing for
// the candidate, under load, scraped by a real Prometheus.
func TestKubernetesPrometheusStopped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		onNoData string
		want     plan.Position
	}{{"hold", pos(10)}, {"rollback", plan.Start}, {"ignore", pos(60)}} {
		t.Run(tc.onNoData, func(t *testing.T) {
			t.Parallel()
			// settle: the query has no data until Prometheus has
			// scraped the candidate's traffic a few times; the guardrail
			// is not judged that long after each move, so that onNoData
			// judges Prometheus gone, not a candidate just entered.
			w := k8sPlan{target: 10, onNoData: tc.onNoData, guardrail: `    - name: errors
      prometheus: {query: '` + errorRateV2 + `'}
      max: 0.2
      for: 3s
      settle: 4s
`}
			e := newK8sEnv(t, true, 4, w)
			e.health.Load(t, 50, 1_000_000)
			prom := promtest.Start(t, promtest.Options{Targets: []string{e.health.Addr}, ScrapeInterval: 250 * time.Millisecond})
			prom.WaitUp(t, errorRateV2, 90*time.Second)
			e.daemonExtra = fmt.Sprintf("prometheus: {url: %s, timeout: 2s}\n", prom.URL)
			d := e.startAt(t, 10)
			d.wait(t, "shop", 90*time.Second, "the errors guardrail healthy", guardrailIs("errors", reconcile.Healthy))
			s := e.sample(t, daemonOf(d))

			prom.Stop()
			if tc.onNoData == "rollback" {
				// No data at the target is a breach: back to start at
				// once, committed, before the push below.
				d.wait(t, "shop", 90*time.Second, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
				e.settled(t, d, 0, 30*time.Second)
				waitFor(t, 30*time.Second, "the plan file names start", func() bool {
					return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 0}")
				})
			} else {
				d.wait(t, "shop", 90*time.Second, "the errors guardrail in Error", guardrailIs("errors", reconcile.Error))
			}
			w.target = 60
			pushed := e.push(t, "on to 60%", map[string]string{"plans/shop.yaml": w.yaml(e)})
			d.wait(t, "shop", 90*time.Second, "the daemon follows "+pushed, func(m daemon.Migration) bool {
				return m.TargetPos == pos(60) || (tc.onNoData == "rollback" && strings.HasPrefix(pushed, m.Commit) && m.Commit != "")
			})
			var settledAt world
			switch tc.onNoData {
			case "hold":
				time.Sleep(10 * time.Second) // a settle and a soak, and more
				settledAt = e.settled(t, d, 10, 30*time.Second)
			case "rollback":
				// The new commit lets it enter canary 10% again, and
				// rolls it back again.
				d.wait(t, "shop", 90*time.Second, "at start, canary 10% failed under "+pushed, func(m daemon.Migration) bool {
					for _, f := range m.Failed {
						if f.Position == pos(10).String() && f.Commit != "" && strings.HasPrefix(pushed, f.Commit) {
							return m.Position.IsStart()
						}
					}
					return false
				})
				settledAt = e.settled(t, d, 0, 30*time.Second)
				time.Sleep(3 * time.Second) // and stays
			case "ignore":
				d.wait(t, "shop", 90*time.Second, "at canary 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
				settledAt = e.settled(t, d, 60, 30*time.Second)
				time.Sleep(3 * time.Second) // and stays
			}
			t.Logf("onNoData %s: %s", tc.onNoData, settledAt)
			s.end()
			switch tc.onNoData {
			case "hold":
				e.checkStill(t, s, 10, "Prometheus gone under hold")
				m, _ := d.migration("shop")
				if !strings.Contains(m.Reason, "errors") {
					t.Errorf("hold: the reason does not name the guardrail: %s", m.Reason)
				}
				if rb := e.rollbackSubjects(t, ""); len(rb) > 0 {
					t.Errorf("hold: rollback commits in Git: %q", rb)
				}
				if p := e.show(t, "plans/shop.yaml"); !strings.Contains(p, "target: {phase: canary, percentage: 60}") {
					t.Errorf("hold: the plan file no longer names the pushed target:\n%s", p)
				}
				waitFor(t, 30*time.Second, "the status file says canary 10% under the pushed commit", func() bool {
					st := e.show(t, "status/shop.yaml")
					return strings.Contains(st, "percentage: 10") && strings.Contains(st, "commit: "+pushed) && !strings.Contains(st, "RolledBack")
				})
			case "rollback":
				e.checkWalk(t, s, 10, 0, 10, 0)
				if rb := e.rollbackSubjects(t, ""); len(rb) != 2 {
					t.Errorf("rollback commits: %q, want one before the push and one after", rb)
				}
				rb := e.rollbackSubjects(t, pushed)
				t.Logf("rollback commits after the push: %q", rb)
				if len(rb) == 0 || !strings.HasPrefix(rb[len(rb)-1], "rollback(shop): canary 10% → start") {
					t.Errorf("no rollback commit canary 10%% → start after %s: %q", pushed, rb)
				}
				waitFor(t, 30*time.Second, "the plan file names start", func() bool {
					return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 0}")
				})
				waitFor(t, 30*time.Second, "the status file says RolledBack at start", func() bool {
					st := e.show(t, "status/shop.yaml")
					return strings.Contains(st, "phase: start") && strings.Contains(st, "state: RolledBack")
				})
			case "ignore":
				e.checkWalk(t, s, 10, 30, 60)
				if rb := e.rollbackSubjects(t, ""); len(rb) > 0 {
					t.Errorf("ignore: rollback commits in Git: %q", rb)
				}
				waitFor(t, 30*time.Second, "the status file says canary 60%", func() bool {
					st := e.show(t, "status/shop.yaml")
					return strings.Contains(st, "percentage: 60") && !strings.Contains(st, "RolledBack")
				})
			}
		})
	}
}

// TestKubernetesKillMidRollback: a daemon killed with SIGKILL in the
// middle of a rollback chain (a persistent fault, previous-step) carries
// the chain on once restarted: 60% → 30% → 10% → start, each position
// once and each held its `for`, the route's weights and the candidate's
// replicas only going down, and Git ends naming the live position, in the
// plan file and the status file, each rollback committed once. In
// "uncommitted" the plan repository is silent from the fault to the kill,
// so the first rollback's commit is the restarted daemon's to make.
func TestKubernetesKillMidRollback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hang bool
	}{{"committed", false}, {"uncommitted", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newK8sEnv(t, true, 4, k8sPlan{target: 60, forWin: "3s"})
			var cur atomic.Pointer[daemonProc]
			d := e.startAt(t, 60)
			cur.Store(d)
			s := e.sample(t, func() *daemonProc { return cur.Load() })
			if tc.hang {
				e.gitProxy.Hang(true)
			}
			e.fault(t, true)
			d.wait(t, "shop", 90*time.Second, "rolled back to 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
			if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-d.done
			killed := time.Now()
			if tc.hang {
				e.gitProxy.Hang(false)
				if p := e.show(t, "plans/shop.yaml"); !strings.Contains(p, "percentage: 60}") {
					t.Fatalf("the rollback reached Git before the kill:\n%s", p)
				}
			}
			time.Sleep(time.Second) // the workloads, untended
			d = e.startDaemon(t)
			cur.Store(d)
			d.wait(t, "shop", 90*time.Second, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
			e.settled(t, d, 0, 30*time.Second)
			t.Logf("at start %s after the kill", time.Since(killed).Round(10*time.Millisecond))
			s.end()
			e.checkWalk(t, s, 60, 30, 10, 0)
			samples := s.all()
			// Down only, said plainly (checkWalk's order of values
			// implies it).
			for i := 1; i < len(samples); i++ {
				a, b := samples[i-1].world, samples[i].world
				if b.traffic > a.traffic || b.candidate > a.candidate {
					t.Errorf("the workloads went up during the rollback: %s, then %s", a, b)
				}
			}
			// The restart cut no `for` short: 30% (across the kill) and
			// 10% were each held at least 3s.
			e.checkWalkedDown(t, samples)
			rb := e.rollbackSubjects(t, "")
			t.Logf("rollback commits: %q", rb)
			seen := map[string]bool{}
			for _, subj := range rb {
				if seen[subj] {
					t.Errorf("a rollback committed twice: %q", subj)
				}
				seen[subj] = true
			}
			// The first rollback's commit, whichever daemon made it, says
			// why.
			if body := gittest.Git(t, e.remote, "log", "--format=%B", "--fixed-strings", "--grep", "rollback(shop): canary 60% → ", "main"); !strings.Contains(body, "Guardrail health was") {
				t.Errorf("the rollback from canary 60%% does not say why:\n%s", body)
			}
			m, err := d.migration("shop")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, h := range m.History {
				if h.From == "canary 60%" && h.To == "canary 30%" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("60%% → 30%% recorded %d times in the history: %+v", n, m.History)
			}
		})
	}
}

// TestKubernetesHandScaleWakes: with an interval of an hour, someone
// scaling the candidate's Deployment to zero by hand is undone within
// seconds: the daemon's informers see the change and wake the plan.
func TestKubernetesHandScaleWakes(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, false, 10, k8sPlan{target: 10})
	d := e.startAt(t, 10)
	d.stop()
	// The daemon again, stepping its plans once at its start and then
	// only when woken.
	e.interval = "1h"
	d = e.startDaemon(t)
	want := e.settled(t, d, 10, 30*time.Second)
	if _, err := e.kube.AppsV1().Deployments(e.ns).Patch(t.Context(), k8stest.AppCandidate, types.MergePatchType,
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := e.settled(t, d, 10, 20*time.Second)
	t.Logf("scaled by hand to 0 replicas, back to %d in %s (was %d)", got.candidate, time.Since(start).Round(time.Millisecond), want.candidate)
}
