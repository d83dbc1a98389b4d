package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/rest"

	k8sdriver "github.com/hal9ai/hal9-migrate/drivers/kubernetes"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
)

// object is a rendered manifest, as far as the tests read it.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Rules    []map[string]any `yaml:"rules"`
	Subjects []struct {
		Kind, Name, Namespace string
	} `yaml:"subjects"`
	RoleRef struct{ Kind, Name string } `yaml:"roleRef"`
	Spec    struct {
		PodSelector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"podSelector"`
		PolicyTypes []string         `yaml:"policyTypes"`
		Egress      []map[string]any `yaml:"egress"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []struct {
					Name string `yaml:"name"`
					Env  []struct{ Name, Value string }
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func parse(t *testing.T, rendered []byte) []object {
	t.Helper()
	var out []object
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	for {
		var o object
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("rendered manifests: %v", err)
		}
		out = append(out, o)
	}
}

func find(objs []object, kind, name string) []object {
	var out []object
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Metadata.Name == name) {
			out = append(out, o)
		}
	}
	return out
}

// withComponents renders a kustomization of base (a folder, relative
// paths are resolved against deploy/kubernetes) and components, plus extra
// lines, in a temporary folder.
func withComponents(t *testing.T, base string, components []string, extra string) []byte {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string {
		if !filepath.IsAbs(p) {
			p = filepath.Join(here(t), p)
		}
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%q", r)
	}
	var cs []string
	for _, c := range components {
		cs = append(cs, rel(c))
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s]\n%s",
		rel(base), strings.Join(cs, ", "), extra)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return kubectl(t, nil, "kustomize", dir)
}

// namespacedRoles renders the base with the namespaced component and
// returns the namespaces it grants rights in, checking on the way that
// it grants nothing cluster-wide, the same rules as the base's ClusterRole,
// to the daemon's ServiceAccount, and that the daemon is told the same
// namespaces.
func namespacedRoles(t *testing.T) []string {
	t.Helper()
	base := parse(t, kubectl(t, nil, "kustomize", here(t)))
	cr := find(base, "ClusterRole", "hal9-migrate")
	if len(cr) != 1 {
		t.Fatalf("the base has %d ClusterRoles hal9-migrate", len(cr))
	}
	objs := parse(t, withComponents(t, ".", []string{"components/namespaced"}, ""))
	if n := len(find(objs, "ClusterRole", "")) + len(find(objs, "ClusterRoleBinding", "")); n != 0 {
		t.Errorf("the namespaced mode keeps %d cluster-wide RBAC objects", n)
	}
	var namespaces []string
	for _, r := range find(objs, "Role", "hal9-migrate") {
		ns := r.Metadata.Namespace
		namespaces = append(namespaces, ns)
		if !reflect.DeepEqual(r.Rules, cr[0].Rules) {
			t.Errorf("the Role in %s grants\n%v\nthe base's ClusterRole\n%v", ns, r.Rules, cr[0].Rules)
		}
		rb := find(objs, "RoleBinding", "hal9-migrate")
		i := slices.IndexFunc(rb, func(o object) bool { return o.Metadata.Namespace == ns })
		switch {
		case i < 0:
			t.Errorf("no RoleBinding in %s", ns)
		case rb[i].RoleRef.Kind != "Role" || rb[i].RoleRef.Name != "hal9-migrate" || len(rb[i].Subjects) != 1 ||
			rb[i].Subjects[0].Kind != "ServiceAccount" || rb[i].Subjects[0].Name != "hal9-migrate" || rb[i].Subjects[0].Namespace != "hal9-migrate":
			t.Errorf("the RoleBinding in %s: %+v", ns, rb[i])
		}
	}
	if len(find(objs, "RoleBinding", "hal9-migrate")) != len(namespaces) || len(namespaces) == 0 {
		t.Errorf("%d Roles, %d RoleBindings", len(namespaces), len(find(objs, "RoleBinding", "hal9-migrate")))
	}
	told := ""
	for _, c := range find(objs, "Deployment", "hal9-migrate")[0].Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "HAL9_MIGRATE_KUBERNETES_NAMESPACES" {
				told = e.Value
			}
		}
	}
	slices.Sort(namespaces)
	toldList := strings.Split(told, ",")
	slices.Sort(toldList)
	if !slices.Equal(toldList, namespaces) {
		t.Errorf("the daemon is told kubernetes.namespaces %q, and has Roles in %q", told, namespaces)
	}
	return namespaces
}

func TestRenderNamespaced(t *testing.T) {
	if ns := namespacedRoles(t); !slices.Equal(ns, []string{"hal9", "shop"}) {
		t.Errorf("namespaces %q", ns)
	}
}

