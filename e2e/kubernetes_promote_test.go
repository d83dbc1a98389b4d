package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestKubernetesStagingToProduction: staging on one API server, production
// on another, one daemon. Production waits at start until staging has
// reached full and held it for its gate's time, then walks its canary;
// holding at its target it promotes itself (promotion: auto) with a commit
// of the daemon's own moving its target to full, and goes there. A breach
// in production (its health endpoint fails) rolls production back, in
// Git too, and moves nothing of staging.
func TestKubernetesStagingToProduction(t *testing.T) {
	t.Parallel()
	c := twoClusterApps(t, "s-", "p-")
	kubeA, kubeB, nsStaging, nsProd := c.kubeA, c.kubeB, c.nsA, c.nsB

	// Production's health endpoint, failing on demand.
	var failing atomic.Bool
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(health.Close)

	const gate = 4 * time.Second
	staging := fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: checkout-staging}
spec:
  target: {phase: full}
  driver:
    kubernetes:
      cluster: staging
      namespace: %s
      stable: {deployment: %s}
      candidate: {deployment: %s}
  phases:
    - {name: canary, steps: [25, 50], soak: 1s}
    - {name: full, steps: [100]}
`, nsStaging, k8stest.AppStable, k8stest.AppCandidate)
	production := fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: checkout-production}
spec:
  target: {phase: canary}
  promotion: auto
  after:
    - {plan: checkout-staging, reached: full, for: %s}
  driver:
    kubernetes:
      cluster: production
      namespace: %s
      stable: {deployment: %s}
      candidate: {deployment: %s}
  phases:
    - {name: canary, steps: [25, 50], soak: 2s}
    - {name: full, steps: [100]}
  guardrails:
    - name: health
      http: {url: '%s/health'}
      failures: 2
      interval: 1s
`, plan.Duration(gate), nsProd, k8stest.AppStable, k8stest.AppCandidate, health.URL)

	e := &env{t: t, dir: t.TempDir()}
	both := filepath.Join(e.dir, "both.kubeconfig")
	mergeKubeconfigs(t, both, map[string]string{"staging": k8stest.Kubeconfig(t), "production": k8stest.KubeconfigB(t)})
	e.startGit(t, map[string]string{"plans/staging.yaml": staging, "plans/production.yaml": production})
	d := e.runClusterDaemon(t, both, []string{nsStaging, nsProd}, map[string]string{
		"staging":    "{kubeconfig: " + both + ", context: staging}",
		"production": "{kubeconfig: " + both + ", context: production}",
	})

	// Production waits at start while staging climbs, with the gate as
	// its reason.
	m := d.wait(t, "checkout-production", time.Minute, "production waiting for its gate", func(m daemon.Migration) bool {
		return m.Position.IsStart() && strings.Contains(m.Reason, "waiting for checkout-staging at full for "+plan.Duration(gate).String())
	})
	t.Logf("production waits: %s", m.Reason)
	st := d.wait(t, "checkout-staging", 2*time.Minute, "staging at full", func(m daemon.Migration) bool {
		return m.Position == plan.Position{Phase: "full", Percentage: 100}
	})
	var reachedFull time.Time
	for _, r := range st.Reached {
		if r.Position.Phase == "full" {
			reachedFull = r.At
		}
	}
	if reachedFull.IsZero() {
		t.Fatalf("staging's status does not say when it reached full: %+v", st.Reached)
	}

	// Production starts only once the gate's time has passed, walks its
	// canary, promotes itself and reaches full.
	m = d.wait(t, "checkout-production", 3*time.Minute, "production at full 100%", func(m daemon.Migration) bool {
		return m.Position == plan.Position{Phase: "full", Percentage: 100}
	})
	if len(m.Reached) == 0 || m.Reached[0].At.Before(reachedFull.Add(gate)) {
		t.Errorf("production entered %v before staging held full for %s (from %s)", m.Reached, gate, reachedFull)
	}
	log := gittest.Git(t, e.remote, "log", "--format=%H%x00%B%x01", "main")
	var promote string
	for _, c := range strings.Split(log, "\x01") {
		if strings.Contains(c, "Hal9-Migrate-Action: promote") {
			promote = c
		}
	}
	if !strings.Contains(promote, "promote(checkout-production): checkout-production canary 50% → full") {
		t.Fatalf("no promotion commit of the daemon's:\n%s", log)
	}
	if !strings.Contains(e.show(t, "plans/production.yaml"), "target: {phase: full}") {
		t.Errorf("production's target after the promotion:\n%s", e.show(t, "plans/production.yaml"))
	}
	waitDeployments(t, kubeB, nsProd, 0, 4)

	// A breach in production rolls it back, in Git too; staging does not
	// move.
	stagingHead := gittest.Git(t, e.remote, "log", "-1", "--format=%H", "main", "--", "plans/staging.yaml")
	failing.Store(true)
	m = d.wait(t, "checkout-production", time.Minute, "production rolled back", func(m daemon.Migration) bool {
		return m.State == "RolledBack" && m.Position == pos(50)
	})
	// Healthy again at once: a fault that persisted would walk production
	// down a step per breach, as it should.
	failing.Store(false)
	if m.Failed == nil || !strings.Contains(m.Failed[len(m.Failed)-1].Reason, "guardrail health") {
		t.Errorf("production's failed positions: %+v", m.Failed)
	}
	waitFor(t, time.Minute, "the rollback of production in Git", func() bool {
		return strings.Contains(e.show(t, "plans/production.yaml"), "percentage: 50")
	})
	waitDeployments(t, kubeB, nsProd, 2, 2)
	if got := gittest.Git(t, e.remote, "log", "-1", "--format=%H", "main", "--", "plans/staging.yaml"); got != stagingHead {
		t.Errorf("staging's plan changed after production's breach: %s, was %s", got, stagingHead)
	}
	st = d.wait(t, "checkout-staging", 10*time.Second, "staging still at full", func(m daemon.Migration) bool {
		return m.Position == plan.Position{Phase: "full", Percentage: 100} && m.State != "RolledBack"
	})
	waitDeployments(t, kubeA, nsStaging, 0, 4)
	// Rolled back under the daemon's own promotion, production does not
	// promote itself again.
	time.Sleep(5 * time.Second)
	if m := d.wait(t, "checkout-production", time.Second, "production still rolled back", func(m daemon.Migration) bool { return true }); m.Position != pos(50) {
		t.Errorf("production moved after its rollback: %s", m.Position)
	}
}

// waitDeployments waits for the stable and candidate Deployments of ns to
// have the replicas given, all ready.
func waitDeployments(t *testing.T, kube kubernetes.Interface, ns string, stable, candidate int32) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%s: stable %d, candidate %d", ns, stable, candidate), func() bool {
		for dep, want := range map[string]int32{k8stest.AppStable: stable, k8stest.AppCandidate: candidate} {
			x, err := kube.AppsV1().Deployments(ns).Get(t.Context(), dep, metav1.GetOptions{})
			if err != nil || x.Spec.Replicas == nil || *x.Spec.Replicas != want || x.Status.ReadyReplicas != want {
				return false
			}
		}
		return true
	})
}
