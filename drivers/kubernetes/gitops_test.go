package kubernetes

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
)

// gitopsRoute is the HTTPRoute as the GitOps tool applies it: its
// parents, hostnames and a label, and, when rules is not nil, those rules.
func gitopsRoute(ns string, rules []map[string]any) []byte {
	spec := map[string]any{
		"parentRefs": []any{map[string]any{"name": "gateway"}},
		"hostnames":  []any{"app.example.com"},
	}
	if rules != nil {
		spec["rules"] = rules
	}
	b, err := json.Marshal(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "HTTPRoute",
		"metadata":   map[string]any{"name": routeName, "namespace": ns, "labels": map[string]string{"team": "shop"}},
		"spec":       spec,
	})
	if err != nil {
		panic(err)
	}
	return b
}

// TestGitOpsToolAlongside has another field manager apply the plan's
// Deployments and HTTPRoute between the driver's steps, as Argo CD or Flux
// would on every sync, without replicas and without weights: neither side
// conflicts with nor undoes the other.
//
// The Deployments share without effort: the driver owns spec.replicas and
// its annotations, nothing else. The route's spec.rules is an atomic list
// in the Gateway API CRDs (x-kubernetes-list-type: atomic, as are each
// rule's matches, backendRefs and filters), so its ownership cannot be
// split below the whole list: the tool shares everything else of the
// route, and it shares rules only by sending the weights it finds live,
// which is what Argo CD's RespectIgnoreDifferences does. Rules sent with
// other weights conflict, and that conflict is what keeps a sync from
// resetting a migration's split: the test checks it stays so. Once the
// tool sends rules, its repository must keep sending them: the rules
// it alone owns would be removed by an apply that leaves them out.
func TestGitOpsToolAlongside(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 2, routed: true})
	d := f.driver(t)
	ctx := ctxT(t)
	deployments := f.kube.AppsV1().Deployments(f.ns)
	routes := f.gw.GatewayV1().HTTPRoutes(f.ns)

	// force is only for the first sync, where the tool adopts the objects
	// the fixture created under another manager.
	sync := func(step string, force bool, rules []map[string]any) {
		t.Helper()
		for _, dep := range []*appsv1ac.DeploymentApplyConfiguration{
			k8stest.GitOpsDeployment(f.ns, stableName, "v1"), k8stest.GitOpsDeployment(f.ns, candidateName, "v2"),
		} {
			// No Force after the first: a conflict is an error here, as
			// it is for a tool that does not force.
			if _, err := deployments.Apply(ctx, dep, metav1.ApplyOptions{FieldManager: k8stest.GitOpsManager, Force: force}); err != nil {
				t.Fatalf("%s: the tool's apply of deployment %s: %v", step, *dep.Name, err)
			}
		}
		if _, err := routes.Patch(ctx, routeName, types.ApplyPatchType, gitopsRoute(f.ns, rules),
			metav1.PatchOptions{FieldManager: k8stest.GitOpsManager, Force: &force}); err != nil {
			t.Fatalf("%s: the tool's apply of the route: %v", step, err)
		}
	}
	check := func(step string, target drivers.Target, stable, candidate int32) {
		t.Helper()
		for name, want := range map[string]int32{stableName: stable, candidateName: candidate} {
			x, err := deployments.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if x.Spec.Replicas == nil || *x.Spec.Replicas != want {
				t.Errorf("%s: deployment %s has %v replicas, want %d (the driver's)", step, name, x.Spec.Replicas, want)
			}
			if x.Labels["team"] != "shop" {
				t.Errorf("%s: deployment %s lost the tool's label: %v", step, name, x.Labels)
			}
		}
		r := f.route(t)
		if r.Labels["team"] != "shop" {
			t.Errorf("%s: the route lost the tool's label: %v", step, r.Labels)
		}
		st, err := d.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Traffic != target.Traffic || st.Mirror != target.Mirror {
			t.Errorf("%s: observed traffic %d mirror %d, want %+v", step, st.Traffic, st.Mirror, target)
		}
	}

	sync("before the migration", true, nil)
	for _, step := range []struct {
		target            drivers.Target
		stable, candidate int32
	}{
		{drivers.Target{Mirror: 50}, 2, 1},
		{drivers.Target{Traffic: 25}, 2, 1},
		{drivers.Target{Traffic: 50}, 2, 1},
		{drivers.Target{Traffic: 100}, 2, 2},
	} {
		name := fmt.Sprintf("traffic %d mirror %d", step.target.Traffic, step.target.Mirror)
		converge(t, d, step.target)
		check(name+", after the driver", step.target, step.stable, step.candidate)
		sync(name, false, nil)
		sync(name+", again", false, nil)
		check(name+", after the tool's syncs", step.target, step.stable, step.candidate)
	}

	// The tool sends the route's rules as its repository has them,
	// without weights: the list is atomic and the driver owns it, so the
	// apply conflicts instead of resetting the split (a dry run, as a
	// person would try it).
	plain := []map[string]any{{
		"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/shop"}}},
		"backendRefs": []any{map[string]any{"name": stableName, "port": 80}},
	}}
	_, err := routes.Patch(ctx, routeName, types.ApplyPatchType, gitopsRoute(f.ns, plain),
		metav1.PatchOptions{FieldManager: k8stest.GitOpsManager, DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), ".spec.rules") || !strings.Contains(err.Error(), FieldManager) {
		t.Fatalf("the tool's rules without weights: err = %v, want a conflict with %s over .spec.rules", err, FieldManager)
	}

	// With the weights it finds live, as Argo CD's
	// RespectIgnoreDifferences sends them, and a match of its own: the
	// rules differ from the live ones (the match), so an unforced apply
	// still conflicts over the atomic list; a forced one (what a tool
	// that forces conflicts does) takes the rules over with the driver's
	// weights in them, and its match stays through the driver's next step.
	live := []map[string]any{{
		"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/shop"}}},
		"backendRefs": []any{
			map[string]any{"name": stableName, "port": 80, "weight": 0},
			map[string]any{"name": candidateName, "port": 80, "weight": 100},
		},
	}}
	_, err = routes.Patch(ctx, routeName, types.ApplyPatchType, gitopsRoute(f.ns, live),
		metav1.PatchOptions{FieldManager: k8stest.GitOpsManager})
	if !apierrors.IsConflict(err) {
		t.Fatalf("the tool's rules with the live weights and a new match, unforced: err = %v, want a conflict over .spec.rules", err)
	}
	if _, err := routes.Patch(ctx, routeName, types.ApplyPatchType, gitopsRoute(f.ns, live),
		metav1.PatchOptions{FieldManager: k8stest.GitOpsManager, Force: ptr(true)}); err != nil {
		t.Fatalf("the tool's rules with the live weights, forced: %v", err)
	}
	check("the tool's own match", drivers.Target{Traffic: 100}, 2, 2)
	converge(t, d, drivers.Target{Traffic: 100, Decommission: true})
	r := f.route(t)
	if len(r.Spec.Rules) != 1 || len(r.Spec.Rules[0].Matches) != 1 || r.Spec.Rules[0].Matches[0].Path == nil ||
		*r.Spec.Rules[0].Matches[0].Path.Value != "/shop" {
		t.Errorf("the driver's next step lost the tool's match: %+v", r.Spec.Rules)
	}
	// From now on the tool's repository has the rules: it sends them on
	// every sync, with the live weights, and owns them beside the driver.
	sync("decommissioned", false, live)
	sync("decommissioned, again", false, live)
	check("decommissioned", drivers.Target{Traffic: 100}, 0, 2)
}
