package kubernetes

import (
	"reflect"
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
	if got, _ := readSplit(httpRules.object(metav1.ObjectMeta{}, rules), services); got != (split{}) {
		t.Errorf("first rule without candidate reads %+v, want 0/0", got)
	}
	for _, sp := range []split{{Traffic: 0, Mirror: 100}, {Traffic: 25}, {Traffic: 60, Mirror: 10}, {Traffic: 100}, {}} {
		o := httpRules.object(metav1.ObjectMeta{}, rules)
		splitRules, err := withSplit(o.rules, services, sp)
		if err != nil {
			t.Fatal(err)
		}
		out := o.spec(splitRules).([]gatewayv1.HTTPRouteRule)
		back := httpRules.object(metav1.ObjectMeta{}, out)
		for i, rule := range []int{0, 2} {
			if got, ok := ruleSplit(back.rules[rule], services); !ok || got != sp {
				t.Errorf("split %+v: rule %d reads %+v (%d)", sp, rule, got, i)
			}
		}
		if len(out[0].Filters) == 0 || out[0].Filters[0].Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier {
			t.Errorf("split %+v: the header filter is gone: %+v", sp, out[0].Filters)
		}
		if sp.Mirror > 0 && (len(out[0].Filters) != 2 || out[0].Filters[1].Type != gatewayv1.HTTPRouteFilterRequestMirror ||
			*out[0].Filters[1].RequestMirror.Percent != int32(sp.Mirror) || out[0].Filters[1].RequestMirror.BackendRef.Name != "new") {
			t.Errorf("split %+v: filters %+v, want the header filter and a mirror to new", sp, out[0].Filters)
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
		if got, _ := readSplit(back, services); got != sp {
			t.Errorf("readSplit after %+v = %+v", sp, got)
		}
	}
	// The input is not modified.
	if len(rules[0].BackendRefs) != 1 || len(rules[0].Filters) != 1 {
		t.Errorf("withSplit modified its input: %+v", rules[0])
	}
}

// TestRuleKinds converts the rules of both kinds of route to rule and back:
// unchanged, they come back as they were; split, everything of the kind's
// own (matches, other filters, a backend's filters) is kept.
func TestRuleKinds(t *testing.T) {
	services := routeServices{stable: svc("old"), candidate: svc("new")}
	weight := func(w int32) *int32 { return &w }
	ref := func(name string, w *int32) gatewayv1.BackendRef {
		return gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
			Name: gatewayv1.ObjectName(name), Port: ptr(gatewayv1.PortNumber(80))}, Weight: w}
	}
	mirrorTo := func(name string, percent int32) *gatewayv1.HTTPRequestMirrorFilter {
		return &gatewayv1.HTTPRequestMirrorFilter{BackendRef: ref(name, nil).BackendObjectReference, Percent: &percent}
	}
	header := gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-A", Value: "b"}}}
	grpc := []gatewayv1.GRPCRouteRule{{
		Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr("shop.Cart")}}},
		Filters: []gatewayv1.GRPCRouteFilter{
			{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: mirrorTo("new", 20)},
			{Type: gatewayv1.GRPCRouteFilterRequestHeaderModifier, RequestHeaderModifier: &header},
			{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: mirrorTo("audit", 100)},
		},
		BackendRefs: []gatewayv1.GRPCBackendRef{
			{BackendRef: ref("old", weight(70)), Filters: []gatewayv1.GRPCRouteFilter{{Type: gatewayv1.GRPCRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &header}}},
			{BackendRef: ref("new", weight(30))},
		},
	}}
	http := []gatewayv1.HTTPRouteRule{{
		Filters: []gatewayv1.HTTPRouteFilter{
			{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &header},
			{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: mirrorTo("new", 20)},
		},
		BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: ref("old", weight(70)),
			Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &header}}}},
	}}
	want := rule{
		backends: []ruleBackend{{BackendRef: ref("old", weight(70)), from: 0}, {BackendRef: ref("new", weight(30)), from: 1}},
		filters:  []ruleFilter{{mirror: mirrorTo("new", 20), from: 0}, {from: 1}, {mirror: mirrorTo("audit", 100), from: 2}},
	}
	if got := grpcRules.rules(grpc); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("grpcRules.rules = %+v, want %+v", got, want)
	}
	if got := grpcRules.with(grpc, grpcRules.rules(grpc)); !reflect.DeepEqual(got, grpc) {
		t.Errorf("GRPCRoute rules converted back: %+v, want %+v", got, grpc)
	}
	if got := httpRules.with(http, httpRules.rules(http)); !reflect.DeepEqual(got, http) {
		t.Errorf("HTTPRoute rules converted back: %+v, want %+v", got, http)
	}
	if got, ok := ruleSplit(grpcRules.rules(grpc)[0], services); !ok || got != (split{Traffic: 30, Mirror: 20}) {
		t.Errorf("the GRPCRoute rule reads %+v, %t; want 30%% and a 20%% mirror", got, ok)
	}

	at40, err := withSplit(grpcRules.rules(grpc), services, split{Traffic: 40, Mirror: 5})
	if err != nil {
		t.Fatal(err)
	}
	out := grpcRules.with(grpc, at40)[0]
	if len(out.BackendRefs) != 2 || *out.BackendRefs[0].Weight != 60 || *out.BackendRefs[1].Weight != 40 ||
		!reflect.DeepEqual(out.BackendRefs[0].Filters, grpc[0].BackendRefs[0].Filters) {
		t.Errorf("backends after 40%%: %+v", out.BackendRefs)
	}
	if len(out.Filters) != 3 || out.Filters[0].Type != gatewayv1.GRPCRouteFilterRequestHeaderModifier ||
		out.Filters[1].RequestMirror.BackendRef.Name != "audit" ||
		out.Filters[2].Type != gatewayv1.GRPCRouteFilterRequestMirror || *out.Filters[2].RequestMirror.Percent != 5 ||
		out.Filters[2].RequestMirror.BackendRef.Name != "new" {
		t.Errorf("filters after a 5%% mirror: %+v", out.Filters)
	}
	if !reflect.DeepEqual(out.Matches, grpc[0].Matches) {
		t.Errorf("the matches changed: %+v", out.Matches)
	}
	if *grpc[0].BackendRefs[0].Weight != 70 || len(grpc[0].Filters) != 3 {
		t.Errorf("the conversion modified its input: %+v", grpc[0])
	}

	at10, err := withSplit(httpRules.rules(http), services, split{Traffic: 10})
	if err != nil {
		t.Fatal(err)
	}
	hout := httpRules.with(http, at10)[0]
	if len(hout.Filters) != 1 || hout.Filters[0].Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier ||
		len(hout.BackendRefs) != 2 || hout.BackendRefs[1].Name != "new" || len(hout.BackendRefs[1].Filters) != 0 ||
		len(hout.BackendRefs[0].Filters) != 1 {
		t.Errorf("HTTPRoute rule at 10%% without mirror: %+v", hout)
	}
}