// TestRBACNamespaced applies the namespaced mode with its namespaces
// mapped to test namespaces, and checks what the ServiceAccount may do
// there and elsewhere, then drives a plan in one of them as the
// ServiceAccount.
func TestRBACNamespaced(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	suffix := "-" + ns[len(ns)-8:]
	sa := "hal9-migrate" + suffix

	// The base as the other tests move it into ns, then the component,
	// then its namespaces moved to test namespaces.
	moved := map[string]string{}
	var patches strings.Builder
	for _, from := range namespacedRoles(t) {
		to := k8stest.Namespace(t, cfg)
		moved[from] = to
		fmt.Fprintf(&patches, `  - target: {kind: Role, name: hal9-migrate, namespace: %s}
    patch: '[{"op": "replace", "path": "/metadata/namespace", "value": "%s"}]'
  - target: {kind: RoleBinding, name: hal9-migrate, namespace: %s}
    patch: '[{"op": "replace", "path": "/metadata/namespace", "value": "%s"}, {"op": "replace", "path": "/subjects/0", "value": {"kind": "ServiceAccount", "name": "%s", "namespace": "%s"}}]'
`, from, to, from, to, sa, ns)
	}
	rendered := withComponents(t, overlayDir(t, ns, suffix), []string{"components/namespaced"}, "patches:\n"+patches.String())
	if bytes.Contains(rendered, []byte("kind: ClusterRole")) {
		t.Fatalf("the namespaced mode renders cluster-wide RBAC:\n%s", rendered)
	}
	kubectl(t, rendered, "apply", "--server-side", "--dry-run=server", "--field-manager=hal9-test", "-f", "-")
	kubectl(t, rendered, "apply", "--server-side", "--field-manager=hal9-test", "-f", "-")

	user := "system:serviceaccount:" + ns + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	kube := k8stest.Client(t, cfg)
	outside := k8stest.Namespace(t, cfg)
	for _, where := range slices.Sorted(maps.Values(moved)) {
		for _, a := range workloadAccess {
			if !allowed(t, kube, user, groups, where, a) {
				t.Errorf("the ServiceAccount may not %s in %s, which the daemon needs", a, where)
			}
			if allowed(t, kube, user, groups, outside, a) {
				t.Errorf("the ServiceAccount may %s in %s, outside its namespaces", a, outside)
			}
			if a.ns == "" && allowed(t, kube, user, groups, "", a) {
				t.Errorf("the ServiceAccount may %s in every namespace", a)
			}
		}
		for _, a := range workloadDenied {
			if allowed(t, kube, user, groups, where, a) {
				t.Errorf("the ServiceAccount may %s in %s, which the daemon does not need", a, where)
			}
		}
	}
	for _, a := range leaseAccess {
		if !allowed(t, kube, user, groups, ns, a) {
			t.Errorf("the ServiceAccount may not %s in its own namespace", a)
		}
	}

	impersonated := rest.CopyConfig(cfg)
	impersonated.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	// The daemon's way in one of its namespaces, a command's in the other.
	modes := driverModes(t, impersonated, k8sdriver.WithNamespaces(slices.Sorted(maps.Values(moved))...))
	for i, m := range modes {
		where := moved[[]string{"hal9", "shop"}[i]]
		t.Run(m.name, func(t *testing.T) { driveAs(t, cfg, m.open, where) })
	}
	leadAs(t, impersonated, ns)
}

// TestRenderNetworkPolicy renders the network-policy component: its
// NetworkPolicy selects the daemon's pods in the daemon's namespace, bounds
// both directions, and the API server accepts it.
func TestRenderNetworkPolicy(t *testing.T) {
	objs := parse(t, withComponents(t, ".", []string{"components/network-policy", "components/namespaced"}, ""))
	nps := find(objs, "NetworkPolicy", "hal9-migrate")
	if len(nps) != 1 {
		t.Fatalf("%d NetworkPolicies hal9-migrate", len(nps))
	}
	np := nps[0]
	pods := find(objs, "Deployment", "hal9-migrate")[0].Spec.Template.Metadata.Labels
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if pods[k] != v {
			t.Errorf("the policy selects %s=%s, the daemon's pods have %v", k, v, pods)
		}
	}
	if np.Metadata.Namespace != "hal9-migrate" || len(np.Spec.PodSelector.MatchLabels) == 0 ||
		!slices.Equal(np.Spec.PolicyTypes, []string{"Ingress", "Egress"}) || len(np.Spec.Egress) == 0 {
		t.Errorf("network policy %+v", np)
	}

	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	dir := t.TempDir()
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%q]
patches:
  - target: {kind: NetworkPolicy}
    patch: '[{"op": "replace", "path": "/metadata/namespace", "value": %q}]'
`, filepath.Join(mustRel(t, dir, here(t)), "components", "network-policy", "networkpolicy.yaml"), ns)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, kubectl(t, nil, "kustomize", "--load-restrictor=LoadRestrictionsNone", dir),
		"apply", "--server-side", "--dry-run=server", "--field-manager=hal9-test", "-f", "-")
}

func mustRel(t *testing.T, from, to string) string {
	t.Helper()
	r, err := filepath.Rel(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
