package kubernetes

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

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
