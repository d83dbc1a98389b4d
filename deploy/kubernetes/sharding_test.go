package kubernetes_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/leader"
)

// TestRBACSharding applies the base with the sharding component and checks,
// impersonating the ServiceAccount, that a replica holds its membership
// and takes every shard, then gives them up and leaves, with the rights
// the component grants; and that it runs three replicas.
func TestRBACSharding(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	suffix := "-" + ns[len(ns)-8:]
	// The component's Role and RoleBinding moved to ns, bound to the
	// overlay's ServiceAccount, as an overlay of the user's would.
	sa := "hal9-migrate" + suffix
	patches := fmt.Sprintf(`patches:
  - target: {kind: Role, name: hal9-migrate-sharding}
    patch: '[{"op": "replace", "path": "/metadata/namespace", "value": "%s"}]'
  - target: {kind: RoleBinding, name: hal9-migrate-sharding}
    patch: '[{"op": "replace", "path": "/metadata/namespace", "value": "%s"}, {"op": "replace", "path": "/subjects/0", "value": {"kind": "ServiceAccount", "name": "%s", "namespace": "%s"}}]'
`, ns, ns, sa, ns)
	rendered := withComponents(t, overlayDir(t, ns, suffix), []string{"components/sharding"}, patches)
	if !bytes.Contains(rendered, []byte("replicas: 3")) {
		t.Errorf("the sharding component does not run three replicas:\n%s", rendered)
	}
	kubectl(t, rendered, "apply", "--server-side", "--field-manager=hal9-test", "-f", "-")

	user := "system:serviceaccount:" + ns + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	s, err := leader.NewShards(as, "replica-0", leader.Sharding{Namespace: ns, Name: "hal9-migrate", Shards: 4,
		Durations:   leader.Durations{Lease: 3 * time.Second, Renew: time.Second, Retry: 200 * time.Millisecond},
		StepTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for s.Held() < 4 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if s.Held() != 4 {
		t.Errorf("as the ServiceAccount, the replica holds %d of 4 shards", s.Held())
	}
	cancel()
	<-done
	leases, err := k8stest.Client(t, cfg).CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		if h := l.Spec.HolderIdentity; h != nil && *h != "" {
			t.Errorf("after a clean stop, Lease %s still names %s (release or delete refused?)", l.Name, *h)
		}
	}
}
