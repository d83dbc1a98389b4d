package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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

	// The daemon comes after its parts: the wake set then is the one a
	// watched change to the plan's Deployments calls.
	woken := make(chan string, 16)
	parts.setWake(func(plan string) {
		select {
		case woken <- plan:
		default:
		}
	})
	if _, err := k8stest.Client(t, cfg).AppsV1().Deployments(ns).Patch(t.Context(), k8stest.AppCandidate, types.MergePatchType,
		[]byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case plan := <-woken:
		if plan != "app" {
			t.Errorf("a hand scale woke plan %q, want app", plan)
		}
	case <-time.After(5 * time.Second):
		t.Error("a hand scale of the candidate did not wake the plan through the daemon's wake")
	}

	// kubernetes.namespaces lists only ns: a plan elsewhere is refused.
	elsewhere := *p.Spec.Driver.Kubernetes
	elsewhere.Namespace = "payments"
	p.Spec.Driver.Kubernetes = &elsewhere
	if _, err := parts.open(t.Context(), p); err == nil || !strings.Contains(err.Error(), `plan app: its namespace "payments" is not one the daemon may act in: kubernetes.namespaces lists `+ns) {
		t.Errorf("a plan outside kubernetes.namespaces: %v", err)
	}
}

// TestDaemonPartsTwoClusters: a plan naming cluster b is driven on the
// second test API server, where its Deployments are, and the same plan
// naming no cluster on the default one, where they are not.
func TestDaemonPartsTwoClusters(t *testing.T) {
	cfgB := k8stest.EnvB(t)
	ns := k8stest.Namespace(t, cfgB)
	k8stest.NamespaceNamed(t, k8stest.Env(t), ns)
	k8stest.NewApp(t, cfgB, ns, k8stest.AppOptions{Replicas: 2})
	c := daemon.DefaultConfig()
	c.DataDir = t.TempDir()
	c.Kubernetes.Kubeconfig = k8stest.Kubeconfig(t)
	c.Kubernetes.Clusters = map[string]daemon.ClusterConfig{"b": {Kubeconfig: k8stest.KubeconfigB(t)}}
	parts, err := openParts(t.Context(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer parts.close()

	p := &plan.Plan{Metadata: plan.Metadata{Name: "app"}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
		Cluster: "b", Namespace: ns, Stable: plan.KubernetesWorkload{Deployment: k8stest.AppStable},
		Candidate: plan.KubernetesWorkload{Deployment: k8stest.AppCandidate},
	}}}}
	drv, err := parts.open(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := drv.Observe(t.Context()); err != nil || st.StableReplicas != 2 {
		t.Errorf("cluster b: Observe = %+v, %v", st, err)
	}
	p.Spec.Driver.Kubernetes.Cluster = ""
	if drv, err = parts.open(t.Context(), p); err == nil {
		_, err = drv.Observe(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("the default cluster: %v, want the Deployments not found", err)
	}
}
