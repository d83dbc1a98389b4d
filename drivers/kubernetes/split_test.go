package kubernetes

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
)

func TestReplicasFor(t *testing.T) {
	for _, tc := range []struct {
		target drivers.Target
		total  int
		routed bool
		want   replicas
	}{
		{drivers.Target{}, 10, false, replicas{Stable: 10}},
		{drivers.Target{Traffic: 5}, 10, false, replicas{Stable: 9, Candidate: 1}},
		{drivers.Target{Traffic: 25}, 10, false, replicas{Stable: 7, Candidate: 3}},
		{drivers.Target{Traffic: 25}, 4, false, replicas{Stable: 3, Candidate: 1}},
		{drivers.Target{Traffic: 99}, 4, false, replicas{Stable: 1, Candidate: 3}},
		{drivers.Target{Traffic: 100}, 4, false, replicas{Candidate: 4}},
		{drivers.Target{Traffic: 1}, 1, false, replicas{Stable: 1, Candidate: 1}},
		{drivers.Target{Traffic: 5}, 2, false, replicas{Stable: 1, Candidate: 1}},
		{drivers.Target{Traffic: 100}, 1, false, replicas{Candidate: 1}},
		{drivers.Target{Traffic: 100, Decommission: true}, 4, false, replicas{Candidate: 4, Decommission: true}},
		{drivers.Target{}, 4, true, replicas{Stable: 4}},
		{drivers.Target{Mirror: 100}, 4, true, replicas{Stable: 4, Candidate: 4}},
		{drivers.Target{Traffic: 5}, 4, true, replicas{Stable: 4, Candidate: 1}},
		{drivers.Target{Traffic: 30, Mirror: 10}, 10, true, replicas{Stable: 10, Candidate: 3}},
		{drivers.Target{Traffic: 100, Decommission: true}, 4, true, replicas{Candidate: 4, Decommission: true}},
	} {
		if got := replicasFor(tc.target, tc.total, tc.routed); got != tc.want {
			t.Errorf("replicasFor(%+v, %d, routed %t) = %+v, want %+v", tc.target, tc.total, tc.routed, got, tc.want)
		}
	}
}

func TestJobName(t *testing.T) {
	long := "check-hal9-hierarchical-data-integrity-and-more-words-to-pass-sixty-three-1732710000"
	for _, id := range []string{"dt-ok-1a2b3c4d", "hal9-state-migration-1732710000", "Check_Data.Integrity", long, "---", "a/b", "a-b"} {
		name := jobName(id)
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("jobName(%q) = %q: %v", id, name, errs)
		}
	}
	if got := jobName("dt-ok-1a2b3c4d"); got != "dt-ok-1a2b3c4d" {
		t.Errorf("a valid id is renamed: %q", got)
	}
	if jobName("a/b") == jobName("a-b") || jobName("a_b") == jobName("a/b") {
		t.Error("different ids share a Job name")
	}
}

func svc(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}, {Port: 80}}}}
}

func backend(name string, port int32, weight *int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr(gatewayv1.PortNumber(port))},
		Weight:                 weight,
	}}
}

// TestWithSplit writes splits into rules and reads them back, keeping what
// the driver does not own: other rules, other backends, other filters.
func TestWithSplit(t *testing.T) {
	services := routeServices{stable: svc("old"), candidate: svc("new")}
	header := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
		RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-A", Value: "b"}}}}
	rules := []gatewayv1.HTTPRouteRule{
		{
			Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr("/api")}}},
			Filters:     []gatewayv1.HTTPRouteFilter{header},
			BackendRefs: []gatewayv1.HTTPBackendRef{backend("old", 80, nil)},
		},
		{BackendRefs: []gatewayv1.HTTPBackendRef{backend("static", 80, ptr(int32(1)))}},
		{BackendRefs: []gatewayv1.HTTPBackendRef{backend("old", 80, ptr(int32(3))), backend("new", 80, ptr(int32(1))), backend("third", 80, ptr(int32(7)))}},
	}
	route := &gatewayv1.HTTPRoute{Spec: gatewayv1.HTTPRouteSpec{Rules: rules}}
	if got, _ := readSplit(route, services); got != (split{}) {
		t.Errorf("first rule without candidate reads %+v, want 0/0", got)
	}
	for _, sp := range []split{{Traffic: 0, Mirror: 100}, {Traffic: 25}, {Traffic: 60, Mirror: 10}, {Traffic: 100}, {}} {
		out, err := withSplit(rules, services, sp)
		if err != nil {
			t.Fatal(err)
		}
		route.Spec.Rules = out
		for i, rule := range []int{0, 2} {
			if got, ok := ruleSplit(out[rule], services); !ok || got != sp {
				t.Errorf("split %+v: rule %d reads %+v (%d)", sp, rule, got, i)
			}
		}
		if len(out[0].Filters) == 0 || out[0].Filters[0].Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier {
			t.Errorf("split %+v: the header filter is gone: %+v", sp, out[0].Filters)
		}
		if out[0].Matches[0].Path == nil || *out[0].Matches[0].Path.Value != "/api" {
			t.Errorf("split %+v: the match changed", sp)
		}
		if len(out[1].BackendRefs) != 1 || out[1].BackendRefs[0].Name != "static" {
			t.Errorf("split %+v: a rule not routing to either side changed: %+v", sp, out[1])
		}
		if third := out[2].BackendRefs[2]; third.Name != "third" || *third.Weight != 7 {
			t.Errorf("split %+v: another backend changed: %+v", sp, third)
		}
		if added := out[0].BackendRefs[1]; added.Name != "new" || added.Port == nil || *added.Port != 80 {
			t.Errorf("split %+v: the candidate backend added is %+v, want new:80 like stable", sp, added)
		}
		if got, _ := readSplit(route, services); got != sp {
			t.Errorf("readSplit after %+v = %+v", sp, got)
		}
	}
	// The input is not modified.
	if len(rules[0].BackendRefs) != 1 || len(rules[0].Filters) != 1 {
		t.Errorf("withSplit modified its input: %+v", rules[0])
	}
}

