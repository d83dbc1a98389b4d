// Package helm_test checks the Helm chart in hal9-migrate/: helm lint, helm
// template with its defaults and other values, the rendered objects against
// the kustomize manifests in deploy/kubernetes (the same RBAC rules, the
// same container), and the rendered manifests against a real API server
// (a server-side dry-run). helm is built by scripts/helm.sh, which
// scripts/test-env.sh runs first.
package helm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

const chart = "hal9-migrate"

// helmBin returns the helm to run: HAL9_HELM, else the one scripts/helm.sh
// has built (never building it here).
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HAL9_HELM"); h != "" {
		return h
	}
	cmd := exec.Command("../../scripts/helm.sh")
	cmd.Env = append(os.Environ(), "HAL9_HELM_NO_BUILD=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testenv.Missing(t, "no helm: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, errors.New(err.Error() + ": " + stderr.String())
	}
	return out, nil
}

// render runs helm template for release into ns with extra arguments.
func render(t *testing.T, release, ns string, args ...string) []byte {
	t.Helper()
	out, err := helm(t, append([]string{"template", release, chart, "--namespace", ns}, args...)...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return out
}

type obj = map[string]any

func docs(t *testing.T, b []byte) []obj {
	t.Helper()
	var out []obj
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o obj
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("rendered manifests: %v", err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

func readDocs(t *testing.T, path string) []obj {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return docs(t, b)
}

// get walks o by keys (string) and list indexes (int).
func get(o any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := o.(obj)
			if !ok {
				return nil
			}
			o = m[k]
		case int:
			l, ok := o.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			o = l[k]
		}
	}
	return o
}

func named(objs []obj, kind, name string) []obj {
	var out []obj
	for _, o := range objs {
		if o["kind"] == kind && (name == "" || get(o, "metadata", "name") == name) {
			out = append(out, o)
		}
	}
	return out
}

func one(t *testing.T, objs []obj, kind, name string) obj {
	t.Helper()
	got := named(objs, kind, name)
	if len(got) != 1 {
		t.Fatalf("%d %s %s rendered, want 1", len(got), kind, name)
	}
	return got[0]
}

func kinds(objs []obj) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o["kind"].(string))
	}
	slices.Sort(ks)
	return ks
}

func TestLint(t *testing.T) {
	for _, values := range [][]string{nil, {"-f", chart + "/ci/namespaced-values.yaml"}} {
		out, err := helm(t, append([]string{"lint", "--strict", chart}, values...)...)
		if err != nil {
			t.Errorf("helm lint %v: %v\n%s", values, err, out)
		}
	}
}