// TestReadSplitStray reports the rule that strays from the split last
// applied, so that an edit to any rule shows as drift.
func TestReadSplitStray(t *testing.T) {
	services := routeServices{stable: svc("old"), candidate: svc("new")}
	rule := func(s, c int32) gatewayv1.HTTPRouteRule {
		return gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backend("old", 80, ptr(s)), backend("new", 80, ptr(c))}}
	}
	meta := metav1.ObjectMeta{Annotations: map[string]string{AnnotationSplit: "traffic=25,mirror=0"}}
	rules := []gatewayv1.HTTPRouteRule{rule(75, 25), rule(75, 25), rule(100, 0)}
	if got, _ := readSplit(httpRules.object(meta, rules), services); got.Traffic != 0 {
		t.Errorf("readSplit = %+v, want the stray rule's 0%%", got)
	}
	rules[2] = rule(3, 1)
	if got, _ := readSplit(httpRules.object(meta, rules), services); got.Traffic != 25 {
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
	service := func(name string, sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	all := service("a", map[string]string{"app": "a"})
	v1 := service("a-v1", map[string]string{"app": "a", "version": "1"})
	v1b := service("old", map[string]string{"version": "1"})
	v2 := service("a-v2", map[string]string{"app": "a", "version": "2"})

	if s, err := serviceOf([]*corev1.Service{all, v1, v2}, stable, candidate, nil); err != nil || s.Name != "a-v1" {
		t.Errorf("serviceOf = %v, %v; want a-v1", s, err)
	}
	if _, err := serviceOf([]*corev1.Service{all, v2}, stable, candidate, nil); err == nil {
		t.Error("a Service selecting both sides was taken for stable's")
	}
	if _, err := serviceOf([]*corev1.Service{v1, {ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"version": "1", "app": "a"}}}}, stable, candidate, nil); err == nil || !strings.Contains(err.Error(), "several") {
		t.Errorf("two fitting Services: %v", err)
	}
	if s, err := serviceOf([]*corev1.Service{v1, v1b}, stable, candidate, nil); err != nil || s.Name != "old" {
		t.Errorf("serviceOf = %v, %v; want old, named like the Deployment", s, err)
	}
	if s, err := serviceOf([]*corev1.Service{v1, v1b}, stable, candidate, map[string]bool{"a-v1": true}); err != nil || s.Name != "a-v1" {
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
