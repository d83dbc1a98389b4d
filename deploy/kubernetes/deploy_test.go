// Package kubernetes_test checks the manifests in deploy/kubernetes against
// a real API server: they render with kustomize, the API server accepts
// them (a server-side dry-run, then for real in a test namespace), and the
// RBAC they grant lets the daemon's ServiceAccount make every call the
// Kubernetes driver and the leader election make, and little else.
package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	k8sdriver "github.com/hal9ai/hal9-migrate/drivers/kubernetes"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/leader"
	"github.com/hal9ai/hal9-migrate/plan"
)

// kubectl runs the test environment's kubectl against its API server.
func kubectl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	bin := filepath.Join(k8stest.Bin(t), "kubectl")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", k8stest.Kubeconfig(t)}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), out)
	}
	return out
}

func here(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// overlay renders the manifests into namespace ns, with suffix on every
// name (the ClusterRole and its binding are cluster-wide: a test must not
// take the real names), leaving out the Namespace object.
func overlay(t *testing.T, ns, suffix string) []byte {
	t.Helper()
	return kubectl(t, nil, "kustomize", overlayDir(t, ns, suffix))
}

// overlayDir writes the kustomization overlay renders, and returns its
// folder.
func overlayDir(t *testing.T, ns, suffix string) string {
	t.Helper()
	dir := t.TempDir()
	// kustomize takes a base only by a relative path.
	base, err := filepath.Rel(dir, here(t))
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%q]
namespace: %q
nameSuffix: %q
patches:
  - patch: |-
      $patch: delete
      apiVersion: v1
      kind: Namespace
      metadata: {name: hal9-migrate}
`, base, ns, suffix)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConfig loads the daemon configuration the ConfigMap carries as the
// daemon does: unknown keys are errors, and the settings must hold.
func TestConfig(t *testing.T) {
	cfg, err := daemon.LoadConfig(filepath.Join(here(t), "config.yaml"), daemon.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	le := cfg.Kubernetes.LeaderElection
	if !le.Enabled || le.Namespace != "" || le.Name != "hal9-migrate" {
		t.Errorf("leader election: %+v", le)
	}
	if le.LeaseDuration <= le.RenewDeadline || le.RenewDeadline <= le.RetryPeriod {
		t.Errorf("leader election timings: %+v", le)
	}
}

func TestRender(t *testing.T) {
	out := string(kubectl(t, nil, "kustomize", here(t)))
	for _, want := range []string{
		"kind: Namespace", "kind: ServiceAccount", "kind: ClusterRole\n", "kind: ClusterRoleBinding", "kind: Role\n",
		"kind: RoleBinding", "kind: ConfigMap", "kind: Deployment", "kind: Service\n", "replicas: 2",
		"namespace: hal9-migrate", "name: hal9-migrate-config-",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the rendered manifests lack %q:\n%s", want, out)
		}
	}
}

// TestApply applies the manifests with a server-side dry-run, then for
// real in a test namespace, and checks the Deployment comes up with its
// two replicas (on kwok's fake node: the image is never pulled).
func TestApply(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	suffix := "-" + ns[len(ns)-8:]
	// The base as it is, Namespace included: dry-run only, since the
	// namespace hal9-migrate is not the test's to create.
	base := kubectl(t, nil, "kustomize", here(t))
	var namespaceDoc []byte
	for _, doc := range bytes.Split(base, []byte("\n---\n")) {
		if bytes.Contains(doc, []byte("kind: Namespace")) {
			namespaceDoc = doc
		}
	}
	kubectl(t, namespaceDoc, "apply", "--server-side", "--dry-run=server", "--field-manager=hal9-test", "-f", "-")
	rendered := overlay(t, ns, suffix)
	kubectl(t, rendered, "apply", "--server-side", "--dry-run=server", "--field-manager=hal9-test", "-f", "-")
	applyForReal(t, ns, suffix, rendered)
	k8stest.WaitReady(t, cfg, ns, "hal9-migrate"+suffix, 2)
}

// applyForReal applies the rendered manifests and deletes the cluster-wide
// objects when the test ends (the namespace takes the rest with it).
func applyForReal(t *testing.T, ns, suffix string, rendered []byte) {
	t.Helper()
	kubectl(t, rendered, "apply", "--server-side", "--field-manager=hal9-test", "-f", "-")
	t.Cleanup(func() {
		kubectl(t, nil, "delete", "--ignore-not-found", "clusterrole/hal9-migrate"+suffix, "clusterrolebinding/hal9-migrate"+suffix)
	})
}

type access struct {
	verb, group, resource, sub, name string
	ns                               string // "": a workload namespace; "own": the daemon's
}

func (a access) String() string {
	r := a.resource
	if a.sub != "" {
		r += "/" + a.sub
	}
	if a.group != "" {
		r += "." + a.group
	}
	if a.name != "" {
		r += " " + a.name
	}
	return a.verb + " " + r
}

// What the daemon's ServiceAccount needs, in the namespaces of the plans
// (workloadAccess) and in its own (leaseAccess), and what it must not do.
var (
	workloadAccess = append([]access{
		{verb: "get", group: "apps", resource: "deployments"},
		{verb: "patch", group: "apps", resource: "deployments"},
		{verb: "get", group: "gateway.networking.k8s.io", resource: "httproutes"},
		{verb: "patch", group: "gateway.networking.k8s.io", resource: "httproutes"},
		{verb: "get", group: "gateway.networking.k8s.io", resource: "grpcroutes"},
		{verb: "patch", group: "gateway.networking.k8s.io", resource: "grpcroutes"},
		{verb: "create", group: "batch", resource: "jobs"},
		{verb: "get", group: "batch", resource: "jobs"},
		{verb: "delete", group: "batch", resource: "jobs"},
		{verb: "get", resource: "pods", sub: "log"},
		{verb: "list", group: "metrics.k8s.io", resource: "pods"},
		{verb: "get", resource: "configmaps"},
		{verb: "create", resource: "configmaps"},
		{verb: "patch", resource: "configmaps"},
		{verb: "create", resource: "events"},
	}, watched...)
	// watched are the kinds the daemon's informers list and watch.
	watched = listWatch(
		access{group: "apps", resource: "deployments"},
		access{resource: "services"},
		access{group: "autoscaling", resource: "horizontalpodautoscalers"},
		access{group: "keda.sh", resource: "scaledobjects"},
		access{group: "gateway.networking.k8s.io", resource: "httproutes"},
		access{group: "gateway.networking.k8s.io", resource: "grpcroutes"},
		access{group: "batch", resource: "jobs"},
		access{resource: "pods"},
		access{resource: "configmaps"},
	)
	leaseAccess = []access{
		{verb: "create", group: "coordination.k8s.io", resource: "leases", ns: "own"},
		{verb: "get", group: "coordination.k8s.io", resource: "leases", name: "hal9-migrate", ns: "own"},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", name: "hal9-migrate", ns: "own"},
	}
	workloadDenied = []access{
		{verb: "create", group: "apps", resource: "deployments"},
		{verb: "update", group: "apps", resource: "deployments"},
		{verb: "delete", group: "apps", resource: "deployments"},
		{verb: "patch", group: "apps", resource: "deployments", sub: "scale"},
		{verb: "get", resource: "secrets"},
		{verb: "list", resource: "secrets"},
		{verb: "patch", resource: "services"},
		{verb: "delete", resource: "pods"},
		{verb: "create", resource: "pods"},
		{verb: "create", resource: "pods", sub: "exec"},
		{verb: "list", group: "metrics.k8s.io", resource: "nodes"},
		{verb: "update", group: "batch", resource: "jobs"},
		{verb: "update", group: "gateway.networking.k8s.io", resource: "httproutes"},
		{verb: "delete", group: "gateway.networking.k8s.io", resource: "httproutes"},
		{verb: "update", group: "gateway.networking.k8s.io", resource: "grpcroutes"},
		{verb: "delete", group: "gateway.networking.k8s.io", resource: "grpcroutes"},
		{verb: "patch", group: "gateway.networking.k8s.io", resource: "gateways"},
		{verb: "delete", resource: "configmaps"},
		{verb: "delete", resource: "events"},
		{verb: "create", resource: "namespaces"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "rolebindings"},
		{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
		{verb: "create", group: "coordination.k8s.io", resource: "leases"},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", name: "hal9-migrate"},
	}
	leaseDenied = []access{
		{verb: "get", group: "coordination.k8s.io", resource: "leases", name: "kube-controller-manager", ns: "own"},
		{verb: "delete", group: "coordination.k8s.io", resource: "leases", name: "hal9-migrate", ns: "own"},
	}
)

// listWatch is the list and the watch of each kind.
func listWatch(kinds ...access) []access {
	var out []access
	for _, k := range kinds {
		for _, verb := range []string{"list", "watch"} {
			k.verb = verb
			out = append(out, k)
		}
	}
	return out
}

// allowed asks the API server whether user may do a in namespace where
// ("": in every namespace).
func allowed(t *testing.T, kube kubernetes.Interface, user string, groups []string, where string, a access) bool {
	t.Helper()
	r, err := kube.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: where, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Name: a.name,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// TestRBAC checks what the ServiceAccount may do, by SubjectAccessReview,
// and then that it can in fact drive a plan and lead, by impersonating it.
func TestRBAC(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	suffix := "-" + ns[len(ns)-8:]
	applyForReal(t, ns, suffix, overlay(t, ns, suffix))
	user := "system:serviceaccount:" + ns + ":hal9-migrate" + suffix
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	kube := k8stest.Client(t, cfg)
	const workloads = "shop"

	check := func(a access) bool {
		where := workloads
		if a.ns == "own" {
			where = ns
		}
		return allowed(t, kube, user, groups, where, a)
	}
	for _, a := range append(slices.Clone(workloadAccess), leaseAccess...) {
		if !check(a) {
			t.Errorf("the ServiceAccount may not %s, which the daemon needs", a)
		}
	}
	for _, a := range append(slices.Clone(workloadDenied), leaseDenied...) {
		if check(a) {
			t.Errorf("the ServiceAccount may %s, which the daemon does not need", a)
		}
	}

	// Impersonated, the ServiceAccount drives a plan through every
	// driver call, as the daemon's drivers read (from informers) and as
	// a command's do (from the API server), and wins the election.
	sa := rest.CopyConfig(cfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	for _, m := range driverModes(t, sa) {
		t.Run(m.name, func(t *testing.T) { driveAs(t, cfg, m.open, k8stest.Namespace(t, cfg)) })
	}
	leadAs(t, sa, ns)
}

// driverMode is one way to open a driver as a ServiceAccount.
type driverMode struct {
	name string
	open func(*plan.Plan) (driver, error)
}

// driverModes open drivers with sa's rights as the daemon does (reading
// from informers, opts its options) and as a command does (reading from
// the API server).
func driverModes(t *testing.T, sa *rest.Config, opts ...k8sdriver.Option) []driverMode {
	return []driverMode{
		{"informers", func(p *plan.Plan) (driver, error) {
			cl, err := k8sdriver.NewCluster(sa, opts...)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { cl.Close() })
			d, err := cl.Open(t.Context(), p)
			if err != nil {
				return nil, err
			}
			return d.(driver), nil
		}},
		{"direct", func(p *plan.Plan) (driver, error) { return k8sdriver.New(sa, p, opts...) }},
	}
}

// driver is what driveAs calls.
type driver interface {
	drivers.Driver
	drivers.Checkpointer
	drivers.UsageReader
}

// driveAs drives a plan in ns through every driver call, with a driver
// open opens as the ServiceAccount.
func driveAs(t *testing.T, admin *rest.Config, open func(*plan.Plan) (driver, error), ns string) {
	t.Helper()
	k8stest.NewApp(t, admin, ns, k8stest.AppOptions{Replicas: 2, Routed: true, Limits: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
	}})
	p := &plan.Plan{Metadata: plan.Metadata{Name: "shop"}, Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
		Namespace: ns,
		Stable:    plan.KubernetesWorkload{Deployment: k8stest.AppStable},
		Candidate: plan.KubernetesWorkload{Deployment: k8stest.AppCandidate},
		Traffic:   &plan.KubernetesTraffic{HTTPRoute: k8stest.AppRoute},
	}}}}
	d, err := open(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("as the ServiceAccount, %s: %v", what, err)
		}
	}
	_, err = d.Observe(ctx)
	step("Observe", err)
	step("Apply mirror", d.Apply(ctx, drivers.Target{Mirror: 100}))
	step("Apply 10%", d.Apply(ctx, drivers.Target{Traffic: 10}))
	_, err = drivertest.Converge(ctx, d, drivers.Target{Traffic: 10}, 0, 30*time.Second, 100*time.Millisecond)
	step("converge", err)
	// Usage lists the pods and their metrics. Where the test API server
	// serves no metrics.k8s.io, the metrics call still passes RBAC first
	// and only then finds no such group.
	if _, err := d.Usage(ctx, plan.Candidate); err != nil && !errors.Is(err, k8sdriver.ErrMetricsNotServed) {
		step("Usage", err)
	}
	step("PublishFlags", d.PublishFlags(ctx, map[string]int{"new_path": 20}))
	step("PublishFlags again", d.PublishFlags(ctx, map[string]int{"new_path": 30}))
	snap, err := d.Snapshot(ctx)
	step("Snapshot", err)
	step("Restore", d.Restore(ctx, snap))
	step("StartJob", d.StartJob(ctx, "job-1", plan.Run{Image: "migrator", Env: map[string]string{"KWOK_EXIT_CODE": "2"}}))
	step("StartJob again", d.StartJob(ctx, "job-1", plan.Run{Image: "migrator"}))
	var st drivers.JobStatus
	step("JobStatus", drivertest.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err = d.JobStatus(ctx, "job-1")
		return st.Done, err
	}))
	if st.ExitCode != 2 {
		t.Errorf("job status as the ServiceAccount: %+v", st)
	}
	step("Apply 100% decommissioned", d.Apply(ctx, drivers.Target{Traffic: 100, Decommission: true}))
}

func leadAs(t *testing.T, sa *rest.Config, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	led := make(chan struct{})
	err := leader.Run(ctx, sa, "replica-0", leader.Lease{Namespace: ns, Name: "hal9-migrate"},
		leader.Durations{Lease: 2 * time.Second, Renew: 1500 * time.Millisecond, Retry: 200 * time.Millisecond},
		func(context.Context) { close(led); cancel() })
	select {
	case <-led:
	default:
		t.Fatalf("as the ServiceAccount, leader election never led: %v", err)
	}
}
