package kubernetes

import (
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
)

func TestBoundsShare(t *testing.T) {
	for _, tc := range []struct {
		b        bounds
		n, total int
		want     bounds
	}{
		{bounds{2, 8}, 1, 4, bounds{1, 2}},
		{bounds{2, 8}, 2, 4, bounds{1, 4}},
		{bounds{2, 8}, 4, 4, bounds{2, 8}},
		{bounds{2, 8}, 5, 4, bounds{2, 8}},
		{bounds{3, 10}, 1, 10, bounds{1, 1}},
		{bounds{3, 10}, 3, 10, bounds{1, 3}},
		{bounds{1, 1}, 1, 10, bounds{1, 1}},
	} {
		if got := tc.b.share(tc.n, tc.total); got != tc.want {
			t.Errorf("%v.share(%d, %d) = %v, want %v", tc.b, tc.n, tc.total, got, tc.want)
		}
	}
	if b, ok := parseBounds("2,8"); !ok || b != (bounds{2, 8}) {
		t.Errorf(`parseBounds("2,8") = %v, %t`, b, ok)
	}
	if b, ok := parseBounds("0,100"); !ok || b != (bounds{0, 100}) {
		t.Errorf(`parseBounds("0,100") = %v, %t`, b, ok)
	}
	for _, bad := range []string{"", "2", "0,0", "-1,3", "4,2", "a,b"} {
		if _, ok := parseBounds(bad); ok {
			t.Errorf("parseBounds(%q) accepted", bad)
		}
	}
}

// TestAutoscaledSplit walks a routed plan whose two Deployments each have
// a HorizontalPodAutoscaler: the candidate's share moves through its
// autoscaler's bounds (its share of stable's), the driver never applies
// spec.replicas, a restarted driver scales from the recorded bounds, and
// a rollback gives the candidate's autoscaler its own bounds back. It
// depends on the autoscaler controller only for keeping replicas within
// the bounds, not on any scaling decision from metrics (the pods request
// no CPU, so it makes none).
func TestAutoscaledSplit(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	ctx := ctxT(t)
	hpas := f.kube.AutoscalingV2().HorizontalPodAutoscalers(f.ns)
	for name, b := range map[string]bounds{stableName: {2, 8}, candidateName: {1, 3}} {
		_, err := hpas.Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
				MinReplicas:    ptr(int32(b.min)), MaxReplicas: int32(b.max),
				Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
					Name: "cpu", Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr(int32(80))},
				}}},
			},
		}, metav1.CreateOptions{FieldManager: "test"})
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(step, name string, want bounds, mark string) {
		t.Helper()
		h, err := hpas.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := (autoscaler{HorizontalPodAutoscaler: h}).current(); got != want {
			t.Errorf("%s: autoscaler %s has bounds %v, want %v", step, name, got, want)
		}
		if got := h.Annotations[AnnotationBounds]; got != mark {
			t.Errorf("%s: autoscaler %s has %s %q, want %q", step, name, AnnotationBounds, got, mark)
		}
		x, err := f.kube.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ownsReplicas(deployment{x}) {
			t.Errorf("%s: the driver's apply owns spec.replicas of %s, which an autoscaler targets", step, name)
		}
	}

	d := f.driver(t, WithReadyTimeout(45*time.Second))
	converge(t, d, drivers.Target{Traffic: 25})
	check("25%", stableName, bounds{2, 8}, "")
	check("25%", candidateName, bounds{1, 2}, "1,3")

	if st := converge(t, d, drivers.Target{Traffic: 100}); st.CandidateReplicas < 2 || st.CandidateReady < 2 {
		t.Errorf("100%%: %+v, want the candidate at its autoscaler's new minimum of 2 at least", st)
	}
	check("100%", stableName, bounds{2, 8}, "")
	check("100%", candidateName, bounds{2, 8}, "1,3")

	// A restarted daemon reads the bounds from before off the annotation.
	d = f.driver(t, WithReadyTimeout(45*time.Second))
	if st, err := d.Observe(ctx); err != nil || st.Traffic != 100 {
		t.Fatalf("Observe after a restart = %+v, %v; want traffic 100", st, err)
	}
	converge(t, d, drivers.Target{Traffic: 50})
	check("50% after a restart", candidateName, bounds{1, 4}, "1,3")

	st := converge(t, d, drivers.Target{})
	check("rolled back", stableName, bounds{2, 8}, "")
	check("rolled back", candidateName, bounds{1, 3}, "")
	if st.CandidateReplicas != 0 || st.Traffic != 0 {
		t.Errorf("rolled back: %+v, want the candidate at zero with no traffic", st)
	}
}
