package k8stest

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// The names of an App's objects.
const (
	AppStable    = "app-stable"
	AppCandidate = "app-candidate"
	AppRoute     = "app"
)

// AppOptions shape an App.
type AppOptions struct {
	// Replicas is stable's, at the start; the candidate has none.
	Replicas int32
	// Routed adds an HTTPRoute that sends every request to stable.
	Routed bool
	// GRPC makes the route of Routed a GRPCRoute.
	GRPC bool
	// Limits are the limits of both Deployments' container (none if
	// empty).
	Limits corev1.ResourceList
}

// NewApp creates in ns what a plan's kubernetes driver block names: the
// Deployments app-stable (v1) and app-candidate (v2, no replicas), a
// Service for each selecting its own pods, and with Routed an HTTPRoute
// (with GRPC too, a GRPCRoute) "app" whose one rule sends everything to
// app-stable:80 (the parent Gateway need not exist). It returns once stable's replicas are ready.
func NewApp(t testing.TB, cfg *rest.Config, ns string, o AppOptions) {
	t.Helper()
	ctx := context.Background()
	kube := Client(t, cfg)
	for _, w := range []struct {
		name, version string
		replicas      int32
	}{{AppStable, "v1", o.Replicas}, {AppCandidate, "v2", 0}} {
		labels := map[string]string{"app": "app", "version": w.version}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: &w.replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "app", Image: "hal9-testapp:" + w.version,
						Ports:     []corev1.ContainerPort{{ContainerPort: 8080}},
						Resources: corev1.ResourceRequirements{Limits: o.Limits},
					}}},
				},
			},
		}
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{FieldManager: "test"}); err != nil {
			t.Fatalf("k8stest: create deployment %s/%s: %v", ns, w.name, err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector: labels,
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{FieldManager: "test"}); err != nil {
			t.Fatalf("k8stest: create service %s/%s: %v", ns, w.name, err)
		}
	}
	if o.Routed {
		createRoute(t, cfg, ns, o.GRPC)
	}
	WaitReady(t, cfg, ns, AppStable, o.Replicas)
}

// createRoute creates the route of a routed App.
func createRoute(t testing.TB, cfg *rest.Config, ns string, grpc bool) {
	t.Helper()
	ctx := context.Background()
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	meta := metav1.ObjectMeta{Name: AppRoute, Namespace: ns}
	common := gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gateway"}}}
	hostnames := []gatewayv1.Hostname{"app.example.com"}
	port := gatewayv1.PortNumber(80)
	stable := gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: AppStable, Port: &port}}
	kind := "httproute"
	if grpc {
		kind = "grpcroute"
		_, err = gw.GatewayV1().GRPCRoutes(ns).Create(ctx, &gatewayv1.GRPCRoute{
			ObjectMeta: meta,
			Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: common, Hostnames: hostnames,
				Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: stable}}}}},
		}, metav1.CreateOptions{FieldManager: "test"})
	} else {
		_, err = gw.GatewayV1().HTTPRoutes(ns).Create(ctx, &gatewayv1.HTTPRoute{
			ObjectMeta: meta,
			Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: common, Hostnames: hostnames,
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: stable}}}}},
		}, metav1.CreateOptions{FieldManager: "test"})
	}
	if err != nil {
		t.Fatalf("k8stest: create %s %s/%s: %v", kind, ns, AppRoute, err)
	}
}

// WaitReady waits up to a minute until a Deployment has n replicas, all
// ready, as of its latest spec.
func WaitReady(t testing.TB, cfg *rest.Config, ns, name string, n int32) {
	t.Helper()
	kube := Client(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last *appsv1.Deployment
	for {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = d
			if d.Status.ReadyReplicas == n && d.Status.Replicas == n && d.Status.ObservedGeneration >= d.Generation {
				return
			}
		}
		select {
		case <-ctx.Done():
			if last != nil {
				t.Fatalf("k8stest: deployment %s/%s: want %d ready replicas, have %d of %d after a minute", ns, name, n, last.Status.ReadyReplicas, last.Status.Replicas)
			}
			t.Fatalf("k8stest: deployment %s/%s: %v", ns, name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// GitOpsManager is the field manager of the GitOps tool that tests run
// beside the driver: Argo CD's application controller applies under this
// name.
const GitOpsManager = "argocd-controller"

// GitOpsDeployment is an App's Deployment as the repository a GitOps tool
// follows has it: no replicas (the driver or an autoscaler owns them), and
// a label of the tool's own.
func GitOpsDeployment(ns, name, version string) *appsv1ac.DeploymentApplyConfiguration {
	labels := map[string]string{"app": "app", "version": version}
	return appsv1ac.Deployment(name, ns).
		WithLabels(map[string]string{"team": "shop"}).
		WithSpec(appsv1ac.DeploymentSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(labels).
				WithSpec(corev1ac.PodSpec().WithContainers(corev1ac.Container().
					WithName("app").WithImage("hal9-testapp:" + version).
					WithPorts(corev1ac.ContainerPort().WithContainerPort(8080))))))
}
