package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	autoscalingv2ac "k8s.io/client-go/applyconfigurations/autoscaling/v2"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// This file is how the driver lives with a HorizontalPodAutoscaler
// (autoscaling/v2) that targets one of the plan's Deployments: it moves
// the split through the autoscaler's minReplicas and maxReplicas, as Argo
// Rollouts and Flagger do, and leaves spec.replicas to the autoscaler.
//
// A side that should run n of the capacity's total replicas gets the
// bounds of the reference autoscaler (stable's, as it was before the
// migration; the side's own when stable has none) times n/total, rounded
// up, at least 1. A side at zero gets its own bounds back and is scaled to
// zero through the scale subresource, where an autoscaler stops acting
// (it never scales a target up from zero); a side leaving zero is scaled
// to its new minReplicas the same way, which the autoscaler then takes
// over. Those two are the only writes of replicas while an autoscaler
// targets a Deployment.
//
// The bounds an autoscaler had before the driver changed them are kept in
// its AnnotationBounds, so that a restarted daemon scales from them and
// not from the scaled ones, and gives them back when the side returns to
// them (or to zero).
//
// A KEDA ScaledObject (keda.sh/v1alpha1) whose scaleTargetRef names one
// of the plan's Deployments is moved the same way, through its
// minReplicaCount and maxReplicaCount: KEDA owns the autoscaler it
// generates from them and would undo bounds set there, so that
// autoscaler is left alone (a ScaledObject has precedence over any
// autoscaler targeting the same Deployment). The ScaledObject kind is
// looked up by discovery: without KEDA's CRD there is none to find. A
// ScaledObject may have a minReplicaCount of 0 (KEDA's default); a side
// running part of the capacity gets a minimum of 1 at least, and a side
// holding all of it the reference bounds as they are.

// AnnotationBounds, on a HorizontalPodAutoscaler or KEDA ScaledObject the
// driver rescaled, is its bounds from before ("min,max").
const AnnotationBounds = "migrate.hal9.ai/bounds"

// bounds are an autoscaler's minReplicas and maxReplicas.
type bounds struct{ min, max int }

func (b bounds) String() string { return fmt.Sprintf("%d,%d", b.min, b.max) }

func parseBounds(v string) (bounds, bool) {
	lo, hi, ok := strings.Cut(v, ",")
	if !ok {
		return bounds{}, false
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || a < 0 || b < max(a, 1) {
		return bounds{}, false
	}
	return bounds{a, b}, true
}

// share is b for n replicas of total: each bound times n/total, rounded
// up, at least 1; the maximum at least the minimum.
func (b bounds) share(n, total int) bounds {
	if total <= 0 || n >= total {
		return b
	}
	lo := max(1, (b.min*n+total-1)/total)
	return bounds{min: lo, max: max(lo, (b.max*n+total-1)/total)}
}

// autoscaler is what scales one Deployment: a HorizontalPodAutoscaler or,
// when so is set, a KEDA ScaledObject.
type autoscaler struct {
	*autoscalingv2.HorizontalPodAutoscaler
	so *unstructured.Unstructured
}

// scaledObjects is KEDA's ScaledObject resource.
var scaledObjects = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}

// KEDA's defaults for a ScaledObject's minReplicaCount and maxReplicaCount.
const kedaMinDefault, kedaMaxDefault = 0, 100

func (a autoscaler) name() string {
	if a.so != nil {
		return a.so.GetName()
	}
	return a.Name
}

func (a autoscaler) annotations() map[string]string {
	if a.so != nil {
		return a.so.GetAnnotations()
	}
	return a.Annotations
}

// what names the autoscaler in errors.
func (a autoscaler) what(ns string) string {
	if a.so != nil {
		return fmt.Sprintf("scaledobject %s/%s", ns, a.so.GetName())
	}
	return fmt.Sprintf("horizontalpodautoscaler %s/%s", ns, a.Name)
}

// current is the autoscaler's bounds now.
func (a autoscaler) current() bounds {
	if a.so != nil {
		b := bounds{min: kedaMinDefault, max: kedaMaxDefault}
		if v, ok, _ := unstructured.NestedInt64(a.so.Object, "spec", "minReplicaCount"); ok {
			b.min = int(v)
		}
		if v, ok, _ := unstructured.NestedInt64(a.so.Object, "spec", "maxReplicaCount"); ok {
			b.max = int(v)
		}
		return b
	}
	lo := 1
	if a.Spec.MinReplicas != nil {
		lo = int(*a.Spec.MinReplicas)
	}
	return bounds{min: lo, max: int(a.Spec.MaxReplicas)}
}

// original is the autoscaler's bounds before the driver changed them.
func (a autoscaler) original() bounds {
	if b, ok := parseBounds(a.annotations()[AnnotationBounds]); ok {
		return b
	}
	return a.current()
}

