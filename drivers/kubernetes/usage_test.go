package kubernetes

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/testenv"
	"github.com/hal9ai/hal9-migrate/plan"
)

// The annotations by which kwok's fake node reports a pod's usage: every
// container of the pod uses what they say (scripts/k8s-testenv.sh).
const (
	annotationUsageCPU    = "kwok.x-k8s.io/usage-cpu"
	annotationUsageMemory = "kwok.x-k8s.io/usage-memory"
)

// TestUsage reads what the pods of each side use from metrics-server,
// which scrapes the usage kwok's fake node simulates, and checks it in
// percent of the pods' limits: summed over a pod's containers, a
// container without a limit counted at its request.
func TestUsage(t *testing.T) {
	cfg := k8stest.Env(t)
	needMetrics(t, cfg)
	ns := k8stest.Namespace(t, cfg)
	kube := k8stest.Client(t, cfg)
	limits := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		}}
	}
	requests := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		}}
	}
	// Stable: two pods of 500m and 256Mi using 100m and 64Mi, 20% and
	// 25%. The candidate: one pod whose app container may use 300m and
	// 192Mi and whose proxy asks for 200m and 64Mi with no limit, 500m
	// and 256Mi in all; both containers use 200m and 100Mi, 400m and
	// 200Mi in all, 80% and 78.125%.
	createDeployment(t, kube, ns, "shop-v1", 2, map[string]string{annotationUsageCPU: "100m", annotationUsageMemory: "64Mi"},
		corev1.Container{Name: "app", Image: "shop:v1", Resources: limits("500m", "256Mi")})
	createDeployment(t, kube, ns, "shop-v2", 1, map[string]string{annotationUsageCPU: "200m", annotationUsageMemory: "100Mi"},
		corev1.Container{Name: "app", Image: "shop:v2", Resources: limits("300m", "192Mi")},
		corev1.Container{Name: "proxy", Image: "proxy:1", Resources: requests("200m", "64Mi")})
	createDeployment(t, kube, ns, "idle", 0, nil, corev1.Container{Name: "app", Image: "idle:1"})
	createDeployment(t, kube, ns, "unbounded", 1, nil,
		corev1.Container{Name: "app", Image: "unbounded:1", Resources: limits("500m", "256Mi")},
		corev1.Container{Name: "proxy", Image: "proxy:1", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("200m"),
		}}})
	for name, n := range map[string]int32{"shop-v1": 2, "shop-v2": 1, "idle": 0, "unbounded": 1} {
		k8stest.WaitReady(t, cfg, ns, name, n)
	}

	d, err := New(cfg, kubernetesPlan("shop", ns, "shop-v1", "shop-v2"))
	if err != nil {
		t.Fatal(err)
	}
	// metrics-server has a pod's CPU once it has scraped it twice: about
	// two of its resolutions after the pod started.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stable, candidate []drivers.Usage
	err = drivertest.WaitFor(ctx, 2*time.Minute, time.Second, func(ctx context.Context) (bool, error) {
		if stable, err = d.Usage(ctx, plan.Stable); err != nil {
			return false, err
		}
		if candidate, err = d.Usage(ctx, plan.Candidate); err != nil {
			return false, err
		}
		return len(stable) == 2 && len(candidate) == 1, nil
	})
	if err != nil {
		t.Fatalf("waiting for metrics-server to report the pods: %v (stable %+v, candidate %+v)", err, stable, candidate)
	}
	for _, c := range []struct {
		side      plan.Side
		got       []drivers.Usage
		prefix    string
		cpu, mem  float64
		instances int
	}{
		{plan.Stable, stable, "shop-v1-", 20, 25, 2},
		{plan.Candidate, candidate, "shop-v2-", 80, 78.125, 1},
	} {
		for _, u := range c.got {
			if !strings.HasPrefix(u.Instance, c.prefix) || !near(u.CPU, c.cpu) || !near(u.Memory, c.mem) {
				t.Errorf("%s: %+v, want a pod %s* at CPU %v%% and memory %v%%", c.side, u, c.prefix, c.cpu, c.mem)
			}
		}
	}
	t.Logf("stable %+v, candidate %+v", stable, candidate)

	// A side with no pod running is no instance; a side whose pods have
	// a container with neither a limit nor a request is an error that
	// says what to set.
	d, err = New(cfg, kubernetesPlan("shop", ns, "idle", "unbounded"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.Usage(ctx, plan.Stable); err != nil || got == nil || len(got) != 0 {
		t.Errorf("a side with no pod: %+v, %v; want an empty list", got, err)
	}
	_, err = d.Usage(ctx, plan.Candidate)
	if err == nil || !strings.Contains(err.Error(), "deployment "+ns+"/unbounded") ||
		!strings.Contains(err.Error(), "container proxy has no memory limit (nor request)") ||
		!strings.Contains(err.Error(), "set resources.limits.memory") {
		t.Errorf("a side without limits: %v", err)
	}
}

// TestUsageNotServed checks what Usage says when the API server cannot
// serve the resource metrics: a group it does not know (no metrics-server
// registered: 404) and an APIService whose server does not answer (503),
// answered here as the API server answers them. The Deployment and its pod
// come from the real API server.
func TestUsageNotServed(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	kube := k8stest.Client(t, cfg)
	createDeployment(t, kube, ns, "shop-v2", 1, nil, corev1.Container{Name: "app", Image: "shop:v2",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
		}}})
	k8stest.WaitReady(t, cfg, ns, "shop-v2", 1)

	for _, c := range []struct {
		name        string
		code        int
		contentType string
		body        string
		want        []string
	}{
		{"no group", http.StatusNotFound, "application/json",
			`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}`,
			[]string{
				"read candidate usage of shop: read pod metrics of deployment " + ns + "/shop-v2: metrics.k8s.io is not served: the API server has no such group",
				"install metrics-server",
				`rate(container_cpu_usage_seconds_total{namespace="` + ns + `",pod=~"shop-v2-[a-z0-9]+-[a-z0-9]{5}",container!=""}[1m])`,
				`kube_pod_container_resource_limits{resource="cpu"}`,
			}},
		// The aggregator's own answer when the APIService's server does
		// not answer.
		{"down", http.StatusServiceUnavailable, "text/plain; charset=utf-8", "service unavailable\n", []string{
			"metrics.k8s.io is not served: its APIService is registered but does not answer",
			"kubectl get apiservice v1beta1.metrics.k8s.io",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.contentType)
				w.WriteHeader(c.code)
				_, _ = io.WriteString(w, c.body)
			}))
			defer srv.Close()
			d, err := New(cfg, kubernetesPlan("shop", ns, "shop-v1", "shop-v2"))
			if err != nil {
				t.Fatal(err)
			}
			c2, err := newClients(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			d.metrics = c2.metrics
			_, err = d.Usage(ctxT(t), plan.Candidate)
			if !errors.Is(err, ErrMetricsNotServed) {
				t.Fatalf("Usage: %v, want ErrMetricsNotServed", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Usage: %v\nwant it to say %s", err, w)
				}
			}
		})
	}
}

