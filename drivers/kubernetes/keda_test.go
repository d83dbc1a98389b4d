package kubernetes

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
)

// installKEDA installs KEDA's ScaledObject CRD (testdata, KEDA v2.21.1's
// own) and waits until the API server serves it. No KEDA operator runs.
// The CRD stays: the control plane is the tests', and without
// ScaledObjects it changes nothing for the others.
func installKEDA(t *testing.T, cfg *rest.Config) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/keda.sh_scaledobjects.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for len(crd.Object) == 0 { // past the empty document before the first ---
		if err := dec.Decode(&crd.Object); err != nil {
			t.Fatal(err)
		}
	}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	ctx := ctxT(t)
	if _, err := dyn.Resource(crds).Apply(ctx, crd.GetName(), &crd, metav1.ApplyOptions{FieldManager: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
	d := &Driver{kube: k8stest.Client(t, cfg), dyn: dyn}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 25*time.Second, true, func(context.Context) (bool, error) {
		ok, _ := d.kedaServed()
		return ok, nil
	}); err != nil {
		t.Fatalf("the API server does not serve %s: %v", scaledObjects, err)
	}
	return dyn
}

// standInForKEDA does, until the test ends, the one thing the test needs
// of the KEDA operator: it keeps a Deployment a ScaledObject targets, when
// not at zero, within the ScaledObject's bounds, through the scale
// subresource.
func standInForKEDA(t *testing.T, f *fixture, dyn dynamic.Interface) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			list, err := dyn.Resource(scaledObjects).Namespace(f.ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			for i := range list.Items {
				b := (autoscaler{so: &list.Items[i]}).current()
				name, _, _ := unstructured.NestedString(list.Items[i].Object, "spec", "scaleTargetRef", "name")
				deps := f.kube.AppsV1().Deployments(f.ns)
				sc, err := deps.GetScale(ctx, name, metav1.GetOptions{})
				if err != nil || sc.Spec.Replicas == 0 {
					continue
				}
				n := min(max(sc.Spec.Replicas, int32(max(1, b.min))), int32(b.max))
				if n != sc.Spec.Replicas {
					sc.Spec.Replicas = n
					_, _ = deps.UpdateScale(ctx, name, sc, metav1.UpdateOptions{FieldManager: "keda-stand-in"})
				}
			}
			return false, nil
		})
	}()
}

// TestKEDASplit walks a routed plan whose two Deployments KEDA scales: the
// split moves through the ScaledObjects' minReplicaCount and
// maxReplicaCount (the candidate's share of stable's), the autoscaler
// KEDA generates is left alone, the driver never applies spec.replicas, a
// restarted driver scales from the recorded bounds, and a rollback gives
// the candidate's ScaledObject its own bounds back. Before KEDA's CRD is
// installed, there are no ScaledObjects to find and no error.
func TestKEDASplit(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	ctx := ctxT(t)
	d := f.driver(t, WithReadyTimeout(45*time.Second))
	if ok, err := d.kedaServed(); err != nil {
		t.Fatal(err)
	} else if !ok {
		if s, c, err := d.scaledObjects(ctx); s != nil || c != nil || err != nil {
			t.Fatalf("scaledObjects without KEDA's CRD = %v, %v, %v; want none and no error", s, c, err)
		}
	}
	dyn := installKEDA(t, f.cfg)
	sos := dyn.Resource(scaledObjects).Namespace(f.ns)
	for name, b := range map[string]bounds{stableName: {2, 8}, candidateName: {0, 3}} {
		so := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
			"metadata": map[string]any{"name": name, "namespace": f.ns},
			"spec": map[string]any{
				"scaleTargetRef":  map[string]any{"name": name},
				"minReplicaCount": int64(b.min), "maxReplicaCount": int64(b.max),
				"triggers": []any{map[string]any{"type": "cpu", "metricType": "Utilization", "metadata": map[string]any{"value": "80"}}},
			},
		}}
		if _, err := sos.Create(ctx, so, metav1.CreateOptions{FieldManager: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	// The autoscaler KEDA would generate for stable's ScaledObject, with
	// its bounds: the driver must leave it alone.
	hpas := f.kube.AutoscalingV2().HorizontalPodAutoscalers(f.ns)
	if _, err := hpas.Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-" + stableName, Namespace: f.ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: stableName},
			MinReplicas:    ptr(int32(2)), MaxReplicas: 8,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: "cpu", Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr(int32(80))},
			}}},
		},
	}, metav1.CreateOptions{FieldManager: "test"}); err != nil {
		t.Fatal(err)
	}
	standInForKEDA(t, f, dyn)

	check := func(step, name string, want bounds, mark string) {
		t.Helper()
		ctx := ctxT(t)
		so, err := sos.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := (autoscaler{so: so}).current(); got != want {
			t.Errorf("%s: scaledobject %s has bounds %v, want %v", step, name, got, want)
		}
		if got := so.GetAnnotations()[AnnotationBounds]; got != mark {
			t.Errorf("%s: scaledobject %s has %s %q, want %q", step, name, AnnotationBounds, got, mark)
		}
		x, err := f.kube.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ownsReplicas(deployment{x}) {
			t.Errorf("%s: the driver's apply owns spec.replicas of %s, which KEDA scales", step, name)
		}
		h, err := hpas.Get(ctx, "keda-hpa-"+stableName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := (autoscaler{HorizontalPodAutoscaler: h}).current(); got != (bounds{2, 8}) || h.Annotations[AnnotationBounds] != "" {
			t.Errorf("%s: KEDA's autoscaler was changed: bounds %v, annotations %v", step, got, h.Annotations)
		}
	}

	d = f.driver(t, WithReadyTimeout(45*time.Second))
	converge(t, d, drivers.Target{Traffic: 25})
	check("25%", stableName, bounds{2, 8}, "")
	check("25%", candidateName, bounds{1, 2}, "0,3")

	if st := converge(t, d, drivers.Target{Traffic: 100}); st.CandidateReplicas < 2 || st.CandidateReady < 2 {
		t.Errorf("100%%: %+v, want the candidate at its ScaledObject's new minimum of 2 at least", st)
	}
	check("100%", stableName, bounds{2, 8}, "")
	check("100%", candidateName, bounds{2, 8}, "0,3")

	// A restarted daemon reads the bounds from before off the annotation.
	d = f.driver(t, WithReadyTimeout(45*time.Second))
	if st, err := d.Observe(ctx); err != nil || st.Traffic != 100 {
		t.Fatalf("Observe after a restart = %+v, %v; want traffic 100", st, err)
	}
	converge(t, d, drivers.Target{Traffic: 50})
	check("50% after a restart", candidateName, bounds{1, 4}, "0,3")

	st := converge(t, d, drivers.Target{})
	check("rolled back", stableName, bounds{2, 8}, "")
	check("rolled back", candidateName, bounds{0, 3}, "")
	if st.CandidateReplicas != 0 || st.Traffic != 0 {
		t.Errorf("rolled back: %+v, want the candidate at zero with no traffic", st)
	}
}
