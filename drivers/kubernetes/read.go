package kubernetes

import (
	"context"
	"errors"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// reader reads the objects a driver observes. apiReader asks the API
// server every time, which suits a command that opens a driver once; the
// informer cache (cache.go) answers from watches, which is how the daemon
// reads a fleet of plans without a request per object per cycle. Either
// way an object that is not there is an error apierrors.IsNotFound
// recognises, and what a reader returns is shared: callers do not modify
// it.
type reader interface {
	deployment(ctx context.Context, ns, name string) (*appsv1.Deployment, error)
	services(ctx context.Context, ns string) ([]*corev1.Service, error)
	httpRoute(ctx context.Context, ns, name string) (*gatewayv1.HTTPRoute, error)
	grpcRoute(ctx context.Context, ns, name string) (*gatewayv1.GRPCRoute, error)
	job(ctx context.Context, ns, name string) (*batchv1.Job, error)
	// pods are the pods of a Job, which carry its LabelPlan.
	pods(ctx context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error)
	configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error)
	autoscalers(ctx context.Context, ns string) ([]*autoscalingv2.HorizontalPodAutoscaler, error)
	// scaledObjects are KEDA's; none when its CRD is not served.
	scaledObjects(ctx context.Context, ns string) ([]*unstructured.Unstructured, error)
	// wrote and removed tell the reader of an object the driver wrote, as
	// the API server answered, or deleted: a read that follows never
	// shows it older.
	wrote(obj runtime.Object)
	removed(obj runtime.Object)
}

// apiReader reads from the API server.
type apiReader struct{ c clients }

var _ reader = apiReader{}

func (r apiReader) deployment(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	return r.c.kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
}

func (r apiReader) services(ctx context.Context, ns string) ([]*corev1.Service, error) {
	l, err := r.c.kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return pointers(l.Items), nil
}

func (r apiReader) httpRoute(ctx context.Context, ns, name string) (*gatewayv1.HTTPRoute, error) {
	return r.c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
}

func (r apiReader) grpcRoute(ctx context.Context, ns, name string) (*gatewayv1.GRPCRoute, error) {
	return r.c.gw.GatewayV1().GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{})
}

func (r apiReader) job(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	return r.c.kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
}

func (r apiReader) pods(ctx context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
	l, err := r.c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	return pointers(l.Items), nil
}

func (r apiReader) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return r.c.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (r apiReader) autoscalers(ctx context.Context, ns string) ([]*autoscalingv2.HorizontalPodAutoscaler, error) {
	l, err := r.c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return pointers(l.Items), nil
}

func (r apiReader) scaledObjects(ctx context.Context, ns string) ([]*unstructured.Unstructured, error) {
	if ok, err := kedaServed(r.c); err != nil || !ok {
		return nil, err
	}
	l, err := r.c.dyn.Resource(scaledObjects).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return pointers(l.Items), nil
}

func (apiReader) wrote(runtime.Object)   {}
func (apiReader) removed(runtime.Object) {}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// Writes are retried this many times in all on a conflict, a throttle or
// a transient server error, the waits doubling from writeBackoff: a
// moment's contention on the API server should not fail a step that the
// next cycle would take anyway, and a longer outage should fail it soon.
const (
	writeTries   = 3
	writeBackoff = 100 * time.Millisecond
)

// retryWrite runs write until it succeeds, fails for good, or has been
// tried writeTries times, within ctx. A write that reads before it writes
// (the route's, with its resourceVersion) reads again in each try.
func retryWrite(ctx context.Context, write func() error) error {
	wait := writeBackoff
	for try := 1; ; try++ {
		err := write()
		if err == nil || try == writeTries || !transient(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

// transient reports whether a write that failed with err may succeed if
// made again as it is: a 409 Conflict (a stale resourceVersion), a 429, or
// a 5xx that says the server could not answer now.
func transient(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) ||
		apierrors.IsUnexpectedServerError(err)
}
