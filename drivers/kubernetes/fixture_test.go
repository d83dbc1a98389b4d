package kubernetes

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// fixture is a namespace with the workloads of one plan (k8stest.NewApp)
// and the plan that names them.
type fixture struct {
	cfg  *rest.Config
	kube kubernetes.Interface
	gw   gatewayclient.Interface
	ns   string
	plan *plan.Plan
}

type fixtureOpts struct {
	replicas int32 // stable's, at the start
	routed   bool
	grpc     bool   // with routed, a GRPCRoute rather than an HTTPRoute
	name     string // the plan's name
}

const (
	stableName    = k8stest.AppStable
	candidateName = k8stest.AppCandidate
	routeName     = k8stest.AppRoute
)

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.name == "" {
		o.name = "app"
	}
	k8stest.NewApp(t, cfg, ns, k8stest.AppOptions{Replicas: o.replicas, Routed: o.routed, GRPC: o.grpc})
	k := &plan.KubernetesDriver{
		Namespace: ns,
		Stable:    plan.KubernetesWorkload{Deployment: stableName},
		Candidate: plan.KubernetesWorkload{Deployment: candidateName},
	}
	switch {
	case o.routed && o.grpc:
		k.Traffic = &plan.KubernetesTraffic{GRPCRoute: routeName}
	case o.routed:
		k.Traffic = &plan.KubernetesTraffic{HTTPRoute: routeName}
	}
	return &fixture{
		cfg: cfg, kube: k8stest.Client(t, cfg), gw: gw, ns: ns,
		plan: &plan.Plan{
			APIVersion: plan.APIVersion, Kind: plan.Kind,
			Metadata: plan.Metadata{Name: o.name},
			Spec:     plan.Spec{Driver: plan.Driver{Kubernetes: k}},
		},
	}
}

// waitReady waits until a Deployment has n replicas, all ready.
func (f *fixture) waitReady(t *testing.T, name string, n int32) {
	t.Helper()
	k8stest.WaitReady(t, f.cfg, f.ns, name, n)
}

func (f *fixture) driver(t testing.TB, opts ...Option) *Driver {
	t.Helper()
	d, err := New(f.cfg, f.plan, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// cachedDriver opens the fixture's plan as the daemon does: through a
// Cluster of its own, reading from informers, closed when the test ends.
func (f *fixture) cachedDriver(t testing.TB, opts ...Option) *Driver {
	t.Helper()
	return f.openIn(t, f.cluster(t, f.cfg, opts...))
}

// cluster returns a Cluster of cfg, closed when the test ends.
func (f *fixture) cluster(t testing.TB, cfg *rest.Config, opts ...Option) *Cluster {
	t.Helper()
	cl, err := NewCluster(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// openIn opens the fixture's plan in cl.
func (f *fixture) openIn(t testing.TB, cl *Cluster) *Driver {
	t.Helper()
	d, err := cl.Open(t.Context(), f.plan)
	if err != nil {
		t.Fatal(err)
	}
	return d.(*Driver)
}

// route reads the fixture's HTTPRoute.
func (f *fixture) route(t *testing.T) *gatewayv1.HTTPRoute {
	t.Helper()
	return getRoute(t, f.gw.GatewayV1().HTTPRoutes(f.ns).Get)
}

// grpcRoute reads the fixture's GRPCRoute.
func (f *fixture) grpcRoute(t *testing.T) *gatewayv1.GRPCRoute {
	t.Helper()
	return getRoute(t, f.gw.GatewayV1().GRPCRoutes(f.ns).Get)
}

// getRoute reads the fixture's route with the Get of its kind's client.
func getRoute[T any](t *testing.T, get func(context.Context, string, metav1.GetOptions) (T, error)) T {
	t.Helper()
	r, err := get(context.Background(), routeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