// TestReadSplitStray reports the rule that strays from the split last
// applied, so that an edit to any rule shows as drift.
func TestReadSplitStray(t *testing.T) {
	services := routeServices{stable: svc("old"), candidate: svc("new")}
	rule := func(s, c int32) gatewayv1.HTTPRouteRule {
		return gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backend("old", 80, ptr(s)), backend("new", 80, ptr(c))}}
	}
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationSplit: "traffic=25,mirror=0"}},
		Spec:       gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{rule(75, 25), rule(75, 25), rule(100, 0)}},
	}
	if got, _ := readSplit(route, services); got.Traffic != 0 {
		t.Errorf("readSplit = %+v, want the stray rule's 0%%", got)
	}
	route.Spec.Rules[2] = rule(3, 1)
	if got, _ := readSplit(route, services); got.Traffic != 25 {
		t.Errorf("readSplit = %+v, want 25%%", got)
	}
}

func TestServiceOf(t *testing.T) {
	dep := func(name string, labels map[string]string) deployment {
		d := deployment{}
		d.Deployment = newDeployment(name, labels)
		return d
	}
	stable := dep("old", map[string]string{"app": "a", "version": "1"})
	candidate := dep("new", map[string]string{"app": "a", "version": "2"})
	service := func(name string, sel map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	all := service("a", map[string]string{"app": "a"})
	v1 := service("a-v1", map[string]string{"app": "a", "version": "1"})
	v1b := service("old", map[string]string{"version": "1"})
	v2 := service("a-v2", map[string]string{"app": "a", "version": "2"})

	if s, err := serviceOf([]corev1.Service{all, v1, v2}, stable, candidate, nil); err != nil || s.Name != "a-v1" {
		t.Errorf("serviceOf = %v, %v; want a-v1", s, err)
	}
	if _, err := serviceOf([]corev1.Service{all, v2}, stable, candidate, nil); err == nil {
		t.Error("a Service selecting both sides was taken for stable's")
	}
	if _, err := serviceOf([]corev1.Service{v1, {ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"version": "1", "app": "a"}}}}, stable, candidate, nil); err == nil || !strings.Contains(err.Error(), "several") {
		t.Errorf("two fitting Services: %v", err)
	}
	if s, err := serviceOf([]corev1.Service{v1, v1b}, stable, candidate, nil); err != nil || s.Name != "old" {
		t.Errorf("serviceOf = %v, %v; want old, named like the Deployment", s, err)
	}
	if s, err := serviceOf([]corev1.Service{v1, v1b}, stable, candidate, map[string]bool{"a-v1": true}); err != nil || s.Name != "a-v1" {
		t.Errorf("serviceOf = %v, %v; want a-v1, named in the route", s, err)
	}
}

func newDeployment(name string, labels map[string]string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}}
	d.Spec.Template.Labels = labels
	return d
}

// TestBackendPort gives an added backend the stable's port when its
// Service has it, else its Service's first port.
func TestBackendPort(t *testing.T) {
	only8080 := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "new"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}}}
	if b := backendRef(only8080, ptr(gatewayv1.PortNumber(80)), 5); *b.Port != 8080 || *b.Weight != 5 {
		t.Errorf("backendRef = port %d weight %d, want 8080 and 5", *b.Port, *b.Weight)
	}
	if b := backendRef(svc("new"), ptr(gatewayv1.PortNumber(80)), 5); *b.Port != 80 {
		t.Errorf("backendRef = port %d, want 80", *b.Port)
	}
}