// autoscalers finds the autoscalers of the plan's two Deployments; nil for
// a side that has none. A KEDA ScaledObject comes before a
// HorizontalPodAutoscaler (KEDA's own among them) on the same Deployment.
func (d *Driver) autoscalers(ctx context.Context) (stable, candidate *autoscaler, err error) {
	stable, candidate, err = d.scaledObjects(ctx)
	if err != nil {
		return nil, nil, err
	}
	list, err := d.read.autoscalers(ctx, d.ns)
	if err != nil {
		return nil, nil, fmt.Errorf("list horizontalpodautoscalers in %s: %w", d.ns, err)
	}
	for _, h := range list {
		ref := h.Spec.ScaleTargetRef
		if !isDeployment(ref.APIVersion, ref.Kind) {
			continue
		}
		switch {
		case ref.Name == d.stable && stable == nil:
			stable = &autoscaler{HorizontalPodAutoscaler: h}
		case ref.Name == d.candidate && candidate == nil:
			candidate = &autoscaler{HorizontalPodAutoscaler: h}
		}
	}
	return stable, candidate, nil
}

// isDeployment reports whether a scale target reference of apiVersion and
// kind is to an apps Deployment.
func isDeployment(apiVersion, kind string) bool {
	return kind == "Deployment" && (apiVersion == "" || strings.HasPrefix(apiVersion, "apps/"))
}

// scaledObjects finds the KEDA ScaledObjects of the plan's two
// Deployments; none when the API server does not serve them.
func (d *Driver) scaledObjects(ctx context.Context) (stable, candidate *autoscaler, err error) {
	list, err := d.read.scaledObjects(ctx, d.ns)
	if err != nil {
		return nil, nil, fmt.Errorf("list scaledobjects in %s: %w", d.ns, err)
	}
	for _, so := range list {
		name, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "name")
		kind, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "kind")
		apiVersion, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "apiVersion")
		if kind == "" {
			kind = "Deployment" // KEDA's default
		}
		if !isDeployment(apiVersion, kind) {
			continue
		}
		switch name {
		case d.stable:
			stable = &autoscaler{so: so}
		case d.candidate:
			candidate = &autoscaler{so: so}
		}
	}
	return stable, candidate, nil
}

// kedaServed reports whether the API server serves KEDA's ScaledObjects:
// whether KEDA's CRD is installed.
func (d *Driver) kedaServed() (bool, error) {
	return kedaServed(clients{kube: d.kube, dyn: d.dyn})
}

// kedaServed reports whether c's API server serves KEDA's ScaledObjects.
// No keda.sh/v1alpha1 is no KEDA, not an error.
func kedaServed(c clients) (bool, error) {
	if c.dyn == nil {
		return false, nil
	}
	rl, err := c.kube.Discovery().ServerResourcesForGroupVersion(scaledObjects.GroupVersion().String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", scaledObjects.GroupVersion(), err)
	}
	for _, r := range rl.APIResources {
		if r.Name == scaledObjects.Resource {
			return true, nil
		}
	}
	return false, nil
}

