package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestDaemonPartsKubernetes checks the daemon's Kubernetes parts against
// the test API server: with leaderElection enabled the loop runs only once
// this replica holds the Lease, named after the pod; and a plan with a
// kubernetes block opens its driver.
func TestDaemonPartsKubernetes(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	t.Setenv("POD_NAME", "hal9-migrate-0")
	c := daemon.DefaultConfig()
	c.Kubernetes.Kubeconfig = k8stest.Kubeconfig(t)
	c.Kubernetes.LeaderElection = daemon.LeaderElectionConfig{Enabled: true, Namespace: ns, Name: "hal9-migrate",
		LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}
	c.DataDir = t.TempDir()
	c.Kubernetes.Namespaces = []string{ns}
	parts, err := openParts(t.Context(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer parts.close()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	holder := ""
	err = parts.run(ctx, func(ctx context.Context) error {
		l, err := k8stest.Client(t, cfg).CoordinationV1().Leases(ns).Get(ctx, "hal9-migrate", metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		cancel()
		return nil
	})
	if holder != "hal9-migrate-0" {
		t.Errorf("the loop ran with the lease held by %q (%v), want hal9-migrate-0", holder, err)
	}

	k8stest.NewApp(t, cfg, ns, k8stest.AppOptions{Replicas: 1})
	p := &plan.Plan{Metadata: plan.Metadata{Name: "app"}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
		Namespace: ns, Stable: plan.KubernetesWorkload{Deployment: k8stest.AppStable},
		Candidate: plan.KubernetesWorkload{Deployment: k8stest.AppCandidate},
	}}}}
	drv, err := parts.open(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := drv.Observe(t.Context()); err != nil || st.StableReplicas != 1 {
		t.Errorf("Observe = %+v, %v", st, err)
	}

	// kubernetes.namespaces lists only ns: a plan elsewhere is refused.
	elsewhere := *p.Spec.Driver.Kubernetes
	elsewhere.Namespace = "payments"
	p.Spec.Driver.Kubernetes = &elsewhere
	if _, err := parts.open(t.Context(), p); err == nil || !strings.Contains(err.Error(), `plan app: its namespace "payments" is not one the daemon may act in: kubernetes.namespaces lists `+ns) {
		t.Errorf("a plan outside kubernetes.namespaces: %v", err)
	}
}
