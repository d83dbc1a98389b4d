package kubernetes

import (
	"testing"

	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/plan"
)

// TestNamespaces checks that a driver confined to some namespaces refuses
// a plan in another one when it is opened, naming the plan, the namespace
// and the setting; it needs no API server, since nothing is asked of it.
func TestNamespaces(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	planIn := func(ns string) *plan.Plan {
		return &plan.Plan{Metadata: plan.Metadata{Name: "shop"}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
			Namespace: ns, Stable: plan.KubernetesWorkload{Deployment: "v1"}, Candidate: plan.KubernetesWorkload{Deployment: "v2"},
		}}}}
	}
	confined := WithNamespaces("hal9", "shop")
	if d, err := New(cfg, planIn("shop"), confined); err != nil || d.Namespace() != "shop" {
		t.Errorf("a plan in a listed namespace: %v", err)
	}
	for _, c := range []struct {
		ns, want string
	}{
		{"payments", `plan shop: its namespace "payments" is not one the daemon may act in: kubernetes.namespaces lists hal9, shop`},
		{"", `plan shop: the default namespace "default" is not one the daemon may act in: kubernetes.namespaces lists hal9, shop`},
	} {
		if _, err := New(cfg, planIn(c.ns), confined); err == nil || err.Error() != c.want {
			t.Errorf("a plan in namespace %q: %v, want %s", c.ns, err, c.want)
		}
		if _, err := Opener(cfg, confined)(t.Context(), planIn(c.ns)); err == nil || err.Error() != c.want {
			t.Errorf("opening a plan in namespace %q: %v, want %s", c.ns, err, c.want)
		}
	}
	if _, err := New(cfg, planIn(""), confined, WithDefaultNamespace("hal9")); err != nil {
		t.Errorf("a plan in a listed default namespace: %v", err)
	}
	if _, err := New(cfg, planIn("payments")); err != nil {
		t.Errorf("a plan anywhere, with no list: %v", err)
	}
}