// scaleAutoscaled brings a Deployment that a targets to n of total
// replicas through a's bounds, ref being the reference bounds, and sets
// the driver's annotations ann on it without taking spec.replicas.
func (d *Driver) scaleAutoscaled(ctx context.Context, x deployment, a *autoscaler, ref bounds, n, total int, ann map[string]string) (deployment, error) {
	own := a.original()
	want := own
	if n > 0 {
		want = ref.share(n, total)
	}
	if err := d.applyBounds(ctx, a, want, own); err != nil {
		return deployment{}, err
	}
	var err error
	switch {
	case n == 0 && x.replicas() != 0:
		x, err = d.scaleSubresource(ctx, x, 0)
	case n > 0 && x.replicas() == 0:
		x, err = d.scaleSubresource(ctx, x, max(1, want.min))
	}
	if err != nil {
		return deployment{}, err
	}
	if sameManaged(x.Annotations, ann) {
		return x, nil
	}
	ac, err := d.annotationsOnly(x, ann)
	if err != nil {
		return deployment{}, err
	}
	var got *appsv1.Deployment
	err = retryWrite(ctx, func() (err error) {
		got, err = d.kube.AppsV1().Deployments(d.ns).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		return deployment{}, fmt.Errorf("annotate deployment %s/%s: %w", d.ns, x.Name, err)
	}
	d.read.wrote(got)
	return deployment{got}, nil
}

// applyBounds sets a's bounds to want by server-side apply, keeping own,
// its bounds from before, in AnnotationBounds while they differ.
func (d *Driver) applyBounds(ctx context.Context, a *autoscaler, want, own bounds) error {
	_, marked := a.annotations()[AnnotationBounds]
	if a.current() == want && marked == (want != own) {
		return nil
	}
	if a.so != nil {
		return d.applyScaledObjectBounds(ctx, a, want, own)
	}
	ac := autoscalingv2ac.HorizontalPodAutoscaler(a.Name, d.ns).
		WithSpec(autoscalingv2ac.HorizontalPodAutoscalerSpec().
			WithMinReplicas(int32(want.min)).WithMaxReplicas(int32(want.max)))
	if want != own {
		ac.WithAnnotations(map[string]string{AnnotationBounds: own.String()})
	}
	var got *autoscalingv2.HorizontalPodAutoscaler
	err := retryWrite(ctx, func() (err error) {
		got, err = d.kube.AutoscalingV2().HorizontalPodAutoscalers(d.ns).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("set %s to %s: %w", a.what(d.ns), want, err)
	}
	d.read.wrote(got)
	a.HorizontalPodAutoscaler = got
	return nil
}

// applyScaledObjectBounds is applyBounds for a KEDA ScaledObject: its
// minReplicaCount and maxReplicaCount, which KEDA carries over to the
// autoscaler it generates.
func (d *Driver) applyScaledObjectBounds(ctx context.Context, a *autoscaler, want, own bounds) error {
	meta := map[string]any{"name": a.name(), "namespace": d.ns}
	if want != own {
		meta["annotations"] = map[string]any{AnnotationBounds: own.String()}
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": scaledObjects.GroupVersion().String(),
		"kind":       "ScaledObject",
		"metadata":   meta,
		"spec": map[string]any{
			"minReplicaCount": int64(want.min),
			"maxReplicaCount": int64(want.max),
		},
	}}
	var got *unstructured.Unstructured
	err := retryWrite(ctx, func() (err error) {
		got, err = d.dyn.Resource(scaledObjects).Namespace(d.ns).Apply(ctx, a.name(), obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("set %s to %s: %w", a.what(d.ns), want, err)
	}
	d.read.wrote(got)
	a.so = got
	return nil
}

// scaleSubresource sets a Deployment's replicas through its scale
// subresource, as an autoscaler does: for the moves to and from zero,
// which an autoscaler does not make. The update carries the
// resourceVersion of the scale it read, fresh from the API server, so a
// conflict reads it again; the Deployment it returns is read fresh too
// (a scale answers with the scale alone).
func (d *Driver) scaleSubresource(ctx context.Context, x deployment, n int) (deployment, error) {
	deps := d.kube.AppsV1().Deployments(d.ns)
	err := retryWrite(ctx, func() error {
		sc, err := deps.GetScale(ctx, x.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get the scale of deployment %s/%s: %w", d.ns, x.Name, err)
		}
		sc.Spec.Replicas = int32(n)
		if _, err := deps.UpdateScale(ctx, x.Name, sc, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("scale deployment %s/%s to %d: %w", d.ns, x.Name, n, err)
		}
		return nil
	})
	if err != nil {
		return deployment{}, err
	}
	got, err := d.api.deployment(ctx, d.ns, x.Name)
	if err != nil {
		return deployment{}, fmt.Errorf("get deployment %s/%s: %w", d.ns, x.Name, err)
	}
	d.read.wrote(got)
	return deployment{got}, nil
}

// annotationsOnly is the apply of the driver's annotations on x. When the
// driver owns spec.replicas from an apply made before an autoscaler
// targeted x, the apply keeps sending the live count: leaving it out
// would remove the field, and Kubernetes would default it to 1.
func (d *Driver) annotationsOnly(x deployment, ann map[string]string) (*appsv1ac.DeploymentApplyConfiguration, error) {
	ac := appsv1ac.Deployment(x.Name, d.ns)
	if ownsReplicas(x) {
		ac.WithSpec(appsv1ac.DeploymentSpec().WithReplicas(int32(x.replicas())))
	}
	if len(ann) > 0 {
		ac.WithAnnotations(ann)
	}
	return ac, nil
}

// ownsReplicas reports whether the driver's applies own x's spec.replicas.
func ownsReplicas(x deployment) bool {
	for _, m := range x.ManagedFields {
		if m.Manager != FieldManager || m.Operation != metav1.ManagedFieldsOperationApply || m.Subresource != "" || m.FieldsV1 == nil {
			continue
		}
		var f struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(m.FieldsV1.Raw, &f) == nil {
			if _, ok := f.Spec["f:replicas"]; ok {
				return true
			}
		}
	}
	return false
}

// readyTarget is how many ready replicas Shift can wait for on the sides
// of r: an autoscaled side is sure to reach its minReplicas only.
func (d *Driver) readyTarget(ctx context.Context, r traffic.Replicas) (traffic.Replicas, error) {
	sa, ca, err := d.autoscalers(ctx)
	if err != nil {
		return traffic.Replicas{}, err
	}
	if sa != nil {
		r.Stable = min(r.Stable, max(1, sa.current().min))
	}
	if ca != nil {
		r.Candidate = min(r.Candidate, max(1, ca.current().min))
	}
	return r, nil
}