// TestTemplate renders the chart's defaults and compares them with the
// kustomize base: the same objects but the Namespace (helm install
// --create-namespace makes it), the same RBAC rules, the same container,
// and a configuration file the daemon loads.
func TestTemplate(t *testing.T) {
	objs := docs(t, render(t, "hal9-migrate", "hal9-migrate"))
	want := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Errorf("kinds %v, want %v", got, want)
	}
	kust := "../kubernetes/"
	rbac := readDocs(t, kust+"rbac.yaml")
	for _, k := range []struct{ kind, name string }{{"ClusterRole", "hal9-migrate"}, {"Role", "hal9-migrate-leader-election"}} {
		got, want := one(t, objs, k.kind, k.name)["rules"], one(t, rbac, k.kind, k.name)["rules"]
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s rules differ from deploy/kubernetes/rbac.yaml:\n got %v\nwant %v", k.kind, k.name, got, want)
		}
	}
	for _, k := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, b := range named(objs, k, "") {
			s := get(b, "subjects", 0)
			if get(s, "kind") != "ServiceAccount" || get(s, "name") != "hal9-migrate" || get(s, "namespace") != "hal9-migrate" {
				t.Errorf("%s subject %v", k, s)
			}
		}
	}

	dep := one(t, objs, "Deployment", "hal9-migrate")
	kdep := one(t, readDocs(t, kust+"deployment.yaml"), "Deployment", "hal9-migrate")
	if get(dep, "spec", "replicas") != get(kdep, "spec", "replicas") {
		t.Errorf("replicas %v, kustomize's %v", get(dep, "spec", "replicas"), get(kdep, "spec", "replicas"))
	}
	c, kc := get(dep, "spec", "template", "spec", "containers", 0).(obj), get(kdep, "spec", "template", "spec", "containers", 0).(obj)
	for _, f := range []string{"name", "args", "env", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts"} {
		if !reflect.DeepEqual(c[f], kc[f]) {
			t.Errorf("container %s differs from deploy/kubernetes/deployment.yaml:\n got %v\nwant %v", f, c[f], kc[f])
		}
	}
	for _, f := range []string{"securityContext", "serviceAccountName"} {
		if !reflect.DeepEqual(get(dep, "spec", "template", "spec", f), get(kdep, "spec", "template", "spec", f)) {
			t.Errorf("pod %s differs from kustomize's", f)
		}
	}
	// The pods match the Service's selector.
	sel := get(one(t, objs, "Service", "hal9-migrate"), "spec", "selector").(obj)
	labels := get(dep, "spec", "template", "metadata", "labels").(obj)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("the Service selects %s=%v, the pods have %v", k, v, labels[k])
		}
	}

	// The configuration: what kustomize's ConfigMap holds, and the daemon
	// loads it.
	text := get(one(t, objs, "ConfigMap", "hal9-migrate-config"), "data", "config.yaml").(string)
	var got, wantCfg obj
	if err := yaml.Unmarshal([]byte(text), &got); err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(kust + "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(kb, &wantCfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("config.yaml differs from deploy/kubernetes/config.yaml:\n got %v\nwant %v", got, wantCfg)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path, daemon.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateNamespaced renders namespaced RBAC as
// components/namespaced does: no cluster-wide rights, a Role with the
// ClusterRole's rules and a RoleBinding in each namespace, and the daemon
// told the same namespaces.
func TestTemplateNamespaced(t *testing.T) {
	objs := docs(t, render(t, "hal9-migrate", "hal9-migrate", "-f", chart+"/ci/namespaced-values.yaml"))
	if len(named(objs, "ClusterRole", "")) != 0 || len(named(objs, "ClusterRoleBinding", "")) != 0 {
		t.Errorf("namespaced mode renders cluster-wide RBAC: %v", kinds(objs))
	}
	rules := one(t, readDocs(t, "../kubernetes/rbac.yaml"), "ClusterRole", "hal9-migrate")["rules"]
	var nss []string
	for _, r := range named(objs, "Role", "hal9-migrate") {
		nss = append(nss, get(r, "metadata", "namespace").(string))
		if !reflect.DeepEqual(r["rules"], rules) {
			t.Errorf("the Role in %v has other rules than the ClusterRole", get(r, "metadata", "namespace"))
		}
	}
	if !slices.Equal(nss, []string{"hal9", "shop"}) {
		t.Errorf("Roles in %v", nss)
	}
	if n := len(named(objs, "RoleBinding", "hal9-migrate")); n != 2 {
		t.Errorf("%d RoleBindings", n)
	}
	var env string
	for _, e := range get(one(t, objs, "Deployment", "hal9-migrate"), "spec", "template", "spec", "containers", 0, "env").([]any) {
		if get(e, "name") == "HAL9_MIGRATE_KUBERNETES_NAMESPACES" {
			env, _ = get(e, "value").(string)
		}
	}
	// components/namespaced names the same variable.
	comp, err := os.ReadFile("../kubernetes/components/namespaced/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if env != "hal9,shop" || !bytes.Contains(comp, []byte("name: HAL9_MIGRATE_KUBERNETES_NAMESPACES")) {
		t.Errorf("HAL9_MIGRATE_KUBERNETES_NAMESPACES=%q", env)
	}
	sm := one(t, objs, "ServiceMonitor", "hal9-migrate")
	if get(sm, "spec", "endpoints", 0, "path") != "/metrics" {
		t.Errorf("ServiceMonitor %v", sm)
	}
}

// TestTemplateValues checks the values that change the objects, and that
// values which cannot work are refused.
func TestTemplateValues(t *testing.T) {
	objs := docs(t, render(t, "prod", "ops",
		"--set", "image.repository=registry.example.com/hal9-migrate,image.tag=v1.2.3",
		"--set", "replicas=1,leaderElection.enabled=false",
		"--set", "secrets.state.name=,secrets.git.name=other-git",
		"--set", "resources.limits.memory=1Gi",
		"--set", "config.repo=https://git.example.com/plans.git"))
	dep := one(t, objs, "Deployment", "prod-hal9-migrate")
	c := get(dep, "spec", "template", "spec", "containers", 0)
	if get(c, "image") != "registry.example.com/hal9-migrate:v1.2.3" || get(c, "resources", "limits", "memory") != "1Gi" {
		t.Errorf("container %v", c)
	}
	if get(dep, "spec", "replicas") != 1 {
		t.Errorf("replicas %v", get(dep, "spec", "replicas"))
	}
	for _, e := range get(c, "env").([]any) {
		if get(e, "name") == "HAL9_MIGRATE_STATE" {
			t.Errorf("HAL9_MIGRATE_STATE without a state Secret")
		}
	}
	if get(dep, "spec", "template", "spec", "volumes", 1, "secret", "secretName") != "other-git" {
		t.Errorf("volumes %v", get(dep, "spec", "template", "spec", "volumes"))
	}
	if len(named(objs, "Role", "")) != 0 {
		t.Errorf("a leader election Role without leader election")
	}
	text := get(one(t, objs, "ConfigMap", "prod-hal9-migrate-config"), "data", "config.yaml").(string)
	if !strings.Contains(text, "repo: https://git.example.com/plans.git") || !strings.Contains(text, "enabled: false") {
		t.Errorf("config.yaml:\n%s", text)
	}

	for _, bad := range [][]string{
		{"--set", "rbac.scope=everywhere"},
		{"--set", "rbac.scope=namespaced"},
		{"--set", "replicas=3,leaderElection.enabled=false"},
	} {
		if _, err := helm(t, append([]string{"template", "x", chart}, bad...)...); err == nil {
			t.Errorf("helm template %v succeeded", bad)
		}
	}
}

// TestDryRun has the real API server accept what the chart renders, in
// cluster and in namespaced mode, with a server-side dry-run.
func TestDryRun(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	kubectl := filepath.Join(k8stest.Bin(t), "kubectl")
	// The release's name is unique: the ClusterRole is cluster-wide.
	release := "hal9-migrate-" + ns[len(ns)-8:]
	for _, values := range [][]string{nil, {"--set", "rbac.scope=namespaced,rbac.namespaces[0]=" + ns}} {
		rendered := render(t, release, ns, values...)
		cmd := exec.Command(kubectl, "--kubeconfig", k8stest.Kubeconfig(t), "apply", "--server-side", "--dry-run=server",
			"--field-manager=hal9-test", "-f", "-")
		cmd.Stdin = bytes.NewReader(rendered)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server %v: %v\n%s", values, err, out)
		}
		if n := strings.Count(string(out), "(server dry run)"); n != len(docs(t, rendered)) {
			t.Errorf("%d objects accepted of %d:\n%s", n, len(docs(t, rendered)), out)
		}
	}
}