// TestLimitsOf checks what a pod's usage is measured against.
func TestLimitsOf(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	always := corev1.ContainerRestartPolicyAlways
	for _, c := range []struct {
		name     string
		spec     corev1.PodSpec
		cpu, mem string
		err      string
	}{
		{name: "limits", spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Resources: corev1.ResourceRequirements{Limits: rl("500m", "256Mi"), Requests: rl("100m", "64Mi")}},
		}}, cpu: "500m", mem: "256Mi"},
		{name: "summed, a request where no limit", spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Resources: corev1.ResourceRequirements{Limits: rl("300m", ""), Requests: rl("", "192Mi")}},
			{Name: "b", Resources: corev1.ResourceRequirements{Requests: rl("200m", "64Mi")}},
		}}, cpu: "500m", mem: "256Mi"},
		{name: "a sidecar counts, an init container does not", spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "init", Resources: corev1.ResourceRequirements{Limits: rl("2", "1Gi")}},
				{Name: "sidecar", RestartPolicy: &always, Resources: corev1.ResourceRequirements{Limits: rl("100m", "32Mi")}},
			},
			Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{Limits: rl("400m", "224Mi")}}},
		}, cpu: "500m", mem: "256Mi"},
		{name: "pod-level limits", spec: corev1.PodSpec{
			Resources:  &corev1.ResourceRequirements{Limits: rl("1", "")},
			Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{Requests: rl("", "256Mi")}}},
		}, cpu: "1", mem: "256Mi"},
		{name: "none", spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Resources: corev1.ResourceRequirements{Limits: rl("500m", "256Mi")}},
			{Name: "b", Resources: corev1.ResourceRequirements{Limits: rl("", "64Mi")}},
		}}, err: "container b has no cpu limit (nor request) to measure its usage against: set resources.limits.cpu in the Deployment's pod template"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := limitsOf(&corev1.Pod{Spec: c.spec})
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("limitsOf: %v, want %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.cpu.Cmp(resource.MustParse(c.cpu)) != 0 || l.memory.Cmp(resource.MustParse(c.mem)) != 0 {
				t.Errorf("limitsOf: cpu %s memory %s, want %s and %s", &l.cpu, &l.memory, c.cpu, c.mem)
			}
		})
	}
}

// needMetrics skips (fails, in CI) a test that needs metrics.k8s.io when
// the test API server does not serve it.
func needMetrics(t *testing.T, cfg *rest.Config) {
	t.Helper()
	kube := k8stest.Client(t, cfg)
	rs, err := kube.Discovery().ServerResourcesForGroupVersion("metrics.k8s.io/v1beta1")
	if err != nil || !slices.ContainsFunc(rs.APIResources, func(r metav1.APIResource) bool { return r.Name == "pods" }) {
		testenv.Missing(t, "the test API server does not serve metrics.k8s.io (scripts/k8s-testenv.sh starts metrics-server): %v", err)
	}
}

// createDeployment creates a Deployment of n pods of containers, the pods
// annotated with ann.
func createDeployment(t *testing.T, kube kubernetes.Interface, ns, name string, n int32, ann map[string]string, containers ...corev1.Container) {
	t.Helper()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: ann},
				Spec:       corev1.PodSpec{Containers: containers},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(t.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s/%s: %v", ns, name, err)
	}
}

func kubernetesPlan(name, ns, stable, candidate string) *plan.Plan {
	return &plan.Plan{Metadata: plan.Metadata{Name: name}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
		Namespace: ns,
		Stable:    plan.KubernetesWorkload{Deployment: stable},
		Candidate: plan.KubernetesWorkload{Deployment: candidate},
	}}}}
}

// near reports whether a measured percentage is within a point of want:
// the CPU is a rate between two scrapes.
func near(got, want float64) bool { return math.Abs(got-want) <= 1 }
