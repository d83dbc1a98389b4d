package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// TestKubernetesResourcesBreach: the daemon reads the candidate's memory
// from metrics.k8s.io (metrics-server scraping kwok's simulated usage) and
// rolls back when the candidate's pods use more of their limit than the
// guardrail allows; the rollback is committed to Git.
//
// Not parallel, as TestCompareWithStable.
func TestKubernetesResourcesBreach(t *testing.T) {
	e := newK8sEnv(t, false, 10, k8sPlan{target: 30, guardrail: `    - name: memory
      resources: {usage: memory}
      max: 50
      for: 3s
`, limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}})
	d := e.startAt(t, 30)
	m := d.wait(t, "shop", 2*time.Minute, "the memory guardrail measured healthy", func(m daemon.Migration) bool {
		return len(m.Guardrails) == 1 && m.Guardrails[0].Health == reconcile.Healthy
	})
	t.Logf("before: %s (%s)", m.Guardrails[0].Shown(), m.Guardrails[0].Detail)

	// The candidate's pods now use 200Mi of their 256Mi.
	dep, err := e.kube.AppsV1().Deployments(e.ns).Get(t.Context(), k8stest.AppCandidate, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(t.Context(), metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(dep.Spec.Selector)})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("candidate pods: %d, %v", len(pods.Items), err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"kwok.x-k8s.io/usage-memory": "200Mi"}}})
	injected := time.Now()
	for _, p := range pods.Items {
		if _, err := e.kube.CoreV1().Pods(e.ns).Patch(t.Context(), p.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	m = d.wait(t, "shop", 2*time.Minute, "rolled back from canary 30%", func(m daemon.Migration) bool {
		return m.Position != pos(30)
	})
	rb, err := event(m, "Rollback")
	if err != nil {
		t.Fatalf("%v: %+v", err, m.History)
	}
	t.Logf("the candidate's pods used 200Mi of 256Mi; rolled back %s later (metrics-server scrapes every 10s): %s",
		rb.At.Sub(injected).Round(10*time.Millisecond), rb.Reason)
	if !strings.Contains(rb.Reason, "guardrail memory is 78.") || !strings.Contains(rb.Reason, "max 50 for 3s") {
		t.Errorf("reason: %s", rb.Reason)
	}
	e.checkRolledBackInGit(t, "canary 30% → canary 10%")
}
