package kubernetes

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// grpcFixture is a routed app whose route is a GRPCRoute, with its router
// and the workloads as they are at the start.
func grpcFixture(t *testing.T) (*fixture, traffic.Router[workloads], workloads) {
	t.Helper()
	f := newFixture(t, fixtureOpts{replicas: 2, routed: true, grpc: true})
	d := f.driver(t)
	w, err := d.workloads(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return f, d.router, w
}

// TestGRPCRouteSplits routes several splits through a GRPCRoute on a real
// API server and reads each back, from the route's rule and through
// Observe: the weights of the two backends, and a RequestMirror filter to
// the candidate exactly while mirroring.
func TestGRPCRouteSplits(t *testing.T) {
	f, r, w := grpcFixture(t)
	if got, err := r.Observe(ctxT(t), w); err != nil || got != (traffic.Split{}) {
		t.Fatalf("Observe at the start = %+v, %v; want 0/0", got, err)
	}
	for _, sp := range []traffic.Split{{Mirror: 50}, {Traffic: 10}, {Traffic: 25, Mirror: 5}, {Traffic: 60}, {Traffic: 100}, {}} {
		if err := r.Route(ctxT(t), w, sp); err != nil {
			t.Fatalf("Route(%v): %v", sp, err)
		}
		route := f.grpcRoute(t)
		rule := route.Spec.Rules[0]
		if len(rule.BackendRefs) != 2 || rule.BackendRefs[0].Name != stableName || *rule.BackendRefs[0].Weight != int32(100-sp.Traffic) ||
			rule.BackendRefs[1].Name != candidateName || *rule.BackendRefs[1].Weight != int32(sp.Traffic) || *rule.BackendRefs[1].Port != 80 {
			t.Errorf("%v: backends %+v", sp, rule.BackendRefs)
		}
		mirrors := slices.DeleteFunc(slices.Clone(rule.Filters), func(f gatewayv1.GRPCRouteFilter) bool {
			return f.Type != gatewayv1.GRPCRouteFilterRequestMirror
		})
		switch {
		case sp.Mirror == 0 && len(rule.Filters) != 0:
			t.Errorf("%v: filters %+v, want none", sp, rule.Filters)
		case sp.Mirror > 0 && (len(mirrors) != 1 || mirrors[0].RequestMirror.BackendRef.Name != candidateName ||
			*mirrors[0].RequestMirror.Percent != int32(sp.Mirror)):
			t.Errorf("%v: filters %+v, want one mirror of %d%% to %s", sp, rule.Filters, sp.Mirror, candidateName)
		}
		if got := route.Annotations[AnnotationSplit]; got != sp.String() {
			t.Errorf("%v: annotation %s = %q", sp, AnnotationSplit, got)
		}
		if got, err := r.Observe(ctxT(t), w); err != nil || got != sp {
			t.Errorf("Observe after Route(%v) = %+v, %v", sp, got, err)
		}
	}
	// The apply owns the rules and nothing else the user wrote.
	route := f.grpcRoute(t)
	owners := specOwners(route.ManagedFields)
	if !slices.Contains(owners["f:rules"], FieldManager+"/Apply") {
		t.Errorf("spec.rules is owned by %v, want %s/Apply among them", owners["f:rules"], FieldManager)
	}
	if len(route.Spec.ParentRefs) != 1 || len(route.Spec.Hostnames) != 1 ||
		slices.Contains(owners["f:parentRefs"], FieldManager+"/Apply") {
		t.Errorf("the user's fields changed: %+v, owners %v", route.Spec, owners)
	}
}

// TestGRPCRouteDrift edits the GRPCRoute behind the router's back: Observe
// reports what the route says, and Route repairs it.
func TestGRPCRouteDrift(t *testing.T) {
	f, r, w := grpcFixture(t)
	want := traffic.Split{Traffic: 10}
	if err := r.Route(ctxT(t), w, want); err != nil {
		t.Fatal(err)
	}
	route := f.grpcRoute(t)
	route.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(60))
	route.Spec.Rules[0].BackendRefs[1].Weight = ptr(int32(40))
	route.Spec.Rules[0].Filters = []gatewayv1.GRPCRouteFilter{{
		Type:          gatewayv1.GRPCRouteFilterRequestMirror,
		RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: gatewayv1.BackendObjectReference{Name: candidateName, Port: ptr(gatewayv1.PortNumber(80))}},
	}}
	if _, err := f.gw.GatewayV1().GRPCRoutes(f.ns).Update(ctxT(t), route, metav1.UpdateOptions{FieldManager: "someone"}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Observe(ctxT(t), w); err != nil || got != (traffic.Split{Traffic: 40, Mirror: 100}) {
		t.Errorf("after a hand edit to 40%% and a mirror of every request, Observe = %+v, %v", got, err)
	}
	if err := r.Route(ctxT(t), w, want); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Observe(ctxT(t), w); err != nil || got != want {
		t.Errorf("after Route repaired the drift, Observe = %+v, %v; want %+v", got, err, want)
	}
	if filters := f.grpcRoute(t).Spec.Rules[0].Filters; len(filters) != 0 {
		t.Errorf("the mirror added by hand is still there: %+v", filters)
	}
}

// TestGRPCRouteMissing names the GRPCRoute that is not there.
func TestGRPCRouteMissing(t *testing.T) {
	f, r, w := grpcFixture(t)
	if err := f.gw.GatewayV1().GRPCRoutes(f.ns).Delete(ctxT(t), routeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "grpcroute " + f.ns + "/" + routeName + " not found"
	if _, err := r.Observe(ctxT(t), w); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Observe without the route: %v, want %q", err, want)
	}
	if err := r.Route(ctxT(t), w, traffic.Split{Traffic: 10}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Route without the route: %v, want %q", err, want)
	}
}
